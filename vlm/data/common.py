"""Shared checks for the benchmark loaders: JSON reading and image resolution.

Everything here reports into a ``Problems`` collector instead of raising on the first issue,
so one run of a loader lists every problem of a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from vlm.data.errors import DataError, Problems


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError.single(path, "-", "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError.single(path, f"byte {e.start}", "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise DataError.single(path, f"line {e.lineno} col {e.colno}", f"malformed JSON: {e.msg}") from None


def is_json_list(path: str | Path) -> bool:
    """True for a JSON list file, False for JSON lines (one record per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError.single(path, "-", "file not found")
    with path.open("rb") as f:
        return f.read(4096).lstrip().startswith(b"[")


def check_str(obj: dict, key: str, where: str, problems: Problems, *, allow_empty: bool = False) -> str | None:
    """Return obj[key] if it is a (non-empty) string, else record why not."""
    if key not in obj:
        problems.add(where, f"missing key '{key}'")
        return None
    value = obj[key]
    if not isinstance(value, str):
        problems.add(f"{where}.{key}", f"expected a string, got {type(value).__name__}")
        return None
    if not allow_empty and not value.strip():
        problems.add(f"{where}.{key}", "empty string")
        return None
    return value


def resolve_image(images_dir: Path | None, scene_id: str, where: str, problems: Problems) -> str | None:
    """``{images_dir}/{scene_id}.png``, which must exist and stay inside images_dir."""
    if images_dir is None:
        return None
    root = images_dir.resolve()
    path = (root / f"{scene_id}.png").resolve()
    if not path.is_relative_to(root):
        problems.add(where, f"image path '{path}' escapes the images dir '{root}'")
        return None
    if not path.is_file():
        problems.add(where, f"image not found: {path}")
        return None
    return str(path)


def check_images_dir(images_dir: str | Path | None) -> Path | None:
    if images_dir in (None, ""):
        return None
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError.single(images_dir, "-", "images dir not found")
    return images_dir


def check_unique_ids(ids: list[tuple[str, str]], problems: Problems) -> None:
    """ids: (id, location) pairs; every repeat is reported with where the first one was."""
    first_seen: dict[str, str] = {}
    for sample_id, where in ids:
        if sample_id in first_seen:
            problems.add(where, f"duplicate id '{sample_id}' (first at {first_seen[sample_id]})")
        else:
            first_seen[sample_id] = where


def write_sample_cli(write_sample: Callable[..., int], description: str, done: str) -> None:
    """``python -m vlm.benchmarks.<name> --write-sample DIR [--seed --scenes --per-scene]``: the entry point of a
    format's toy-sample writer in ``vlm.data.toyworld`` (``write_sample(out, seed, scenes, per_scene) -> count``);
    ``done`` is the closing line, with ``{n}`` (the count) and ``{out}``."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--write-sample", metavar="DIR", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=25)
    ap.add_argument("--per-scene", type=int, default=4)
    args = ap.parse_args()
    n = write_sample(args.write_sample, args.seed, args.scenes, args.per_scene)
    print(done.format(n=n, out=args.write_sample))
