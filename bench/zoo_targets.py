"""The zoo's targets side by side: builds (or loads) zoo entries and prints their zoo cards' held-out figures.

    .venv/bin/python bench/zoo_targets.py                      # llava-ov-teacher and llava-ov-student
    .venv/bin/python bench/zoo_targets.py --zoo_dir /tmp/z --threads 1 --set llava-ov-teacher.steps=600

Targets (issue 13): teacher listing cell accuracy >= 95% with the image and <= 5% blind; teacher hypo3d-cot
EM >= 70% with the image and >= 25 points above blind; the student clearly weaker. The figures come from
``zoo.evaluate_card`` (held-out toy scenes written as Hypo3D files, every question with its own context change,
asked through the study's recipes). ``--set`` overrides a spec field for an experiment (use a scratch
``--zoo_dir``: the entry's directory does not record the override); ``--rebuild`` rebuilds built entries;
``--eval_scenes`` re-evaluates loaded entries on that many scenes instead of printing their cards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = (("build_seconds", "build seconds"), ("steps", "steps (align + chats)"), ("cell_acc_normal", "listing cells, image"),
        ("cell_acc_blind", "listing cells, blind"), ("imagine_cell_acc_normal", "imagined cells, image"),
        ("qa_em_cot_normal", "QA EM hypo3d-cot, image"), ("qa_em_cot_blind", "QA EM hypo3d-cot, blind"),
        ("qa_em_direct_normal", "QA EM direct, image"), ("qa_em_direct_blind", "QA EM direct, blind"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=["llava-ov-teacher", "llava-ov-student"])
    ap.add_argument("--zoo_dir", default="", help="VLM_ZOO_DIR for this run (default: the environment's)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME.FIELD=VALUE", help="override a spec field")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--eval_scenes", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the cards here")
    args = ap.parse_args()
    if args.zoo_dir:
        os.environ["VLM_ZOO_DIR"] = args.zoo_dir
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from vlm.models import zoo

    specs = zoo.zoo_specs()
    for item in args.set:
        key, value = item.split("=", 1)
        name, fld = key.rsplit(".", 1)
        kind = type(getattr(specs[name], fld))
        specs[name] = dataclasses.replace(specs[name], **{fld: kind(value)})
    cards = {}
    for name in args.names:
        if args.rebuild and zoo.is_built(name):
            shutil.rmtree(zoo.entry_dir(name))
        path = zoo.ensure(name)
        card = json.loads((path / "zoo_card.json").read_text())
        if args.eval_scenes:
            from vlm.models.registry import load_model

            t0 = time.time()
            card["eval"] = zoo.evaluate_card(load_model(f"zoo:{name}"), specs[name], args.eval_scenes)
            card["eval_seconds"] = round(time.time() - t0, 1)
        cards[name] = card
    print(f"\n{'':28}" + "".join(f"{n:>20}" for n in cards))
    for key, label in ROWS:
        vals = []
        for card in cards.values():
            pre = card.get("pretraining", {})
            v = (card.get(key) if key == "build_seconds" else
                 "+".join(str(pre[s]["steps"]) for s in ("alignment", "chats") if s in pre) if key == "steps" else
                 card.get("eval", {}).get(key))
            vals.append("-" if v is None else str(v))
        print(f"{label:28}" + "".join(f"{v:>20}" for v in vals))
    for name, card in cards.items():
        print(f"{name} hypo3d-cot EM per template (image): {card.get('eval', {}).get('cot_em_by_template_normal')}")
    if args.json:
        Path(args.json).write_text(json.dumps(cards, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
