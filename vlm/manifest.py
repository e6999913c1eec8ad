"""The run manifest (``RUN_DIR/manifest.json``) and the stage runner behind ``pipelines/lib/common.sh``.

    python -m vlm.manifest init RUN_DIR --command "…" --config KEY=VALUE …   # provenance, once per run
    python -m vlm.manifest run RUN_DIR NAME -- command …                     # one stage
    python -m vlm.manifest study RUN_DIR --variants V … [--blind_only V …]   # the study's design
        [--compare A:B …] [--gap_recovered LOW:HIGH]

``study`` records the study's design in ``manifest["study"]``; the report reads it from there and knows no variant
by name. ``variants``: what the study evaluates, in report order; ``blind_only``: those evaluated without the image
only (no normal/blind pair); ``compare`` ([[A, B], …]): the report's "Comparisons" table shows A − B per mode,
each on the recipe it was trained on, with a paired CI; ``gap_recovered`` ({"low": L, "high": H}): the headline
table's (variant − L) / (H − L) per row. The last two are left out of the entry when not given. Running it again
with the same flags changes nothing (resume). Bad flags: one ``flags: --name: what`` line each, exit 2.

``run`` executes the stage command, tees its output to ``logs/NAME.log``, and records status, wall time and
peak memory (max RSS of the stage's processes) in the manifest; exit code = the command's. Provenance: the
command line, the pipeline's resolved configuration, git commit + dirty flag, package versions, device, seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlm.data.errors import Problems
from vlm.io import atomic_write_text, dumps_json

PACKAGES = ("torch", "torchvision", "transformers", "peft", "accelerate", "datasets", "sentence-transformers", "safetensors")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def provenance(repo: Path) -> dict:
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            device = f"cuda: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return {"git_commit": _git(repo, "rev-parse", "HEAD") or None, "git_dirty": bool(_git(repo, "status", "--porcelain")),
            "python": platform.python_version(), "platform": platform.platform(), "packages": versions, "device": device,
            "cpus": os.cpu_count()}


def load(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


def save(run_dir: Path, manifest: dict) -> None:
    atomic_write_text(run_dir / "manifest.json", dumps_json(manifest))


def init(run_dir: Path, command: str, config: dict[str, str]) -> None:
    manifest = load(run_dir)
    runs = manifest.setdefault("invocations", [])
    runs.append({"started": _now(), "command": command})
    manifest.setdefault("start_time", runs[0]["started"])
    manifest["command"] = command
    manifest["config"] = config
    manifest["seed"] = config.get("SEED")
    manifest.update(provenance(Path(__file__).resolve().parents[1]))
    save(run_dir, manifest)


@dataclass(frozen=True)
class Study:
    """The study's design: its variants in report order, those evaluated blind only, the pairs the report
    compares (A − B) and the (low, high) pair of the "gap recovered" column."""

    variants: tuple[str, ...]
    blind_only: tuple[str, ...] = ()
    compare: tuple[tuple[str, str], ...] = ()
    gap_recovered: tuple[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"variants": list(self.variants), "blind_only": list(self.blind_only)}
        if self.compare:  # absent when not declared: a study recorded before these keys reads the same
            out["compare"] = [list(pair) for pair in self.compare]
        if self.gap_recovered:
            out["gap_recovered"] = dict(zip(("low", "high"), self.gap_recovered))
        return out

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Study:
        """A well-formed entry (``study_problems`` found nothing) as a Study."""
        gap = entry.get("gap_recovered")
        return cls(tuple(entry["variants"]), tuple(entry.get("blind_only", [])),
                   tuple(tuple(pair) for pair in entry.get("compare", [])), (gap["low"], gap["high"]) if gap else None)


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and "/" not in v


def _pair_problems(key: str, pairs: list[Any], variants: list[str]) -> list[tuple[str, str]]:
    """compare / gap_recovered: pairs of two different declared variants, none twice."""
    problems = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(map(_is_name, pair))):
            problems.append((key, f"expected a pair of variant names, got {json.dumps(pair)[:60]}"))
        elif pair[0] == pair[1]:
            problems.append((key, f"compares a variant with itself: {pair[0]}:{pair[1]}"))
        elif stray := [v for v in pair if v not in variants]:
            problems.append((key, f"not among the variants: {' '.join(stray)}"))
    names = [":".join(p) for p in pairs if isinstance(p, list) and all(map(_is_name, p))]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        problems.append((key, f"names a pair twice: {' '.join(twice)}"))
    return problems


def study_problems(entry: Any) -> list[tuple[str, str]]:
    """(field, what is wrong) for a manifest "study" entry; [] when it is well formed."""
    if not isinstance(entry, dict):
        return [("", "expected an object {variants, blind_only, compare, gap_recovered}")]
    problems = []
    for key in ("variants", "blind_only"):
        names = entry.get(key, [] if key == "blind_only" else None)
        if not isinstance(names, list) or not all(isinstance(v, str) and v.strip() and "/" not in v for v in names):
            problems.append((key, f"expected a list of variant names, got {json.dumps(names)[:60]}"))
        elif len(set(names)) != len(names):
            problems.append((key, f"names a variant twice: {' '.join(names)}"))
    if not problems and not entry["variants"]:
        problems.append(("variants", "empty: a study has at least one variant"))
    if not problems and (stray := [v for v in entry.get("blind_only", []) if v not in entry["variants"]]):
        problems.append(("blind_only", f"not among the variants: {' '.join(stray)}"))
    if problems:
        return problems
    compare = entry.get("compare", [])
    if not isinstance(compare, list):
        problems.append(("compare", f"expected a list of [A, B] pairs, got {json.dumps(compare)[:60]}"))
    else:
        problems += _pair_problems("compare", compare, entry["variants"])
    gap = entry.get("gap_recovered")
    if gap is not None:
        if not (isinstance(gap, dict) and set(gap) == {"low", "high"}):
            problems.append(("gap_recovered", f"expected {{low, high}}, got {json.dumps(gap)[:60]}"))
        else:
            problems += _pair_problems("gap_recovered", [[gap["low"], gap["high"]]], entry["variants"])
    return problems


def parse_pair(text: str) -> list[str] | None:
    """'A:B' -> [A, B]; None unless it is two non-empty names around one colon."""
    parts = text.split(":")
    return parts if len(parts) == 2 and all(p.strip() for p in parts) else None


def read_study(run_dir: Path) -> Study | None:
    """The study declared in RUN_DIR/manifest.json; None where none is (old runs, hand-made run dirs) or the
    manifest is unreadable (the report's provenance says so). A malformed entry is a DataError."""
    try:
        manifest = load(run_dir)
    except (OSError, ValueError):
        return None
    entry = manifest.get("study") if isinstance(manifest, dict) else None
    if entry is None:
        return None
    problems = Problems(run_dir / "manifest.json")
    for key, message in study_problems(entry):
        problems.add(f"key 'study{'.' + key if key else ''}'", message)
    problems.raise_if_any()
    return Study.from_json(entry)


def declare_study(run_dir: Path, study: Study) -> None:
    """Record the study in the manifest; the same study again (a resumed run) leaves the file untouched."""
    manifest = load(run_dir)
    if manifest.get("study") == study.to_json():
        return
    if "study" in manifest:
        print(f"{run_dir / 'manifest.json'}: study: {json.dumps(manifest['study'])} replaced by "
              f"{json.dumps(study.to_json())}", file=sys.stderr)
    manifest["study"] = study.to_json()
    save(run_dir, manifest)


def run_stage(run_dir: Path, name: str, cmd: list[str]) -> int:
    log_path = run_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    manifest = load(run_dir)
    manifest.setdefault("stages", {})[name] = {"status": "running", "started": _now(), "command": cmd, "log": str(log_path)}
    save(run_dir, manifest)
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:  # tee: the terminal sees the stage, the log keeps it
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, largest child of this runner
    manifest = load(run_dir)
    manifest["stages"][name].update(status="done" if rc == 0 else "failed", exit_code=rc,
                                    wall_s=round(time.time() - started, 1), peak_rss_mb=round(peak_kb / 1024, 1), ended=_now())
    save(run_dir, manifest)
    return rc


def _study_command(a: argparse.Namespace) -> int:
    """Check the flags (every problem, one line each, exit 2, nothing written), then record the study."""
    entry: dict[str, Any] = {"variants": a.variants, "blind_only": a.blind_only, "compare": []}
    problems = []
    for key, texts in (("compare", a.compare), ("gap_recovered", [a.gap_recovered] if a.gap_recovered else [])):
        for text in texts:
            if (pair := parse_pair(text)) is None:
                problems.append((key, f"expected VARIANT:VARIANT, got '{text}'"))
            elif key == "compare":
                entry["compare"].append(pair)
            else:
                entry["gap_recovered"] = dict(zip(("low", "high"), pair))
    problems += study_problems(entry)
    if problems:
        print("\n".join(f"flags: --{key}: {message}" for key, message in problems), file=sys.stderr)
        return 2
    declare_study(Path(a.run_dir), Study.from_json(entry))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm.manifest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    i = sub.add_parser("init")
    i.add_argument("run_dir")
    i.add_argument("--command", default="")
    i.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    r = sub.add_parser("run")
    r.add_argument("run_dir")
    r.add_argument("name")
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("study", help="record the study's variants (report order) and its blind-only variants")
    s.add_argument("run_dir")
    s.add_argument("--variants", nargs="+", required=True, metavar="VARIANT")
    s.add_argument("--blind_only", nargs="*", default=[], metavar="VARIANT",
                   help="variants evaluated without the image only (no normal/blind pair), e.g. an answer prior")
    s.add_argument("--compare", nargs="*", default=[], metavar="A:B",
                   help="pairs the report compares: A - B per mode, each on the recipe it was trained on, paired CI")
    s.add_argument("--gap_recovered", default=None, metavar="LOW:HIGH",
                   help="the headline's 'gap recovered' column: (variant - LOW) / (HIGH - LOW), normal mode")
    a = p.parse_args(argv)
    if a.action == "init":
        init(Path(a.run_dir), a.command, dict(kv.split("=", 1) for kv in a.config))
        return 0
    if a.action == "study":
        return _study_command(a)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    return run_stage(Path(a.run_dir), a.name, cmd)


if __name__ == "__main__":
    sys.exit(main())
