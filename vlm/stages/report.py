"""``python -m vlm report RUN_DIR`` — one report of a run, read from the JSON files the other stages wrote.

A thin reader: it loads no model and imports nothing heavier than numpy / matplotlib.

Reads (never writes) the run dir:
  eval/<variant>/<recipe>/<mode>/{predictions.jsonl, metrics.json, eval_meta.json}
      (eval_meta.json, when present, names variant / recipe / mode and optionally a study ``arm``; otherwise
      they come from the path; evaluations that name an arm get the "Arms" table, one row per arm)
  train/<name>/trainer_log.jsonl   HF Trainer log history, one JSON object per line
  manifest.json                    provenance, optional

Writes into ``--out_dir`` (default RUN_DIR/report), atomically:
  results.json  every number of the tables, their sources, incomplete / missing entries
  report.md     rendered from results.json only
  loss_curves.png, normal_vs_blind.png

Values and CIs come from each metrics.json. Differences between two evaluations (blind gap, CoT − direct)
get a PAIRED bootstrap CI over the ids present in both: per-sample scores are recomputed from the two
predictions.jsonl with ``vlm.metrics.score_records`` (no SBERT: pure Python) and the same resampled ids
are used for both sides.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm.data.errors import DataError, Problems
from vlm.io import atomic_write_bytes, atomic_write_text, json_safe
from vlm.metrics import HEADLINE as DEFAULT_HEADLINE
from vlm.metrics import bootstrap_ci, load_predictions, score_records

MODES = ("normal", "blind")
# Table order; variants not listed here follow alphabetically.
KNOWN_VARIANTS = ("prior", "teacher_zeroshot", "teacher_lora", "student_zeroshot", "student_lora", "student_kd",
                  "baseline", "finetuned")
DISTILL_VARIANTS = KNOWN_VARIANTS[1:6]  # a distillation study without one of these is missing it
REASONING = "has_reasoning"
CONFIDENCE = 0.95
NO_RECIPE = "-"  # an eval dir without a recipe level (e.g. eval/prior/)
LOSS_STYLES = {"loss": "-", "ce_loss": "--", "kd_loss": "-.", "eval_loss": ":"}


@dataclass
class Config:
    """Collect every metrics.json of a run into report.md, results.json and PNG plots (reads JSON only, no model)."""

    run_dir: str = field(metadata={"positional": True, "help": "run directory (runs/pipeline_run_…)"})
    out_dir: str | None = field(default=None, metadata={"help": "where to write the report (default: RUN_DIR/report)"})
    headline: str = field(default="auto", metadata={"help": "headline metric: auto (em for hypo3d, em@1 for scanqa) or any key of metrics.json 'overall'"})
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the paired CIs of differences (0: no CIs)"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})


# ---------------------------------------------------------------------------------------------
# Reading the run dir
# ---------------------------------------------------------------------------------------------


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


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _read_json_object(path: Path) -> dict[str, Any]:
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
    obj = _read_json_object(path)
    problems = Problems(path)
    if not isinstance(obj.get("benchmark"), str) or not obj.get("benchmark"):
        problems.add("key 'benchmark'", "missing or not a non-empty string")
    if not _is_num(obj.get("n")) or obj["n"] < 0:
        problems.add("key 'n'", "missing or not a count")
    overall = obj.get("overall")
    if not isinstance(overall, dict) or not overall:
        problems.add("key 'overall'", "missing or not a non-empty object of metric: value")
    else:
        for k, v in overall.items():
            if v is not None and not _is_num(v):
                problems.add(f"key 'overall.{k}'", f"expected a number or null, got {json.dumps(v)[:40]}")
    ci = obj.get("ci", {})
    if not isinstance(ci, dict):
        problems.add("key 'ci'", "expected an object of metric: [low, high]")
    else:
        for k, v in ci.items():
            if not (isinstance(v, list) and len(v) == 2 and all(x is None or _is_num(x) for x in v)):
                problems.add(f"key 'ci.{k}'", f"expected [low, high], got {json.dumps(v)[:40]}")
    for key in ("by_question_type", "by_change_type"):
        groups = obj.get(key, {})
        ok = isinstance(groups, dict) and all(isinstance(g, dict) and _is_num(g.get("n")) for g in groups.values())
        if not ok:
            problems.add(f"key '{key}'", "expected an object of group: {n, metric: value}")
    if obj.get("normalization", "official") not in ("official", "per_model", "per_model_6152577"):
        problems.add("key 'normalization'", f"unknown normalization {json.dumps(obj['normalization'])[:40]}")
    problems.raise_if_any()
    return obj


def read_eval_meta(path: Path) -> dict[str, Any]:
    obj = _read_json_object(path)
    problems = Problems(path)
    for key in ("variant", "recipe", "mode"):
        if key in obj and (not isinstance(obj[key], str) or not obj[key].strip() or "/" in obj[key]):
            problems.add(f"key '{key}'", f"expected a non-empty name, got {json.dumps(obj[key])[:40]}")
    if isinstance(obj.get("mode"), str) and obj["mode"] not in MODES:
        problems.add("key 'mode'", f"expected one of {', '.join(MODES)}, got '{obj['mode']}'")
    if "n" in obj and (not _is_num(obj["n"]) or obj["n"] < 0):
        problems.add("key 'n'", f"expected a count, got {json.dumps(obj['n'])[:40]}")
    for key in ("model", "adapter", "benchmark"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            problems.add(f"key '{key}'", "expected a string or null")
    problems.raise_if_any()
    return obj


def _first_record_mode(predictions: Path) -> str | None:
    """The 'mode' field of the first record (the prior baseline writes mode='blind'), if any."""
    try:
        with predictions.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    mode = json.loads(line).get("mode")
                    return mode if mode in MODES else None
    except (OSError, ValueError, AttributeError):
        return None  # load_predictions reports a broken file properly later
    return None


def discover(run_dir: Path) -> list[Entry]:
    """Every eval directory that holds predictions.jsonl, metrics.json or eval_meta.json."""
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
    order = sorted(entries.values(), key=_sort_key)
    for i, e in enumerate([e for e in order if e.metrics is not None], start=1):
        e.src = f"M{i}"
    return order


def _variant_rank(variant: str) -> tuple[int, str]:
    return (KNOWN_VARIANTS.index(variant), "") if variant in KNOWN_VARIANTS else (len(KNOWN_VARIANTS), variant)


def _sort_key(e: Entry) -> tuple:
    return (_variant_rank(e.variant), e.recipe not in ("direct", NO_RECIPE), e.recipe, MODES.index(e.mode))


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def _pct(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(100.0 * float(x), 4)


def _round(x: Any) -> Any:
    return round(float(x), 4) if _is_num(x) else None


def headline_metric(benchmark: str, overall: dict[str, Any], requested: str) -> str:
    """The requested metric, else the benchmark's default (em / em@1), else the first metric present."""
    if requested != "auto" and requested in overall:
        return requested
    default = DEFAULT_HEADLINE.get(benchmark)
    return default if default in overall else next(iter(overall))


