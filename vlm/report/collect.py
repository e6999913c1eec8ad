"""Reading a run dir: the eval entries, their metrics.json / eval_meta.json, trainer logs, provenance, KD notes.

Strict about structure: a malformed metrics.json or eval_meta.json is a DataError naming the file, the key and
what is wrong. The trainer logs and manifest.json are only shown, so a broken one is reported, not fatal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from vlm.data.errors import DataError, Problems

MODES = ("normal", "blind")
NO_RECIPE = "-"  # an eval dir without a recipe level (e.g. eval/<variant>/predictions.jsonl)
LOSS_KEYS = ("loss", "ce_loss", "kd_loss", "eval_loss")  # the trainer-log series the report reads


@dataclass
class Entry:
    """One eval/<variant>/<recipe>/<mode> directory."""

    variant: str
    recipe: str
    mode: str
    dir: Path
    rel: str  # dir relative to the run dir, posix
    meta: dict[str, Any]
    metrics: dict[str, Any] | None
    has_predictions: bool
    src: str = ""  # short name in the report: M1, M2, …

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.recipe}/{self.mode}"


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def rounded(x: Any) -> float | None:
    """A number as results.json keeps it (4 decimals); None for anything else."""
    return round(float(x), 4) if is_num(x) else None


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError.single(path, f"byte {e.start}", "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise DataError.single(path, f"line {e.lineno} column {e.colno}", f"invalid JSON: {e.msg}") from None
    if not isinstance(obj, dict):
        raise DataError.single(path, "top level", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_metrics(path: Path) -> dict[str, Any]:
    """A metrics.json written by ``python -m vlm metrics``, checked for the keys the report reads."""
    obj = read_json_object(path)
    problems = Problems(path)
    if not isinstance(obj.get("benchmark"), str) or not obj.get("benchmark"):
        problems.add("key 'benchmark'", "missing or not a non-empty string")
    if not is_num(obj.get("n")) or obj["n"] < 0:
        problems.add("key 'n'", "missing or not a count")
    overall = obj.get("overall")
    if not isinstance(overall, dict) or not overall:
        problems.add("key 'overall'", "missing or not a non-empty object of metric: value")
    else:
        for k, v in overall.items():
            if v is not None and not is_num(v):
                problems.add(f"key 'overall.{k}'", f"expected a number or null, got {json.dumps(v)[:40]}")
    ci = obj.get("ci", {})
    if not isinstance(ci, dict):
        problems.add("key 'ci'", "expected an object of metric: [low, high]")
    else:
        for k, v in ci.items():
            if not (isinstance(v, list) and len(v) == 2 and all(x is None or is_num(x) for x in v)):
                problems.add(f"key 'ci.{k}'", f"expected [low, high], got {json.dumps(v)[:40]}")
    for key in ("by_question_type", "by_change_type"):
        groups = obj.get(key, {})
        ok = isinstance(groups, dict) and all(isinstance(g, dict) and is_num(g.get("n")) for g in groups.values())
        if not ok:
            problems.add(f"key '{key}'", "expected an object of group: {n, metric: value}")
    if obj.get("normalization", "official") not in ("official", "per_model", "per_model_6152577"):
        problems.add("key 'normalization'", f"unknown normalization {json.dumps(obj['normalization'])[:40]}")
    problems.raise_if_any()
    return obj


def read_eval_meta(path: Path) -> dict[str, Any]:
    obj = read_json_object(path)
    problems = Problems(path)
    for key in ("variant", "recipe", "mode"):
        if key in obj and (not isinstance(obj[key], str) or not obj[key].strip() or "/" in obj[key]):
            problems.add(f"key '{key}'", f"expected a non-empty name, got {json.dumps(obj[key])[:40]}")
    if isinstance(obj.get("mode"), str) and obj["mode"] not in MODES:
        problems.add("key 'mode'", f"expected one of {', '.join(MODES)}, got '{obj['mode']}'")
    if "n" in obj and (not is_num(obj["n"]) or obj["n"] < 0):
        problems.add("key 'n'", f"expected a count, got {json.dumps(obj['n'])[:40]}")
    for key in ("model", "adapter", "benchmark"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            problems.add(f"key '{key}'", "expected a string or null")
    problems.raise_if_any()
    return obj


def _first_record_mode(predictions: Path) -> str | None:
    """The 'mode' field of the first record (a baseline without a model writes mode='blind'), if any."""
    try:
        with predictions.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    mode = json.loads(line).get("mode")
                    return mode if mode in MODES else None
    except (OSError, ValueError, AttributeError):
        return None  # load_predictions reports a broken file properly later
    return None


def variant_rank(variant: str, order: Sequence[str]) -> tuple[int, str]:
    """Declared variants in their declared order, then the others alphabetically."""
    return (order.index(variant), "") if variant in order else (len(order), variant)


def discover(run_dir: Path, order: Sequence[str] = ()) -> list[Entry]:
    """Every eval directory that holds predictions.jsonl, metrics.json or eval_meta.json, in table order
    (variants as ``order`` lists them); the ones with a metrics.json are named M1, M2, … in that order."""
    eval_root = run_dir / "eval"
    if not eval_root.is_dir():
        return []
    names = ("predictions.jsonl", "metrics.json", "eval_meta.json")
    dirs = sorted({p.parent for name in names for p in eval_root.rglob(name)})
    entries: dict[tuple[str, str, str], Entry] = {}
    for d in dirs:
        meta = read_eval_meta(d / "eval_meta.json") if (d / "eval_meta.json").is_file() else {}
        parts = d.relative_to(eval_root).parts
        path_mode = parts[-1] if parts and parts[-1] in MODES else None
        rest = parts[:-1] if path_mode else parts
        has_predictions = (d / "predictions.jsonl").is_file()
        record_mode = _first_record_mode(d / "predictions.jsonl") if has_predictions else None
        mode = meta.get("mode") or path_mode or record_mode or "normal"
        entry = Entry(
            variant=meta.get("variant") or (rest[0] if rest else "unknown"),
            recipe=meta.get("recipe") or ("/".join(rest[1:]) or NO_RECIPE),
            mode=mode,
            dir=d,
            rel=d.relative_to(run_dir).as_posix(),
            meta=meta,
            metrics=read_metrics(d / "metrics.json") if (d / "metrics.json").is_file() else None,
            has_predictions=has_predictions,
        )
        key = (entry.variant, entry.recipe, entry.mode)
        if key in entries:
            raise DataError.single(d, "-", f"same variant/recipe/mode {entry.label} as {entries[key].rel}")
        entries[key] = entry
    table_order = sorted(entries.values(), key=lambda e: (variant_rank(e.variant, order),
                                                           e.recipe not in ("direct", NO_RECIPE), e.recipe,
                                                           MODES.index(e.mode)))
    for i, e in enumerate([e for e in table_order if e.metrics is not None], start=1):
        e.src = f"M{i}"
    return table_order


def trained_recipes(run_dir: Path, variants: Sequence[str]) -> dict[str, dict[str, str]]:
    """variant -> {"recipe", "source"}: the recipe each variant was trained on (``recipe_resolved`` of
    train/<variant>/train_config.json; a CoT recipe for runs on the teacher's transcripts). Variants without that
    file (zero-shot) are left out. Strict: it decides which evaluations the comparisons pair."""
    out = {}
    for variant in variants:
        path = run_dir / "train" / variant / "train_config.json"
        if not path.is_file():
            continue
        recipe = read_json_object(path).get("recipe_resolved")
        if not isinstance(recipe, str) or not recipe.strip():
            raise DataError.single(path, "key 'recipe_resolved'", "missing or not a recipe name")
        out[variant] = {"recipe": recipe, "source": path.relative_to(run_dir).as_posix()}
    return out


def read_trainer_log(path: Path) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Any], int]:
    """({series: [(step, value)]}, summary line or {}, unreadable lines). A half-written last line (training
    still running) is skipped, not fatal: the log is only plotted."""
    series: dict[str, list[tuple[float, float]]] = {}
    summary: dict[str, Any] = {}
    bad = 0
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(row, dict):
            bad += 1
            continue
        if "train_runtime" in row:
            summary = row
            continue
        x = next((row[k] for k in ("step", "global_step", "epoch") if is_num(row.get(k))), i)
        for key in LOSS_KEYS:
            if is_num(row.get(key)) and math.isfinite(row[key]):
                series.setdefault(key, []).append((float(x), float(row[key])))
    return series, summary, bad


def training_runs(run_dir: Path) -> list[dict[str, Any]]:
    """One summary per train/<name>/trainer_log.jsonl: first / last / min of each loss series, runtime."""
    train_root = run_dir / "train"
    runs = []
    for path in sorted(train_root.rglob("trainer_log.jsonl")) if train_root.is_dir() else []:
        series, summary, bad = read_trainer_log(path)
        runs.append({
            "name": path.parent.relative_to(train_root).as_posix() or path.parent.name,
            "source": path.relative_to(run_dir).as_posix(),
            "series": {k: {"n": len(v), "first": rounded(v[0][1]), "last": rounded(v[-1][1]),
                           "min": rounded(min(y for _, y in v)), "last_step": rounded(v[-1][0])}
                       for k, v in series.items()},
            "train_runtime_s": rounded(summary.get("train_runtime")),
            "train_loss": rounded(summary.get("train_loss")),
            "unreadable_lines": bad,
        })
    return runs


def provenance(run_dir: Path) -> dict[str, Any] | None:
    """A few lines of manifest.json (git commit, start time, command, stage times); never fails."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(m, dict)
    except (OSError, ValueError, AssertionError):
        return {"source": "manifest.json", "error": "unreadable"}
    git = m.get("git") if isinstance(m.get("git"), dict) else {}
    command = m.get("command")
    stages = m.get("stages") or {}
    if isinstance(stages, list):
        stages = {s.get("name", str(i)): s for i, s in enumerate(stages) if isinstance(s, dict)}
    stage_rows = []
    for name, s in stages.items() if isinstance(stages, dict) else []:
        s = s if isinstance(s, dict) else {"wall_s": s}
        wall = next((s[k] for k in ("wall_s", "wall_time_s", "seconds", "wall_time") if is_num(s.get(k))), None)
        stage_rows.append({"name": str(name), "status": s.get("status"), "wall_s": rounded(wall)})
    return {
        "source": "manifest.json",
        "git_commit": m.get("git_commit") or git.get("commit") or m.get("commit"),
        "git_dirty": m.get("git_dirty", git.get("dirty")),
        "start_time": next((m[k] for k in ("start_time", "started", "started_at", "created") if m.get(k)), None),
        "command": " ".join(map(str, command)) if isinstance(command, list) else command,
        "seed": m.get("seed"),
        "stages": stage_rows,
    }


def kd_warnings(run_dir: Path) -> list[str]:
    """A KD student that could not distil (tokenizers differ) trained with CE on the teacher's CoT: say so."""
    out = []
    for meta_file in sorted(run_dir.glob("cot*/cot_meta.json")):
        meta = read_json_object(meta_file)
        if meta.get("kd") is False:
            out.append(f"{meta_file.relative_to(run_dir)}: no logit cache ({meta.get('fallback_reason')}); "
                       "the KD student was trained with CE on the teacher's CoT only")
    return out
