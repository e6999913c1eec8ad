"""Check a benchmark file and its images before any model is loaded.

    python -m vlm validate hypo_dataset/sample/hypo3d.json --images_dir hypo_dataset/sample/images
    python -m vlm validate llava_cot_dataset/sample/train.jsonl --images_dir llava_cot_dataset/sample/images
    python -m vlm validate aokvqa_dataset/sample/aokvqa_val.json --images_dir aokvqa_dataset/sample

Prints a summary (questions, scenes, question / change types) and exits 0, or prints every problem
as ``FILE: location: what is wrong`` and exits 2. Accepted quirks (A-OKVQA's empty choices and direct
answers) are printed by the loader to stderr as warnings in the same form, with counts, and a file without
labels (the A-OKVQA test split) gets a one-line ``FILE: note: no labels …``; both exit 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vlm.benchmarks import BENCHMARKS, load_samples


@dataclass
class Config:
    """Validate a Hypo3D / ScanQA / A-OKVQA / LLaVA-CoT file (and its images and axis definitions)."""

    data: str = field(metadata={"help": "benchmark file (Hypo3D / ScanQA / A-OKVQA JSON, LLaVA-CoT JSONL or JSON)",
                                "positional": True})
    images_dir: str = field(default="", metadata={"help": "checked when given: folder with {scene_id}.png (Hypo3D, "
                                                          "ScanQA); image root of the records' paths (LLaVA-CoT); "
                                                          "A-OKVQA: COCO root or the folder of {image_id:012}.jpg"})
    axis_definitions: str = field(default="", metadata={"help": "Hypo3D axis definitions (.xlsx sheet 'Sheet1' or .csv)"})
    benchmark: str = field(default="auto", metadata={"help": f"{' | '.join(BENCHMARKS)} | auto"})


def main(cfg: Config) -> int:
    samples = load_samples(cfg.data, cfg.benchmark, cfg.images_dir or None, cfg.axis_definitions or None)
    qtypes = Counter(t for s in samples for t in s.question_type)
    ctypes = Counter(s.context.get("change_type") for s in samples if s.context.get("change_type"))
    bench = samples[0].benchmark if samples else cfg.benchmark
    groups = BENCHMARKS[bench].group_noun if bench in BENCHMARKS else "scenes"
    print(f"{cfg.data}: OK — {len(samples)} questions, {len({s.scene_id for s in samples})} {groups} ({bench})")
    for title, counts in (("question types", qtypes), ("change types", ctypes)):
        if counts:
            print(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    with_image = sum(s.image is not None for s in samples)
    if cfg.images_dir:
        print(f"  images: {with_image}/{len(samples)} questions have an image")
    return 0
