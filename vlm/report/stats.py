"""The report's numbers: table cells with CIs, per-sample scores, paired bootstrap differences, normal − blind gaps.

Values and CIs come from each metrics.json. Differences between two evaluations get a PAIRED bootstrap CI over
the ids present in both: per-sample scores are recomputed from the two predictions.jsonl with
``vlm.metrics.score_records`` (no SBERT: pure Python) and the same resampled ids are used for both sides.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from vlm import metrics
from vlm.metrics import bootstrap_ci, load_predictions, score_records
from vlm.report.collect import MODES, Entry, rounded

CONFIDENCE = 0.95
MIN_SPAN = 1e-3  # percentage points: a low → high gap smaller than this is ~0, its "gap recovered" n/a

# the benchmark's own headline metric (em for hypo3d, em@1 for scanqa, …): metrics.headline(benchmark) once
# vlm.metrics has it, its HEADLINE dict until then
_metrics_headline = getattr(metrics, "headline", None) or metrics.HEADLINE.get


def pct(x: float | None) -> float | None:
    """A fraction as a percentage with 4 decimals; None for a missing or NaN value."""
    return None if x is None or math.isnan(x) else round(100.0 * float(x), 4)


def headline_metric(benchmark: str, overall: dict[str, Any], requested: str) -> str:
    """The requested metric, else the benchmark's default (em / em@1), else the first metric present."""
    if requested != "auto" and requested in overall:
        return requested
    try:
        default = _metrics_headline(benchmark)
    except (KeyError, ValueError):
        default = None  # a benchmark this checkout does not know: its metrics.json still reports
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
    ci = None if n_bootstrap <= 0 else [pct(lo), pct(hi)]
    return {"n_paired": len(ids), "mean": pct(diff.mean()), "ci": ci}


def cell(e: Entry | None, metric: str, scores: Scores, n_bootstrap: int, seed: int) -> dict[str, Any] | None:
    """One value of a table: the metrics.json value and CI (CI recomputed from predictions when absent)."""
    if e is None or e.metrics is None:
        return None
    value = e.metrics["overall"].get(metric)
    ci = e.metrics.get("ci", {}).get(metric)
    ci_from = "metrics.json" if ci else None
    if not ci and n_bootstrap > 0 and (s := scores.get(e, metric)):
        lo, hi = bootstrap_ci(list(s.values()), n_bootstrap, CONFIDENCE, seed)
        ci, ci_from = [pct(lo), pct(hi)], "predictions.jsonl"
    return {"value": rounded(value), "ci": [rounded(x) for x in ci] if ci else None, "ci_from": ci_from,
            "n": int(e.metrics["n"]), "src": e.src}


def compare_cells(a: Entry | None, b: Entry | None, metric: str, scores: Scores, n_bootstrap: int,
                  seed: int) -> tuple:
    """(a cell, b cell, a − b): the difference of the full-set values, with the paired mean and CI over the ids
    both evaluated; the difference is None unless both cells exist."""
    ca, cb = (cell(x, metric, scores, n_bootstrap, seed) for x in (a, b))
    if not (ca and cb):
        return ca, cb, None
    paired = paired_difference(scores.get(a, metric), scores.get(b, metric), n_bootstrap, seed)
    value = rounded(ca["value"] - cb["value"]) if ca["value"] is not None and cb["value"] is not None else None
    return ca, cb, {"value": value, **paired, "src": [ca["src"], cb["src"]]}


def normal_blind_gap(modes: dict[str, Entry], metric: str, scores: Scores, n_bootstrap: int, seed: int) -> tuple:
    """(normal cell, blind cell, gap) of one evaluation pair; the gap (normal - blind) has a paired CI."""
    return compare_cells(*(modes.get(m) for m in MODES), metric, scores, n_bootstrap, seed)


def gap_recovered(value: float | None, low: float | None, high: float | None) -> dict[str, Any]:
    """The share of the low → high gap a value recovers, (value − low) / (high − low), in percent (low 0, high
    100). n/a (value None, with a note) when a value is missing or high − low is within MIN_SPAN of 0."""
    out: dict[str, Any] = {"value": None, "low": low, "high": high, "note": None}
    if value is None or low is None or high is None:
        return {**out, "note": "a value is missing"}
    span = high - low
    if abs(span) < MIN_SPAN:
        return {**out, "note": f"high - low = {span:.4g}, ~0: nothing to recover"}
    note = "high below low: the share is of a negative gap" if span < 0 else None
    return {**out, "value": rounded(100.0 * (value - low) / span), "note": note}
