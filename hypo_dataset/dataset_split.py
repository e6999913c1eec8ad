#!/usr/bin/env python
"""Seed-compatible split CLI:  dataset_split.py TRAIN VAL TEST JSON MODE RUN_DIR [--seed N] [--group-by G]

TRAIN VAL TEST are fractions summing to 1. Works on Hypo3D and ScanQA files (format auto-detected);
outputs keep the input's own format and go to RUN_DIR/split/:

  MODE 1  the teacher-LoRA / CoT split of the full benchmark:
          teacher_train.json, teacher_val.json (teacher LoRA) and cot_pool.json (the TEST share,
          held out from the teacher; MODE 2 splits it further)
  MODE 2  the CoT split, usually of cot_pool.json: cot_train.json (teacher CoT generation + student
          training), cot_val.json, cot_test.json (every variant is evaluated here)

--group-by scene (default) keeps every scene inside one split; change keeps a context change's
questions together; none splits single questions. Same input + seed -> byte-identical files.
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
    p.add_argument("json", help="benchmark file (Hypo3D or ScanQA format)")
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
