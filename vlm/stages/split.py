"""Split a benchmark file into seeded, scene-disjoint parts written in the input's own format.

    python -m vlm split data.json --out_dir RUN/split --ratios 0.8 0.1 0.1 --names train val test

Hypo3D, ScanQA, A-OKVQA (scene = COCO image) and LLaVA-CoT (scene = the record's image). Writes
``{out_dir}/{name}.json`` per split — ``{name}.jsonl`` holding the input's own lines for a JSONL input — and
``{out_dir}/{prefix}split_manifest.json`` (files, counts, seed, input checksum). Same input + seed ->
byte-identical files. The input is validated first and files appear only once every split has been
computed (temp file + rename).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from vlm.benchmarks import BENCHMARKS, detect_file, get, load_samples
from vlm.data.common import is_json_list, read_json
from vlm.data.errors import DataError
from vlm.data.split import GROUP_BY, assign, check_ratios, read_jsonl
from vlm.io import atomic_write_bytes, dumps_json


@dataclass
class Config:
    """Seeded, group-disjoint train/val/test split of a Hypo3D, ScanQA, A-OKVQA or LLaVA-CoT file."""

    input: str = field(metadata={"help": "benchmark file (Hypo3D / ScanQA / A-OKVQA JSON, LLaVA-CoT JSONL or JSON)",
                                 "positional": True})
    out_dir: str = field(default="", metadata={"help": "output folder (default: next to the input)"})
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "fractions, > 0, summing to 1"})
    names: list[str] = field(default_factory=lambda: ["train", "val", "test"], metadata={"help": "one file name per ratio"})
    seed: int = field(default=42, metadata={"help": "shuffling seed"})
    group_by: str = field(default="scene", metadata={"help": "what may not straddle splits (scene: the image for "
                                                              "A-OKVQA / LLaVA-CoT; change: Hypo3D only)",
                                                      "choices": list(GROUP_BY)})
    benchmark: str = field(default="auto", metadata={"help": f"{' | '.join(BENCHMARKS)} | auto (detected from the file)"})
    manifest_name: str = field(default="split_manifest.json", metadata={"help": "file name of the split summary"})


def main(cfg: Config) -> int:
    src = Path(cfg.input)
    benchmark = detect_file(src) if cfg.benchmark == "auto" else cfg.benchmark
    if not benchmark:
        raise DataError.single(src, "top level", f"cannot tell the benchmark format; pass --benchmark {'|'.join(BENCHMARKS)}")
    bench = get(benchmark, src)
    # Full validation (structure, types, duplicate ids; text only) before anything is written.
    load_samples(src, benchmark)
    lines = None  # a JSONL input's own lines, written back unchanged
    if bench.jsonl and not is_json_list(src):
        data, lines = read_jsonl(src)
    else:
        data = read_json(src)
    units = bench.split_units(data)
    if cfg.group_by == "change" and units and all(u.change_key == u.unit_key for u in units):  # no context changes
        raise DataError.single(src, "group_by", f"'change' groups need Hypo3D context changes ({benchmark} has none); "
                                                "use scene or none")
    check_ratios(cfg.ratios, cfg.names, src)
    if len(set(cfg.names)) != len(cfg.names):
        raise DataError.single(src, "names", f"split names must differ: {cfg.names}")

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
    ext = ".json" if lines is None else ".jsonl"
    blobs: dict[Path, bytes] = {}
    for name in cfg.names:
        chosen = parts[name]
        if lines is None:
            blobs[out_dir / f"{name}{ext}"] = dumps_json(bench.split_rebuild(data, {u.path for u in chosen})).encode("utf-8")
        else:
            blobs[out_dir / f"{name}{ext}"] = b"".join(lines[u.path[0]] for u in chosen)
        manifest["splits"][name] = {
            "file": f"{name}{ext}",
            "questions": sum(u.questions for u in chosen),
            "scenes": len({u.scene_id for u in chosen}),
        }
    blobs[out_dir / cfg.manifest_name] = dumps_json(manifest).encode("utf-8")
    for path, blob in blobs.items():
        atomic_write_bytes(path, blob)
    summary = ", ".join(f"{n}: {s['questions']} questions / {s['scenes']} scenes" for n, s in manifest["splits"].items())
    print(f"split {src} ({benchmark}, group_by={cfg.group_by}, seed={cfg.seed}) -> {out_dir}: {summary}")
    return 0