class Scores:
    """Per-sample scores ({id: fraction}) recomputed from an entry's predictions.jsonl, cached per entry."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[list, list[dict[str, float]]]] = {}

    def get(self, e: Entry, metric: str) -> dict[str, float] | None:
        if not e.has_predictions or e.metrics is None:
            return None
        if e.dir not in self._cache:
            records = load_predictions(e.dir / "predictions.jsonl")
            rows = score_records(records, e.metrics["benchmark"], use_sbert=False,
                                 normalization=e.metrics.get("normalization", "official"))
            self._cache[e.dir] = (records, rows)
        records, rows = self._cache[e.dir]
        if not rows or metric not in rows[0]:
            return None  # sbert, bleu, cider …: not recomputed per sample here
        # NaN = the metric does not apply to that sample (A-OKVQA DA of a difficult question): left out
        return {r.id: row[metric] for r, row in zip(records, rows) if not math.isnan(row[metric])}


def paired_difference(
    a: dict[str, float] | None, b: dict[str, float] | None, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Mean of a − b over the shared ids, with a percentile bootstrap CI that resamples the SAME ids on both
    sides (resampling the per-id differences is exactly that)."""
    if a is None or b is None:
        return {"n_paired": 0, "mean": None, "ci": None, "note": "no per-sample scores for this metric"}
    ids = sorted(a.keys() & b.keys())
    if not ids:
        return {"n_paired": 0, "mean": None, "ci": None, "note": "no shared ids"}
    diff = np.array([a[i] - b[i] for i in ids], dtype=float)
    lo, hi = bootstrap_ci(diff, n_bootstrap, CONFIDENCE, seed)
    ci = None if n_bootstrap <= 0 else [_pct(lo), _pct(hi)]
    return {"n_paired": len(ids), "mean": _pct(diff.mean()), "ci": ci}


