"""Split a benchmark file into seeded, scene-disjoint parts written in the input's own format.

    python -m vlm split data.json --out_dir RUN/split --ratios 0.8 0.1 0.1 --names train val test

Writes ``{out_dir}/{name}.json`` per split and ``{out_dir}/{prefix}split_manifest.json`` (counts,
seed, input checksum). Same input + seed -> byte-identical files. The input is validated first and
files appear only once every split has been computed (temp file + rename).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from vlm.data import detect_benchmark, parse_hypo3d, parse_scanqa
from vlm.data.common import read_json
from vlm.data.errors import DataError
from vlm.data.split import GROUP_BY, assign, check_ratios, rebuild, units_of
from vlm.io import atomic_write_text, dumps_json


@dataclass
class Config:
    """Seeded, group-disjoint train/val/test split of a Hypo3D or ScanQA file."""

    input: str = field(metadata={"help": "benchmark JSON file (Hypo3D or ScanQA)", "positional": True})
    out_dir: str = field(default="", metadata={"help": "output folder (default: next to the input)"})
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "fractions, > 0, summing to 1"})
    names: list[str] = field(default_factory=lambda: ["train", "val", "test"], metadata={"help": "one file name per ratio"})
    seed: int = field(default=42, metadata={"help": "shuffling seed"})
    group_by: str = field(default="scene", metadata={"help": "what may not straddle splits", "choices": list(GROUP_BY)})
    benchmark: str = field(default="auto", metadata={"help": "hypo3d | scanqa | auto (detected from the file)"})
    manifest_name: str = field(default="split_manifest.json", metadata={"help": "file name of the split summary"})


def main(cfg: Config) -> int:
    src = Path(cfg.input)
    data = read_json(src)
    benchmark = detect_benchmark(data) if cfg.benchmark == "auto" else cfg.benchmark
    # Full validation (structure, types, duplicate ids) before anything is written.
    if benchmark == "hypo3d":
        parse_hypo3d(data, src)
    elif benchmark == "scanqa":
        parse_scanqa(data, src)
        if cfg.group_by == "change":
            raise DataError.single(src, "group_by", "'change' groups need Hypo3D context changes; use scene or none")
    else:
        raise DataError.single(src, "top level", "cannot tell the benchmark format; pass --benchmark hypo3d|scanqa")
    check_ratios(cfg.ratios, cfg.names, src)
    if len(set(cfg.names)) != len(cfg.names):
        raise DataError.single(src, "names", f"split names must differ: {cfg.names}")

    units = units_of(data, benchmark)
    parts = assign(units, cfg.ratios, cfg.names, cfg.seed, cfg.group_by, src)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else src.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "input": str(src),
        "input_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "benchmark": benchmark,
        "seed": cfg.seed,
        "group_by": cfg.group_by,
        "ratios": dict(zip(cfg.names, cfg.ratios)),
        "splits": {},
    }
    texts = {}
    for name in cfg.names:
        chosen = parts[name]
        texts[out_dir / f"{name}.json"] = dumps_json(rebuild(data, benchmark, chosen))
        manifest["splits"][name] = {
            "file": f"{name}.json",
            "questions": len(chosen),
            "scenes": len({u.scene_id for u in chosen}),
        }
    texts[out_dir / cfg.manifest_name] = dumps_json(manifest)
    for path, text in texts.items():
        atomic_write_text(path, text)
    summary = ", ".join(f"{n}: {s['questions']} questions / {s['scenes']} scenes" for n, s in manifest["splits"].items())
    print(f"split {src} ({benchmark}, group_by={cfg.group_by}, seed={cfg.seed}) -> {out_dir}: {summary}")
    return 0
