"""Benchmark formats (one module each), the Sample record, the toy world and splitting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlm.data.errors import DataError
from vlm.data.hypo3d import load_hypo3d, parse_hypo3d
from vlm.data.sample import Sample
from vlm.data.scanqa import load_scanqa, parse_scanqa

BENCHMARKS = ("hypo3d", "scanqa")


def detect_benchmark(data: Any) -> str | None:
    """Hypo3D groups changes (with questions_answers) under scene ids; ScanQA records carry 'answers'."""
    if isinstance(data, list):
        return "scanqa"
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return "hypo3d" if "questions_answers" in value[0] else "scanqa"
    return None


def load_samples(
    path: str | Path,
    benchmark: str = "auto",
    images_dir: str | Path | None = None,
    axis_definitions: str | Path | None = None,
) -> list[Sample]:
    """Load and validate any supported benchmark file (format auto-detected unless named)."""
    from vlm.data.common import check_images_dir, read_json
    from vlm.data.hypo3d import load_axis_definitions

    data = read_json(path)
    if benchmark == "auto":
        benchmark = detect_benchmark(data) or ""
        if not benchmark:
            raise DataError.single(path, "top level", f"cannot tell the benchmark format; pass one of {', '.join(BENCHMARKS)}")
    if benchmark not in BENCHMARKS:
        raise DataError.single(path, "-", f"unknown benchmark '{benchmark}' (supported: {', '.join(BENCHMARKS)})")
    images = check_images_dir(images_dir)
    if benchmark == "hypo3d":
        axes = load_axis_definitions(axis_definitions) if axis_definitions else None
        return parse_hypo3d(data, path, images, axes)
    return parse_scanqa(data, path, images)


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


__all__ = ["load_split", "DataError", "BENCHMARKS", "Sample", "detect_benchmark", "load_hypo3d", "load_samples", "load_scanqa"]