def _cell(e: Entry | None, metric: str, scores: Scores, n_bootstrap: int, seed: int) -> dict[str, Any] | None:
    """One value of a table: the metrics.json value and CI (CI recomputed from predictions when absent)."""
    if e is None or e.metrics is None:
        return None
    value = e.metrics["overall"].get(metric)
    ci = e.metrics.get("ci", {}).get(metric)
    ci_from = "metrics.json" if ci else None
    if not ci and n_bootstrap > 0 and (s := scores.get(e, metric)):
        lo, hi = bootstrap_ci(list(s.values()), n_bootstrap, CONFIDENCE, seed)
        ci, ci_from = [_pct(lo), _pct(hi)], "predictions.jsonl"
    return {"value": _round(value), "ci": [_round(x) for x in ci] if ci else None, "ci_from": ci_from,
            "n": int(e.metrics["n"]), "src": e.src}


def _pairs(entries: list[Entry]) -> dict[tuple[str, str, str], dict[str, Entry]]:
    """(benchmark, variant, recipe) -> {mode: entry}, complete entries only, in table order."""
    out: dict[tuple[str, str, str], dict[str, Entry]] = {}
    for e in entries:
        if e.metrics is not None:
            out.setdefault((e.metrics["benchmark"], e.variant, e.recipe), {})[e.mode] = e
    return out


def normal_blind_gap(modes: dict[str, Entry], metric: str, scores: Scores, n_bootstrap: int, seed: int) -> tuple:
    """(normal cell, blind cell, gap) of one evaluation pair; the gap (normal - blind) has a paired CI."""
    normal, blind = (_cell(modes.get(m), metric, scores, n_bootstrap, seed) for m in MODES)
    gap = None
    if normal and blind:
        nv, bv = normal["value"], blind["value"]
        paired = paired_difference(*(scores.get(modes[m], metric) for m in MODES), n_bootstrap, seed)
        gap = {"value": _round(nv - bv) if nv is not None and bv is not None else None, **paired,
               "src": [normal["src"], blind["src"]]}
    return normal, blind, gap


def headline_rows(entries: list[Entry], requested: str, scores: Scores, n_bootstrap: int, seed: int) -> list[dict]:
    rows = []
    for (bench, variant, recipe), modes in _pairs(entries).items():
        first = modes.get("normal") or modes["blind"]
        metric = headline_metric(bench, first.metrics["overall"], requested)
        normal, blind, gap = normal_blind_gap(modes, metric, scores, n_bootstrap, seed)
        rows.append({"benchmark": bench, "variant": variant, "recipe": recipe, "metric": metric,
                     "normal": normal, "blind": blind, "gap": gap})
    return rows


def overall_rows(entries: list[Entry], scores: Scores, n_bootstrap: int, seed: int) -> list[dict]:
    rows = []
    for e in entries:
        if e.metrics is None:
            continue
        cells = {m: _cell(e, m, scores, 0, seed) for m in e.metrics["overall"]}  # CIs only where metrics.json has them
        rows.append({"benchmark": e.metrics["benchmark"], "variant": e.variant, "recipe": e.recipe, "mode": e.mode,
                     "n": int(e.metrics["n"]), "src": e.src,
                     "metrics": {m: {"value": c["value"], "ci": c["ci"]} for m, c in cells.items()}})
    return rows


def group_rows(entries: list[Entry], key: str, requested: str) -> list[dict]:
    """Per question type / change type: headline metric, normal and blind side by side."""
    rows = []
    for (bench, variant, recipe), modes in _pairs(entries).items():
        first = modes.get("normal") or modes["blind"]
        metric = headline_metric(bench, first.metrics["overall"], requested)
        names = sorted({g for e in modes.values() for g in e.metrics.get(key, {})})
        if not names:
            continue
        groups = {}
        for g in names:
            groups[g] = {}
            for m in MODES:
                grp = modes[m].metrics.get(key, {}).get(g) if m in modes else None
                groups[g][m] = {"value": _round(grp.get(metric)), "n": int(grp["n"])} if grp else None
        rows.append({"benchmark": bench, "variant": variant, "recipe": recipe, "metric": metric, "groups": groups,
                     "src": {m: modes[m].src for m in MODES if m in modes}})
    return rows


