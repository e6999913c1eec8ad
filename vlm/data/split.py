"""Seeded, group-disjoint splitting that keeps each benchmark's own file layout (the benchmark turns its data
into ``Unit``s and rebuilds a split from the chosen ones: ``Benchmark.split_units`` / ``split_rebuild``).

A *unit* is one question; a *group* is what must not straddle two splits (a scene by default, so
no scene seen in training is evaluated). Groups are shuffled with a seeded numpy Generator and cut
by group count with largest-remainder rounding, like sklearn's GroupShuffleSplit but three-way and
with exact, documented counts. Output rebuilds the input's structure with the original order kept
(a JSONL input: its own lines, byte for byte).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlm.data.errors import DataError

GROUP_BY = ("scene", "change", "none")


@dataclass(frozen=True)
class Unit:
    scene_id: str
    path: tuple  # where the question sits in the input, e.g. (index,) in a flat list; split_rebuild reads it
    change_key: str  # the context change it belongs to (Hypo3D: scene_id + change index); the question itself elsewhere
    unit_key: str
    questions: int = 1  # evaluated questions of the unit (a multi-turn LLaVA-CoT record is one)


def group_counts(n_groups: int, ratios: list[float]) -> list[int]:
    """Largest-remainder rounding of ratios * n_groups (ties go to the earlier split); then every split
    that rounded to zero takes one group from the largest split, as long as that one keeps at least one
    (small smoke-test sets should still get a test split). A zero left after that means: too few groups."""
    raw = [r * n_groups for r in ratios]
    counts = [int(np.floor(x)) for x in raw]
    order = sorted(range(len(ratios)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n_groups - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
        if counts[i] == 0 and counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts


def check_ratios(ratios: list[float], names: list[str], file: str | Path) -> None:
    if len(ratios) != len(names):
        raise DataError.single(file, "ratios", f"{len(ratios)} ratios for {len(names)} split names {names}")
    if any(r <= 0 for r in ratios):
        raise DataError.single(file, "ratios", f"every ratio must be > 0, got {ratios}")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise DataError.single(file, "ratios", f"ratios must sum to 1, got {ratios} (sum {sum(ratios):.6g})")


def assign(units: list[Unit], ratios: list[float], names: list[str], seed: int, group_by: str, file: str | Path) -> dict[str, list[Unit]]:
    if group_by not in GROUP_BY:
        raise DataError.single(file, "group_by", f"'{group_by}' is not one of {', '.join(GROUP_BY)}")
    key = {"scene": lambda u: u.scene_id, "change": lambda u: u.change_key, "none": lambda u: u.unit_key}[group_by]
    groups = list(dict.fromkeys(key(u) for u in units))  # first-appearance order: stable across runs
    counts = group_counts(len(groups), ratios)
    empty = [n for n, c in zip(names, counts) if c == 0]
    if empty:
        raise DataError.single(
            file, "-", f"split(s) {', '.join(empty)} would be empty: {len(groups)} {group_by} groups for ratios {ratios}"
        )
    perm = np.random.default_rng(seed).permutation(len(groups))
    split_of: dict[str, str] = {}
    start = 0
    for name, count in zip(names, counts):
        for gi in perm[start : start + count]:
            split_of[groups[gi]] = name
        start += count
    return {name: [u for u in units if split_of[key(u)] == name] for name in names}


def read_jsonl(path: str | Path) -> tuple[list[Any], list[bytes]]:
    """(records, raw lines) of a validated JSONL file: blank lines dropped, every line ending in a newline,
    so a split writes the input's own lines back byte for byte."""
    lines = [line + b"\n" for line in Path(path).read_bytes().split(b"\n") if line.strip()]  # as iter_records reads it
    return [json.loads(line) for line in lines], lines
