"""The benchmarks, one module each (``vlm/benchmarks/<name>.py``, the protocol in ``base.py``), and the
plain-dict registry every stage asks: ``BENCHMARKS`` (name -> Benchmark), ``get(name)``, and detection of
a file's benchmark from its structure.

Loading any benchmark file (``load_samples``, ``load_split``, ``SplitInput``, ``default_images_dir``) lives
in ``vlm.benchmarks.loading`` and is re-exported here (and, for older callers, from ``vlm.data``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vlm.benchmarks import aokvqa, coco_captions, hypo3d, llava_cot, scanqa
from vlm.benchmarks.base import Benchmark
from vlm.data.errors import DataError

# One line per benchmark; detection asks them in this order (benchmarks marked ``fallback`` last).
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    hypo3d.Hypo3D(),
    scanqa.ScanQA(),
    aokvqa.AOKVQA(),
    llava_cot.LLaVACoT(),
    coco_captions.COCOCaptions(),
)}


def get(name: str, file: str | Path = "-") -> Benchmark:
    """The benchmark called ``name``; an unknown name is a DataError (on ``file``) naming the known ones."""
    if name not in BENCHMARKS:
        raise DataError.single(file, "-", f"unknown benchmark '{name}' (supported: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name]


def _by_specificity() -> Iterator[Benchmark]:
    yield from (b for b in BENCHMARKS.values() if not b.fallback)
    yield from (b for b in BENCHMARKS.values() if b.fallback)


def _first(claims: Callable[[Benchmark], bool]) -> Benchmark | None:
    return next((b for b in _by_specificity() if claims(b)), None)


def detect_benchmark(data: Any) -> str | None:
    """The benchmark of parsed JSON data: a list goes to the benchmark most of its records belong to (one
    broken record does not change the verdict); an object, or a list of no claimed record, to the first
    benchmark that claims it. None when no benchmark does."""
    if isinstance(data, list):
        votes = Counter(owner.name for rec in data if (owner := _first(lambda b: b.claims_record(rec))))
        if votes:
            return votes.most_common(1)[0][0]
    owner = _first(lambda b: b.claims(data))
    return owner.name if owner else None


def _first_line_record(path: Path) -> Any:
    with path.open("rb") as f:
        line = f.readline()
    try:
        return json.loads(line)
    except ValueError:
        return None


def sniff(path: str | Path) -> tuple[str | None, Any]:
    """(benchmark, parsed JSON or None for JSON lines). A file that is not readable JSON raises its DataError
    (``file not found``, ``malformed JSON`` with line and column) unless it is JSON lines of a ``jsonl``
    benchmark (a ``.jsonl`` name, or a first line that benchmark claims)."""
    from vlm.data.common import read_json

    path = Path(path)
    if path.suffix.lower() == ".jsonl" and path.is_file():
        owner = _first(lambda b: b.jsonl)
        if owner:
            return owner.name, None
    try:
        data = read_json(path)
    except DataError:
        if path.is_file():
            rec = _first_line_record(path)
            owner = _first(lambda b: b.claims_record(rec))
            if owner and owner.jsonl:
                return owner.name, None  # JSON lines under a .json name
        raise
    return detect_benchmark(data), data


def detect_file(path: str | Path) -> str | None:
    """The benchmark of a data file from its structure (``sniff``); None when the file is JSON of no known
    shape. An unreadable file raises its DataError."""
    return sniff(path)[0]


from vlm.benchmarks.loading import SplitInput, default_images_dir, load_samples, load_split  # noqa: E402  (needs the registry)

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "SplitInput",
    "default_images_dir",
    "detect_benchmark",
    "detect_file",
    "get",
    "load_samples",
    "load_split",
    "sniff",
]