def cot_rows(entries: list[Entry], requested: str, scores: Scores, n_bootstrap: int, seed: int) -> list[dict]:
    """Every (variant, mode) evaluated with 'direct' and another recipe: recipe − direct, paired CI."""
    pairs = _pairs(entries)
    rows = []
    for (bench, variant, recipe), modes in pairs.items():
        direct_modes = pairs.get((bench, variant, "direct"))
        if recipe in ("direct", NO_RECIPE) or not direct_modes:
            continue
        for m in MODES:
            if m not in modes or m not in direct_modes:
                continue
            cot_e, dir_e = modes[m], direct_modes[m]
            metric = headline_metric(bench, dir_e.metrics["overall"], requested)
            cot, direct = (_cell(x, metric, scores, n_bootstrap, seed) for x in (cot_e, dir_e))
            paired = paired_difference(scores.get(cot_e, metric), scores.get(dir_e, metric), n_bootstrap, seed)
            value = None if cot["value"] is None or direct["value"] is None else _round(cot["value"] - direct["value"])
            reasoning = {k: _round(x.metrics["overall"].get(REASONING)) for k, x in (("direct", dir_e), ("cot", cot_e))}
            rows.append({"benchmark": bench, "variant": variant, "recipe": recipe, "mode": m, "metric": metric,
                         "direct": direct, "cot": cot, REASONING: reasoning,
                         "diff": {"value": value, **paired, "src": [cot["src"], direct["src"]]}})
    return rows


def arm_rows(entries: list[Entry], requested: str, scores: Scores, n_bootstrap: int, seed: int) -> list[dict]:
    """One row per study arm (eval_meta.json 'arm'): headline normal / blind / gap with CIs, the share of
    outputs with a reasoning part, and every other overall metric of the normal evaluation."""
    arms: dict[str, dict[str, Entry]] = {}
    for e in entries:
        if e.metrics is not None and e.meta.get("arm"):
            arms.setdefault(str(e.meta["arm"]), {})[e.mode] = e
    rows = []
    for arm, modes in arms.items():
        first = modes.get("normal") or modes["blind"]
        bench = first.metrics["benchmark"]
        metric = headline_metric(bench, first.metrics["overall"], requested)
        normal, blind, gap = normal_blind_gap(modes, metric, scores, n_bootstrap, seed)
        reasoning = {m: _round(modes[m].metrics["overall"].get(REASONING)) if m in modes else None for m in MODES}
        others = {k: _round(v) for k, v in first.metrics["overall"].items() if k not in (metric, REASONING)}
        rows.append({"arm": arm, "benchmark": bench, "variant": first.variant, "recipe": first.recipe, "metric": metric,
                     "normal": normal, "blind": blind, "gap": gap, REASONING: reasoning, "other_metrics": others,
                     "other_from": first.mode})
    return rows


def status_lists(entries: list[Entry]) -> tuple[list[dict], list[dict], list[str]]:
    """(incomplete, missing, warnings)."""
    incomplete, missing, warnings = [], [], []
    for e in entries:
        if e.metrics is None:
            reason = ("predictions.jsonl but no metrics.json (run: python -m vlm metrics …/predictions.jsonl)"
                      if e.has_predictions else "eval_meta.json but no predictions.jsonl yet")
            incomplete.append({"variant": e.variant, "recipe": e.recipe, "mode": e.mode, "dir": e.rel,
                               "reason": reason})
            continue
        n = int(e.metrics["n"])
        if e.has_predictions:
            lines = sum(1 for ln in (e.dir / "predictions.jsonl").read_text(encoding="utf-8").split("\n") if ln.strip())
            if lines != n:
                warnings.append(f"{e.rel}: metrics.json has n={n} but predictions.jsonl has {lines} lines "
                                "(stale metrics?)")
        if _is_num(e.meta.get("n")) and e.meta["n"] != n:
            warnings.append(f"{e.rel}: eval_meta.json expects n={e.meta['n']} but metrics.json has n={n}")
    seen = {(e.variant, e.recipe) for e in entries}
    for variant, recipe in sorted(seen, key=lambda vr: (_variant_rank(vr[0]), vr[1])):
        if variant == "prior":
            continue  # the answer prior never sees an image: it has no normal/blind pair
        for m in MODES:
            if not any(e.variant == variant and e.recipe == recipe and e.mode == m for e in entries):
                missing.append({"variant": variant, "recipe": recipe, "mode": m, "reason": "no eval directory"})
    present = {e.variant for e in entries}
    is_arm_study = any(e.meta.get("arm") for e in entries)
    for v in () if is_arm_study else DISTILL_VARIANTS:
        if v not in present:
            missing.append({"variant": v, "recipe": None, "mode": None, "reason": "not evaluated in this run"})
    return incomplete, missing, warnings


# ---------------------------------------------------------------------------------------------
# Training logs and provenance
# ---------------------------------------------------------------------------------------------


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
        x = next((row[k] for k in ("step", "global_step", "epoch") if _is_num(row.get(k))), i)
        for key in LOSS_STYLES:
            if _is_num(row.get(key)) and math.isfinite(row[key]):
                series.setdefault(key, []).append((float(x), float(row[key])))
    return series, summary, bad


