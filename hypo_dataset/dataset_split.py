#!/usr/bin/env python
"""Seed-compatible split CLI:  dataset_split.py TRAIN VAL TEST JSON MODE RUN_DIR [--seed N] [--group-by G]

TRAIN VAL TEST are fractions summing to 1. Works on Hypo3D, ScanQA, A-OKVQA and LLaVA-CoT files (format
auto-detected); outputs keep the input's own format and go to RUN_DIR/split/ — NAME.json, or NAME.jsonl
with the input's own lines for a JSONL (LLaVA-CoT) input:

  MODE 1  the teacher-LoRA / CoT split of the full benchmark:
          teacher_train, teacher_val (teacher LoRA) and cot_pool (the TEST share, held out from the
          teacher; MODE 2 splits it further)
  MODE 2  the CoT split, usually of cot_pool.json(l): cot_train (teacher CoT generation + student
          training), cot_val, cot_test (every variant is evaluated here)

--group-by scene (default) keeps every scene inside one split (A-OKVQA, LLaVA-CoT: every image); change
keeps a Hypo3D context change's questions together; none splits single questions (LLaVA-CoT: records).
Same input + seed -> byte-identical files.

The seed's positional form, kept for its command lines (scanqa_dataset/dataset_split.py is a symlink to this
file). It is ``python -m vlm split`` with fixed names, which the study (pipelines/lib/study.sh) calls directly:
MODE m  ==  python -m vlm split JSON --out_dir RUN_DIR/split --ratios TRAIN VAL TEST --names <MODES[m]>
            --seed N --group_by G --manifest_name modeM_manifest.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout

from vlm.data.errors import EXIT_CODE, DataError  # noqa: E402
from vlm.data.split import GROUP_BY  # noqa: E402
from vlm.stages import split  # noqa: E402

MODES = {
    1: ["teacher_train", "teacher_val", "cot_pool"],
    2: ["cot_train", "cot_val", "cot_test"],
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", type=float)
    p.add_argument("val", type=float)
    p.add_argument("test", type=float)
    p.add_argument("json", help="benchmark file (Hypo3D, ScanQA, A-OKVQA JSON or LLaVA-CoT JSONL)")
    p.add_argument("mode", type=int, choices=sorted(MODES))
    p.add_argument("run_dir")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--group-by", choices=GROUP_BY, default="scene")
    a = p.parse_args(argv)
    cfg = split.Config(
        input=a.json,
        out_dir=str(Path(a.run_dir) / "split"),
        ratios=[a.train, a.val, a.test],
        names=MODES[a.mode],
        seed=a.seed,
        group_by=a.group_by,
        manifest_name=f"mode{a.mode}_manifest.json",
    )
    try:
        return split.main(cfg)
    except DataError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
