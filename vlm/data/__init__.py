"""The Sample record, input-data errors, shared loader checks, the toy world and split mechanics.

The benchmark formats live in ``vlm.benchmarks`` (one module each). Loading any benchmark file
(``load_samples``, ``load_split``, ``SplitInput``, ``default_images_dir``, ``detect_file``,
``detect_benchmark``, ``BENCHMARKS``) is still importable from here, resolved lazily: ``vlm.benchmarks``
imports this package, so importing it back at the top would be circular.
"""

from __future__ import annotations

from typing import Any

from vlm.data.errors import DataError
from vlm.data.sample import Sample

_FROM_BENCHMARKS = ("BENCHMARKS", "SplitInput", "default_images_dir", "detect_benchmark", "detect_file",
                    "load_samples", "load_split")


def __getattr__(name: str) -> Any:
    if name in _FROM_BENCHMARKS:
        import vlm.benchmarks

        return getattr(vlm.benchmarks, name)
    raise AttributeError(f"module 'vlm.data' has no attribute '{name}'")


__all__ = ["DataError", "Sample", *_FROM_BENCHMARKS]