def training_runs(run_dir: Path) -> list[dict[str, Any]]:
    train_root = run_dir / "train"
    runs = []
    for path in sorted(train_root.rglob("trainer_log.jsonl")) if train_root.is_dir() else []:
        series, summary, bad = read_trainer_log(path)
        runs.append({
            "name": path.parent.relative_to(train_root).as_posix() or path.parent.name,
            "source": path.relative_to(run_dir).as_posix(),
            "series": {k: {"n": len(v), "first": _round(v[0][1]), "last": _round(v[-1][1]),
                           "min": _round(min(y for _, y in v)), "last_step": _round(v[-1][0])}
                       for k, v in series.items()},
            "train_runtime_s": _round(summary.get("train_runtime")),
            "train_loss": _round(summary.get("train_loss")),
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
        wall = next((s[k] for k in ("wall_s", "wall_time_s", "seconds", "wall_time") if _is_num(s.get(k))), None)
        stage_rows.append({"name": str(name), "status": s.get("status"), "wall_s": _round(wall)})
    return {
        "source": "manifest.json",
        "git_commit": m.get("git_commit") or git.get("commit") or m.get("commit"),
        "git_dirty": m.get("git_dirty", git.get("dirty")),
        "start_time": next((m[k] for k in ("start_time", "started", "started_at", "created") if m.get(k)), None),
        "command": " ".join(map(str, command)) if isinstance(command, list) else command,
        "seed": m.get("seed"),
        "stages": stage_rows,
    }


# ---------------------------------------------------------------------------------------------
# results.json
# ---------------------------------------------------------------------------------------------


def kd_warnings(run_dir: Path) -> list[str]:
    """A KD student that could not distil (tokenizers differ) trained with CE on the teacher's CoT: say so."""
    out = []
    for meta_file in sorted(run_dir.glob("cot*/cot_meta.json")):
        meta = _read_json_object(meta_file)
        if meta.get("kd") is False:
            out.append(f"{meta_file.relative_to(run_dir)}: no logit cache ({meta.get('fallback_reason')}); "
                       "the KD student was trained with CE on the teacher's CoT only")
    return out


def collect(run_dir: Path, headline: str = "auto", n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Everything the report shows, as numbers (percent, 0–100). Reads only; writes nothing."""
    entries = discover(run_dir)
    scores = Scores()
    incomplete, missing, warnings = status_lists(entries)
    warnings += kd_warnings(run_dir)
    return {
        "run_dir": str(run_dir),
        "headline": headline,
        "confidence": CONFIDENCE,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "provenance": provenance(run_dir),
        "sources": {e.src: {"metrics": f"{e.rel}/metrics.json",
                            "predictions": f"{e.rel}/predictions.jsonl" if e.has_predictions else None,
                            "variant": e.variant, "recipe": e.recipe, "mode": e.mode,
                            "benchmark": e.metrics["benchmark"],
                            "n": int(e.metrics["n"]), "model": e.meta.get("model"), "adapter": e.meta.get("adapter")}
                    for e in entries if e.metrics is not None},
        "tables": {
            "arms": arm_rows(entries, headline, scores, n_bootstrap, seed),
            "headline": headline_rows(entries, headline, scores, n_bootstrap, seed),
            "overall": overall_rows(entries, scores, n_bootstrap, seed),
            "by_question_type": group_rows(entries, "by_question_type", headline),
            "by_change_type": group_rows(entries, "by_change_type", headline),
            "cot_vs_direct": cot_rows(entries, headline, scores, n_bootstrap, seed),
        },
        "training": training_runs(run_dir),
        "incomplete": incomplete,
        "missing": missing,
        "warnings": warnings,
        "plots": {},
    }


# ---------------------------------------------------------------------------------------------
# Plots (drawn from results.json and the trainer logs; Agg canvas, no display, no pyplot state)
# ---------------------------------------------------------------------------------------------


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_loss_curves(run_dir: Path, results: dict[str, Any], path: Path) -> str | None:
    """One colour per training run; loss solid, ce_loss / kd_loss dashed, eval_loss dotted. Reason if skipped."""
    logs = [(r["name"], read_trainer_log(run_dir / r["source"])[0]) for r in results["training"]]
    logs = [(name, s) for name, s in logs if s]
    if not logs:
        return "no train/*/trainer_log.jsonl with loss values"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    for i, (name, series) in enumerate(logs):
        for key, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, LOSS_STYLES[key], color=f"C{i % 10}", label=f"{name} {key}",
                    marker="o" if len(points) == 1 or key == "eval_loss" else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return None


def plot_normal_vs_blind(results: dict[str, Any], path: Path) -> str | None:
    rows = [r for r in results["tables"]["headline"]
            if any(r[m] and r[m]["value"] is not None for m in MODES)]
    if not rows:
        return "no evaluation with metrics.json"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.5))
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.38
    for j, (mode, colour) in enumerate(zip(MODES, ("C0", "C7"))):
        vals, err = [], [[], []]
        for r in rows:
            c = r[mode]
            v = c["value"] if c and c["value"] is not None else math.nan
            lo, hi = (c["ci"] if c and c["ci"] and None not in c["ci"] else (v, v))
            vals.append(v)
            err[0].append(max(0.0, v - lo) if not math.isnan(v) else 0.0)
            err[1].append(max(0.0, hi - v) if not math.isnan(v) else 0.0)
        ax.bar(x + (j - 0.5) * width, vals, width, yerr=err, capsize=3, color=colour, label=mode)
    ax.set_xticks(x)
    ax.set_xticklabels([_row_label(r, results) for r in rows], rotation=20, ha="right", fontsize=8)
    metrics = sorted({r["metric"] for r in rows})
    ax.set_ylabel(f"{' / '.join(metrics)} (%)")
    ax.set_title(f"normal vs blind ({int(100 * results['confidence'])}% CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    _save(fig, path)
    return None


# ---------------------------------------------------------------------------------------------
# report.md (rendered from results.json only)
# ---------------------------------------------------------------------------------------------


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def _with_ci(c: dict[str, Any] | None, key: str = "value") -> str:
    if not c or c.get(key) is None:
        return "-"
    ci = c.get("ci")
    return f"{c[key]:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci and None not in ci else "")


def md_table(headers: list[str], rows: list[list[str]], left: int = 1, left_tail: int = 1) -> list[str]:
    """A markdown table padded to fixed column widths (readable as plain text). Text columns (the first
    ``left`` and the last ``left_tail``) are left-aligned, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    is_left = [i < left or i >= len(headers) - left_tail for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(cells, widths, is_left)) + " |"

    sep = "|" + "|".join(("-" * (w + 2)) if lft else ("-" * (w + 1) + ":") for w, lft in zip(widths, is_left)) + "|"
    return [line(headers), sep, *(line(r) for r in rows)]


def _multi(results: dict[str, Any], key: str) -> bool:
    return len({r[key] for r in results["tables"]["overall"]}) > 1


def _row_label(r: dict[str, Any], results: dict[str, Any]) -> str:
    parts = [r["variant"]]
    if _multi(results, "recipe") and r["recipe"] != NO_RECIPE:
        parts.append(r["recipe"])
    if _multi(results, "benchmark"):
        parts.append(r["benchmark"])
    return " / ".join(parts)


def _label_headers(results: dict[str, Any]) -> list[str]:
    """variant, plus recipe / benchmark columns only when the run has several."""
    return ["variant"] + [k for k in ("recipe", "benchmark") if _multi(results, k)]


def _label_cells(r: dict[str, Any], results: dict[str, Any]) -> list[str]:
    return [r[k] for k in _label_headers(results)]


def headline_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for r in results["tables"]["headline"]:
        gap = r["gap"] or {}
        rows.append(_label_cells(r, results) + [
            r["metric"],
            _with_ci(r["normal"]), str(r["normal"]["n"]) if r["normal"] else "-",
            _with_ci(r["blind"]), str(r["blind"]["n"]) if r["blind"] else "-",
            _num(gap.get("value")) + (f" [{gap['ci'][0]:.1f}, {gap['ci'][1]:.1f}]" if gap.get("ci") else ""),
            str(gap["n_paired"]) if gap else "-",
            ", ".join(c["src"] for c in (r["normal"], r["blind"]) if c),
        ])
    labels = _label_headers(results)
    headers = labels + ["metric", "normal", "n", "blind", "n", "gap (normal - blind)", "n paired", "src"]
    return md_table(headers, rows, left=len(labels) + 1)


def arms_table(results: dict[str, Any]) -> list[str]:
    rows_in = results["tables"]["arms"]
    others = list(dict.fromkeys(k for r in rows_in for k in r["other_metrics"]))
    rows = []
    for r in rows_in:
        gap = r["gap"] or {}
        rows.append([r["arm"], r["variant"], r["recipe"], r["metric"], _with_ci(r["normal"]),
                     str(r["normal"]["n"]) if r["normal"] else "-", _with_ci(r["blind"]),
                     _num(gap.get("value")) + (f" [{gap['ci'][0]:.1f}, {gap['ci'][1]:.1f}]" if gap.get("ci") else ""),
                     _num(r[REASONING]["normal"]), *(_num(r["other_metrics"].get(k)) for k in others),
                     ", ".join(c["src"] for c in (r["normal"], r["blind"]) if c)])
    headers = ["arm", "model", "recipe", "metric", "normal", "n", "blind", "gap (normal - blind)", "reasoning %",
               *others, "src"]
    return ["## Arms", ""] + md_table(headers, rows, left=4) + [
        "", "reasoning %: share of normal-mode outputs with a non-empty reasoning part (a <REASONING> tag's text, "
        f"else the outputs of the phases before the answer); {', '.join(others) or 'other metrics'}: normal mode.", ""]


def render_markdown(results: dict[str, Any]) -> str:
    conf = int(round(100 * results["confidence"]))
    t = results["tables"]
    out = [f"# Report: {Path(results['run_dir']).name}", ""]
    out += [f"Values in percent. `[a, b]` = {conf}% bootstrap CI; `n` = samples per cell; `src` = the metrics.json "
            "each number comes from (list at the end). Generated by `python -m vlm report` from `results.json`.", ""]

    prov = results.get("provenance")
    if prov:
        out += ["## Provenance", ""]
        if prov.get("error"):
            out += [f"- manifest.json: {prov['error']}"]
        else:
            commit = prov.get("git_commit")
            out += [f"- git commit: {commit or '?'}" + (" (dirty)" if prov.get("git_dirty") else "")]
            out += [f"- started: {prov['start_time']}"] if prov.get("start_time") else []
            out += [f"- command: `{prov['command']}`"] if prov.get("command") else []
            out += [f"- seed: {prov['seed']}"] if prov.get("seed") is not None else []
            if prov.get("stages"):
                stages = (" ".join(x for x in (s["name"], s["status"], f"{_num(s['wall_s'])} s") if x)
                          for s in prov["stages"])
                out += ["- stages: " + ", ".join(stages)]
        out.append("")

    if t.get("arms"):
        out += arms_table(results)
    out += ["## Headline: normal vs blind", ""]
    if t["headline"]:
        out += headline_table(results)
        out += ["", f"gap CI: paired bootstrap ({results['n_bootstrap']} resamples, seed {results['seed']}) over the "
                    "ids evaluated in both modes, per-sample scores recomputed from the predictions.jsonl next to "
                    "each metrics.json."]
        odd = [r for r in t["headline"] if r["gap"] and r["gap"]["n_paired"] < max(r["normal"]["n"], r["blind"]["n"])]
        for r in odd:
            out.append(f"Note: {_row_label(r, results)}: only {r['gap']['n_paired']} ids in both modes; the gap is the "
                       f"difference of the full-set values, its CI (paired mean {_num(r['gap']['mean'])}) is over "
                       "the shared ids.")
        for r in t["headline"]:
            if r["gap"] and r["gap"].get("note"):
                out.append(f"Note: {_row_label(r, results)}: no gap CI ({r['gap']['note']}).")
    else:
        out.append("No evaluation with a metrics.json in eval/.")
    out.append("")

    if t["overall"]:
        metrics = list(dict.fromkeys(m for r in t["overall"] for m in r["metrics"]))
        out += ["## All overall metrics", ""]
        rows = [_label_cells(r, results) + [r["mode"], str(r["n"])]
                + [_with_ci(r["metrics"].get(m)) for m in metrics] + [r["src"]] for r in t["overall"]]
        labels = _label_headers(results) + ["mode"]
        out += md_table(labels + ["n"] + metrics + ["src"], rows, left=len(labels)) + [""]

    for key, title in (("by_question_type", "Per question type"), ("by_change_type", "Per change type")):
        if not t[key]:
            continue
        names = list(dict.fromkeys(g for r in t[key] for g in r["groups"]))
        # n in the header when every cell agrees (the usual case: one test split), else in each cell
        ns = {g: {c["n"] for r in t[key] for c in r["groups"].get(g, {}).values() if c} for g in names}
        metric = "/".join(sorted({r["metric"] for r in t[key]}))
        any_blind = any(c["blind"] for r in t[key] for c in r["groups"].values())
        out += [f"## {title} ({metric}, normal{' / blind' if any_blind else ''})", ""]
        group_headers = [f"{g} (n={next(iter(ns[g]))})" if len(ns[g]) == 1 else g for g in names]
        headers = _label_headers(results) + group_headers + ["src"]
        rows = []
        for r in t[key]:
            cells = []
            for g in names:
                parts = []
                for m in MODES:
                    c = r["groups"].get(g, {}).get(m)
                    if m == "blind" and not any_blind:
                        continue
                    parts.append("-" if not c else _num(c["value"]) + ("" if len(ns[g]) == 1 else f" (n={c['n']})"))
                cells.append(" / ".join(parts))
            rows.append(_label_cells(r, results) + cells + [", ".join(r["src"].values())])
        out += md_table(headers, rows, left=len(_label_headers(results))) + [""]

    if t["cot_vs_direct"]:
        out += ["## Reasoning recipe vs direct (paired on shared ids)", ""]
        rows = [[r["variant"], r["recipe"], r["mode"], r["metric"], _with_ci(r["direct"]), _with_ci(r["cot"]),
                 _with_ci(r["diff"]), str(r["diff"]["n_paired"]),
                 *(_num(r.get(REASONING, {}).get(k)) for k in ("direct", "cot")), ", ".join(r["diff"]["src"])]
                for r in t["cot_vs_direct"]]
        headers = ["variant", "recipe", "mode", "metric", "direct", "recipe", "recipe - direct", "n paired",
                   "reasoning % direct", "reasoning % recipe", "src"]
        out += md_table(headers, rows, left=4) + [""]
        out += ["reasoning %: share of outputs with a non-empty reasoning part (a <REASONING> tag's text, else "
                "the outputs of the phases before the answer).", ""]

    out += ["## Training", ""]
    if results["training"]:
        rows = []
        for r in results["training"]:
            s = r["series"].get("loss", {})
            extra = ", ".join(k for k in r["series"] if k != "loss")
            losses = [_fmt4(s.get(k)) for k in ("first", "last", "min", "last_step")]
            rows.append([r["name"], str(s.get("n", 0)), *losses, _num(r["train_runtime_s"]), extra or "-", r["source"]])
        headers = ["run", "points", "first loss", "last loss", "min loss", "last step", "runtime s", "also logged",
                   "source"]
        out += md_table(headers, rows, left_tail=2) + [""]
    else:
        out += ["No train/*/trainer_log.jsonl in this run.", ""]

    out += ["## Plots", ""]
    for name, info in results["plots"].items():
        out.append(f"![{name}]({info['file']})" if info.get("file") else f"- {name}.png skipped: {info['skipped']}")
    out.append("")

    if results["incomplete"] or results["missing"] or results["warnings"]:
        out += ["## Incomplete and missing", ""]
        out += [f"- incomplete: {i['dir']}: {i['reason']}" for i in results["incomplete"]]
        out += [f"- missing: {m['variant']}" + (f"/{m['recipe']}/{m['mode']}" if m["mode"] else "") + f": {m['reason']}"
                for m in results["missing"]]
        out += [f"- warning: {w}" for w in results["warnings"]]
        out.append("")

    if results["sources"]:
        out += ["## Sources", ""]
        for k, s in results["sources"].items():
            about = [f"n={s['n']}"] + [f"{x} {s[x]}" for x in ("model", "adapter") if s.get(x)]
            out.append(f"- {k}: `{s['metrics']}` ({', '.join(about)})")
        out.append("")
    return "\n".join(out)


def _fmt4(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


# ---------------------------------------------------------------------------------------------
# Stage entry point
# ---------------------------------------------------------------------------------------------


def main(cfg: Config) -> int:
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise DataError.single(run_dir, "-", "run directory not found")
    if cfg.n_bootstrap < 0:
        raise DataError.single(run_dir, "--n_bootstrap", "must be >= 0")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / "report"
    results = collect(run_dir, cfg.headline, cfg.n_bootstrap, cfg.seed)
    for name, draw in (("loss_curves", lambda p: plot_loss_curves(run_dir, results, p)),
                       ("normal_vs_blind", lambda p: plot_normal_vs_blind(results, p))):
        skipped = draw(out_dir / f"{name}.png")
        if skipped:
            (out_dir / f"{name}.png").unlink(missing_ok=True)  # a plot from an earlier report would be stale
        results["plots"][name] = {"file": None if skipped else f"{name}.png", "skipped": skipped}
    results = json_safe(results)
    text = json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_text(out_dir / "results.json", text)
    atomic_write_text(out_dir / "report.md", render_markdown(results))
    if results["tables"]["headline"]:
        print("\n".join(headline_table(results)))
    else:
        print("no evaluation with a metrics.json in eval/")
    for item in results["incomplete"]:
        print(f"incomplete: {item['dir']}: {item['reason']}")
    print(f"\nwrote {out_dir / 'report.md'}")
    return 0
