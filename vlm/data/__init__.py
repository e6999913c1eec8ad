"""Benchmark formats (one module each), the Sample record, the toy world and splitting."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm.data.aokvqa import load_aokvqa, split_from_name
from vlm.data.errors import DataError
from vlm.data.hypo3d import load_hypo3d, parse_hypo3d
from vlm.data.llava_cot import load_llava_cot
from vlm.data.sample import Sample
from vlm.data.scanqa import load_scanqa, parse_scanqa

BENCHMARKS = ("hypo3d", "scanqa", "aokvqa", "llava-cot")


def _record_kind(rec: Any) -> str | None:
    """The format a single list record belongs to (None for a non-object)."""
    if not isinstance(rec, dict):
        return None
    if "conversations" in rec:
        return "llava-cot"
    if "choices" in rec and "image_id" in rec:
        return "aokvqa"
    return "scanqa"


def detect_benchmark(data: Any) -> str | None:
    """The format of parsed data. Hypo3D groups changes (with questions_answers) under scene ids; a list is
    LLaVA-CoT (records carry 'conversations'), A-OKVQA ('choices' + 'image_id') or flat ScanQA, by the
    kind most of its records have (one broken record does not change the verdict)."""
    if isinstance(data, list):
        kinds = Counter(k for k in map(_record_kind, data) if k)
        return kinds.most_common(1)[0][0] if kinds else "scanqa"
    if isinstance(data, dict):
        if "conversations" in data:  # a one-line JSONL file read as JSON
            return "llava-cot"
        for value in data.values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return "hypo3d" if "questions_answers" in value[0] else "scanqa"
    return None


def _first_line_record(path: Path) -> Any:
    with path.open("rb") as f:
        line = f.readline()
    try:
        return json.loads(line)
    except ValueError:
        return None


def _sniff(path: str | Path) -> tuple[str | None, Any]:
    """(format, parsed JSON or None for JSONL). A file that is not readable JSON raises its DataError
    (``file not found``, ``malformed JSON`` with line and column) unless it is JSONL."""
    from vlm.data.common import read_json

    path = Path(path)
    if path.suffix.lower() == ".jsonl" and path.is_file():
        return "llava-cot", None
    try:
        data = read_json(path)
    except DataError:
        if path.is_file() and _record_kind(_first_line_record(path)) == "llava-cot":
            return "llava-cot", None  # JSONL under a .json name
        raise
    return detect_benchmark(data), data


def detect_file(path: str | Path) -> str | None:
    """The format of a data file (hypo3d | scanqa | aokvqa | llava-cot) from its structure: ``.jsonl`` (or
    JSON lines under another name) is LLaVA-CoT, JSON is classified by ``detect_benchmark``; None when
    the file is JSON of no known shape. An unreadable file raises its DataError."""
    return _sniff(path)[0]


def _check_benchmark(path: str | Path, benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise DataError.single(path, "-", f"unknown benchmark '{benchmark}' (supported: {', '.join(BENCHMARKS)})")


def load_samples(
    path: str | Path,
    benchmark: str = "auto",
    images_dir: str | Path | None = None,
    axis_definitions: str | Path | None = None,
) -> list[Sample]:
    """Load and validate any supported benchmark file (format auto-detected unless named).

    ``images_dir``: the folder of ``{scene_id}.png`` (Hypo3D, ScanQA); the image root the records' relative
    paths start from (LLaVA-CoT); for A-OKVQA a COCO root when it holds the ``{split}2017`` folder of the
    split the file name names (``aokvqa_v1p0_val.json``), else the folder of ``{image_id:012}.jpg`` itself
    (what a split file such as ``cot_test.json`` needs). Without it every Sample is text only."""
    from vlm.data.common import check_images_dir, read_json
    from vlm.data.hypo3d import load_axis_definitions

    data = None
    if benchmark == "auto":
        benchmark, data = _sniff(path)
        if not benchmark:
            raise DataError.single(path, "top level", f"cannot tell the benchmark format; pass one of {', '.join(BENCHMARKS)}")
    _check_benchmark(path, benchmark)
    if benchmark == "llava-cot":
        return load_llava_cot(path, images_dir or None)
    if benchmark == "aokvqa":
        split = split_from_name(path)
        coco = bool(images_dir) and split is not None and (Path(images_dir) / f"{split}2017").is_dir()
        return load_aokvqa(path, images_dir if coco else None, image_dir=None if coco else images_dir)
    data = read_json(path) if data is None else data
    images = check_images_dir(images_dir)
    if benchmark == "hypo3d":
        axes = load_axis_definitions(axis_definitions) if axis_definitions else None
        return parse_hypo3d(data, path, images, axes)
    return parse_scanqa(data, path, images)


def default_images_dir(path: str | Path, benchmark: str = "auto") -> str:
    """Where a data file's images live by convention: ``<dir>/images`` (Hypo3D, ScanQA, LLaVA-CoT);
    A-OKVQA: ``<dir>/<split>2017`` when the file name names the split, else ``<dir>`` (a split file next
    to its images). The folder need not exist."""
    path = Path(path)
    if benchmark == "auto":
        benchmark = detect_file(path) or ""
    _check_benchmark(path, benchmark)
    if benchmark == "aokvqa":
        split = split_from_name(path)
        return str(path.parent / f"{split}2017" if split else path.parent)
    return str(path.parent / "images")


def load_split(path, *, benchmark: str = "auto", images_dir=None, axis_definitions=None, limit: int = 0,
               need_images: bool = True) -> list[Sample]:
    """What every model stage reads: a validated split (first ``limit`` samples), with images when the stage
    runs in normal mode — a missing --images_dir is one clear error, before any model loads."""
    samples = load_samples(path, benchmark, images_dir or None, axis_definitions or None)
    if limit:
        samples = samples[:limit]
    if not samples:
        raise DataError.single(path, "top level", "no questions")
    if need_images and any(s.image is None for s in samples):
        raise DataError.single(path, "-", "normal mode needs images: pass --images_dir (or --mode blind)")
    return samples


@dataclass(kw_only=True)
class SplitInput:
    """The split a model stage reads (evaluate, generate_cot, finetune): one set of flags, one loader.
    Stage Configs inherit it; keyword-only, so their own required fields (model, out_dir) may follow."""

    data: str = field(metadata={"help": "benchmark split: Hypo3D, ScanQA or A-OKVQA JSON, or LLaVA-CoT JSONL"})
    images_dir: str = field(default="", metadata={"help": "image folder ({scene_id}.png; A-OKVQA: COCO root or {split}2017 folder); "
                                                          "needed in normal mode"})
    axis_definitions: str = field(default="", metadata={"help": "Hypo3D axis definitions (.xlsx/.csv) for the orientation"})
    benchmark: str = field(default="auto", metadata={"help": f"{' | '.join(BENCHMARKS)} | auto"})
    mode: str = field(default="normal", metadata={"help": "normal (with the image) | blind (no image, no image tokens)",
                                                  "choices": ["normal", "blind"]})
    limit: int = field(default=0, metadata={"help": "first N samples only (0: all), for smoke runs"})

    @property
    def blind(self) -> bool:
        return self.mode == "blind"

    def samples(self) -> list[Sample]:
        return load_split(self.data, benchmark=self.benchmark, images_dir=self.images_dir,
                          axis_definitions=self.axis_definitions, limit=self.limit, need_images=not self.blind)


__all__ = [
    "BENCHMARKS",
    "DataError",
    "Sample",
    "SplitInput",
    "default_images_dir",
    "detect_benchmark",
    "detect_file",
    "load_aokvqa",
    "load_hypo3d",
    "load_llava_cot",
    "load_samples",
    "load_scanqa",
    "load_split",
]
