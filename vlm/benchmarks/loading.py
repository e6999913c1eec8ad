"""Loading any benchmark file: the format detected from the file unless named, then its benchmark's loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlm.benchmarks import BENCHMARKS, get, sniff
from vlm.data.errors import DataError
from vlm.data.sample import Sample


def load_samples(
    path: str | Path,
    benchmark: str = "auto",
    images_dir: str | Path | None = None,
    axis_definitions: str | Path | None = None,
) -> list[Sample]:
    """Load and validate any supported benchmark file (format auto-detected unless named). ``images_dir``:
    where the benchmark module says its images are; without it every Sample is text only.
    ``axis_definitions``: for the benchmarks that take them (Hypo3D), ignored by the others."""
    data = None
    if benchmark == "auto":
        benchmark, data = sniff(path)
        if not benchmark:
            raise DataError.single(path, "top level", f"cannot tell the benchmark format; pass one of {', '.join(BENCHMARKS)}")
    return get(benchmark, path).load(path, images_dir or None, data=data, axis_definitions=axis_definitions)


def default_images_dir(path: str | Path, benchmark: str = "auto") -> str:
    """Where a data file's images live by convention (the benchmark's ``default_images_dir``; the folder need
    not exist)."""
    from vlm.benchmarks import detect_file

    path = Path(path)
    if benchmark == "auto":
        benchmark = detect_file(path) or ""
    return str(get(benchmark, path).default_images_dir(path))


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
