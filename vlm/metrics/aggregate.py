"""Benchmark-agnostic aggregation: prediction records (``prediction_record`` writes them, ``load_predictions``
reads and checks them), per-sample scores from the record's benchmark (``score_records``), and
``compute_metrics``: means in percent, percentile-bootstrap CIs, corpus caption metrics and the benchmark's
breakdowns; ``format_table`` / ``write_metrics`` print and write them.

Every benchmark, when every record carries ``phases`` (the raw outputs of the recipe's phases, written by
evaluate): ``has_reasoning`` = 1 if ``reasoning_part(phases)`` is non-empty. Records without phases (e.g.
the answer-prior baseline) get no such metric.

Per-sample values are fractions in [0, 1], NaN where a metric does not apply to a sample (A-OKVQA ``da`` of a
difficult question); ``compute_metrics`` reports percentages (0–100), as the official scripts print them,
with percentile-bootstrap CIs for the per-sample metrics over the samples where they apply.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from vlm.benchmarks import BENCHMARKS, Benchmark
from vlm.data.errors import DataError, Problems
from vlm.data.sample import Sample
from vlm.io import atomic_write_text, json_safe
from vlm.metrics.text import (
    DEFAULT_SBERT_MODEL,
    METEOR_ABSENT_NOTE,
    caption_scores,
    meteor_scorer,
    ptb_tokenize_batch,
    resolve_sbert_model,
)

# ---------------------------------------------------------------------------------------------
# Prediction records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One line of a predictions JSONL (other keys in the line are ignored)."""

    id: str
    benchmark: str
    prediction: str
    references: list[str]  # non-empty; first is canonical
    question_type: list[str] = field(default_factory=list)
    change_type: str | None = None
    # The benchmark's ``record_keys`` (A-OKVQA: choices, correct_choice_idx, direct_answers,
    # difficult_direct_answer), as in Sample.context; {} for benchmarks without any.
    context: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] | None = None  # [{"name", "output"}, …] as evaluate writes them; None: not recorded

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Prediction":
        keys = dict.fromkeys(k for b in BENCHMARKS.values() for k in b.record_keys)  # kept even under --benchmark
        phases = d.get("phases")
        return cls(
            id=str(d["id"]),
            benchmark=str(d["benchmark"]),
            prediction=d["prediction"],
            references=list(d["references"]),
            question_type=list(d.get("question_type") or []),
            change_type=d.get("change_type"),
            context={k: d[k] for k in keys if k in d},
            phases=None if phases is None else [dict(p) for p in phases],
        )

    def as_sample(self) -> Sample:
        """A text-only Sample with this record's answers and context, for the benchmarks' metric helpers."""
        return Sample(id=self.id, benchmark=self.benchmark, scene_id="", image=None, question="",
                      answers=list(self.references), question_type=list(self.question_type), context=dict(self.context))


def prediction_record(sample, prediction: str, **extra) -> dict:
    """One line of predictions.jsonl (the contract between evaluate-like stages and metrics).

    Records also carry the benchmark's ``record_keys`` from the Sample's context (A-OKVQA: choices,
    correct_choice_idx, direct_answers and difficult_direct_answer), so the JSONL alone is enough to score it.
    """
    bench = BENCHMARKS.get(sample.benchmark)
    return {
        "id": sample.id,
        "benchmark": sample.benchmark,
        "scene_id": sample.scene_id,
        "question": sample.question,
        "question_type": sample.question_type,
        "change_type": sample.context.get("change_type"),
        "prediction": prediction,
        "references": sample.answers,
        **{k: sample.context.get(k) for k in (bench.record_keys if bench else ())},
        **extra,
    }


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_record(obj: Any, where: str, problems: Problems) -> Prediction | None:
    if not isinstance(obj, dict):
        problems.add(where, f"expected a JSON object, got {_type_name(obj)}")
        return None
    ok = True

    def bad(key: str, message: str) -> None:
        nonlocal ok
        problems.add(f"{where}: key '{key}'", message)
        ok = False

    for key in ("id", "benchmark", "prediction"):
        if key not in obj:
            bad(key, "missing")
        elif not isinstance(obj[key], str):
            bad(key, f"expected a string, got {_type_name(obj[key])}")
        elif key != "prediction" and not obj[key].strip():
            bad(key, "empty string")
    refs = obj.get("references")
    if "references" not in obj:
        bad("references", "missing")
    elif not isinstance(refs, list):
        bad("references", f"expected a non-empty list of strings, got {_type_name(refs)}")
    elif not refs:
        bad("references", "empty list (need at least one reference answer)")
    else:
        for i, r in enumerate(refs):
            if not isinstance(r, str):
                bad("references", f"item {i}: expected a string, got {_type_name(r)}")
    qtypes = obj.get("question_type")
    if "question_type" in obj and (not isinstance(qtypes, list) or not all(isinstance(q, str) and q.strip() for q in qtypes)):
        bad("question_type", f"expected a list of non-empty strings, got {json.dumps(qtypes)[:60]}")
    ctype = obj.get("change_type")
    if ctype is not None and not isinstance(ctype, str):
        bad("change_type", f"expected a string or null, got {_type_name(ctype)}")
    bench = BENCHMARKS.get(obj.get("benchmark"))
    if bench is not None:
        bench.check_record(obj, bad)
    if "phases" in obj:
        _check_phases(obj["phases"], bad)
    return Prediction.from_dict(obj) if ok else None


def _check_phases(phases: Any, bad: Callable[[str, str], None]) -> None:
    if not isinstance(phases, list):
        bad("phases", f"expected a list of {{name, output}} objects, got {_type_name(phases)}")
        return
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict):
            bad("phases", f"item {i}: expected an object with 'name' and 'output', got {_type_name(phase)}")
        elif not isinstance(phase.get("output"), str):
            bad("phases", f"item {i}: 'output': expected a string, got {_type_name(phase.get('output'))}")
        elif not isinstance(phase.get("name"), str):
            bad("phases", f"item {i}: 'name': expected a string, got {_type_name(phase.get('name'))}")


def load_predictions(path: str | Path) -> list[Prediction]:
    """Read and validate a predictions JSONL; every problem of the file is reported in one DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError.single(path, "-", "file not found")
    problems = Problems(path)
    records: list[Prediction] = []
    first_line: dict[str, int] = {}
    try:
        # split("\n"), not splitlines(): U+2028 and friends may legally sit inside a JSON string
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise DataError.single(path, f"byte {e.start}", "not UTF-8 text") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) carry no record
        where = f"line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.add(where, f"invalid JSON: {e.msg} (column {e.colno})")
            continue
        rec = _check_record(obj, where, problems)
        rid = obj.get("id") if isinstance(obj, dict) else None
        if isinstance(rid, str):  # checked even on an otherwise bad line: one pass shows every problem
            if rid in first_line:
                problems.add(f"{where}: key 'id'", f"duplicate id '{rid}' (first on line {first_line[rid]})")
                continue
            first_line[rid] = lineno
        if rec is not None:
            records.append(rec)
    if not records and not problems:
        problems.add("-", "no prediction records")
    problems.raise_if_any()
    return records


def _as_predictions(records: Iterable[Prediction | Mapping[str, Any]]) -> list[Prediction]:
    return [r if isinstance(r, Prediction) else Prediction.from_dict(r) for r in records]


def infer_benchmark(records: Sequence[Prediction | Mapping[str, Any]]) -> str:
    """The one benchmark all records name; ValueError if they mix benchmarks or there are none."""
    counts = Counter(r.benchmark if isinstance(r, Prediction) else r["benchmark"] for r in records)
    if not counts:
        raise ValueError("no prediction records")
    if len(counts) > 1:
        mix = ", ".join(f"{b} ({n})" for b, n in counts.most_common())
        raise ValueError(f"records mix benchmarks: {mix}; split the file or pass --benchmark")
    return next(iter(counts))


# ---------------------------------------------------------------------------------------------
# Reasoning
# ---------------------------------------------------------------------------------------------


def reasoning_part(phases: Sequence[Mapping[str, Any]]) -> str:
    """The reasoning a record's phases hold, stripped ('' when none).

    With a ``<REASONING>…</REASONING>`` tag in any phase output: the tags' contents (an unclosed
    ``<REASONING>`` counts up to the end of its output), joined by newlines — an empty tag gives ''.
    Without any such tag: the outputs of all phases but the last (the answer phase), plus the last output's
    text before its final line-start "Answer:" (a rationale written before the answer), joined by newlines.
    """
    from vlm.recipes import split_answer_line, tag_texts

    outputs = [str(p.get("output") or "") for p in phases]
    tagged = [text for out in outputs for text in tag_texts(out, "REASONING")]
    if tagged:
        parts = tagged
    else:
        split = split_answer_line(outputs[-1]) if outputs else None
        parts = [out.strip() for out in outputs[:-1]] + ([split[0].strip()] if split else [])
    return "\n".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; the same seed gives the same interval. (nan, nan) if empty."""
    x = np.asarray(values, dtype=float)
    if x.size == 0 or n_resamples <= 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // x.size)  # bound memory of the (resamples × n) index matrix
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def score_records(
    records: Sequence[Prediction | Mapping[str, Any]],
    benchmark: str,
    *,
    sbert_model: str | None = DEFAULT_SBERT_MODEL,
    use_sbert: bool = True,
    normalization: str = "",
) -> list[dict[str, float]]:
    """Per-sample metric values (fractions), in record order: the input to every aggregate.

    Every row has the same keys; a value is NaN where the metric does not apply (A-OKVQA ``da`` of a
    difficult question). ``has_reasoning`` is there only when every record has ``phases``. ``normalization``:
    one of the benchmark's answer normalisations ('': its official one; ignored by benchmarks without any).
    """
    preds = _as_predictions(records)
    bench = _benchmark(benchmark)
    normalization = normalization or _official_normalization(bench)
    model = (sbert_model or DEFAULT_SBERT_MODEL) if use_sbert else None  # both name the packaged MiniLM
    rows = bench.score(preds, sbert_model=model, normalization=normalization)
    if use_sbert:
        for row, s in zip(rows, bench.sbert_scores(preds, model, normalization=normalization)):
            row["sbert"] = s
    if preds and all(p.phases is not None for p in preds):
        for row, p in zip(rows, preds):
            row["has_reasoning"] = float(bool(reasoning_part(p.phases)))
    return rows


def _benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"no metrics defined for benchmark '{name}' (known: {', '.join(BENCHMARKS)})")
    return BENCHMARKS[name]


def _official_normalization(bench: Benchmark) -> str:
    return bench.normalizations[0] if bench.normalizations else ""


def _present_metrics(rows: Sequence[dict[str, float]], bench: Benchmark) -> list[str]:
    """The benchmark's per-sample metrics that the rows carry; every row must carry the same ones."""
    names = [m for m in bench.per_sample_metrics if any(m in r for r in rows)]
    partial = [m for m in names if not all(m in r for r in rows)]
    if partial:
        raise ValueError(f"per-sample metric(s) {', '.join(partial)} missing from some rows: every row must have "
                         "every metric (NaN where it does not apply)")
    return names


def _applicable(rows: Sequence[dict[str, float]], metric: str) -> np.ndarray:
    """The metric's values over the rows where it applies (NaN rows left out)."""
    x = np.asarray([r[metric] for r in rows], dtype=float)
    return x[~np.isnan(x)]


def _pct(x: float) -> float:
    return round(100.0 * x, 4)


def _mean_pct(rows: Sequence[dict[str, float]], metric: str) -> float:
    x = _applicable(rows, metric)
    return _pct(float(x.mean())) if x.size else math.nan


@dataclass
class _Captions:
    """Every record's PTB-tokenised prediction and references (one tokenizer call per metrics run) and the
    METEOR scorer shared by all groups (None without Java)."""

    predictions: list[str]
    references: list[list[str]]
    tokenizer: str
    meteor: Any | None


def _tokenize_captions(preds: Sequence[Prediction]) -> _Captions:
    flat, tokenizer = ptb_tokenize_batch([*(p.prediction for p in preds), *(r for p in preds for r in p.references)])
    rest = iter(flat[len(preds):])
    references = [[next(rest) for _ in p.references] for p in preds]
    return _Captions(flat[: len(preds)], references, tokenizer, meteor_scorer())


def _group_summary(
    bench: Benchmark, idx: list[int], preds: list[Prediction], rows: list[dict[str, float]], metrics: Sequence[str],
    captions: _Captions | None = None,
) -> dict[str, Any]:
    sub = [rows[i] for i in idx]
    out: dict[str, Any] = {"n": len(idx)}
    out.update({f"n_{m}": int(_applicable(sub, m).size) for m in bench.counted if m in metrics})
    out.update({m: _mean_pct(sub, m) for m in metrics})
    if captions is not None:  # corpus metrics recomputed on the group, as score.py --detailed does
        caps = caption_scores([captions.predictions[i] for i in idx], [captions.references[i] for i in idx],
                              tokenized=True, meteor=captions.meteor or False)
        out.update({k: _pct(v) for k, v in caps.items()})
        out.setdefault("meteor", None)  # no Java: METEOR is absent (null), never 0
    return out


def compute_metrics(
    records: Sequence[Prediction | Mapping[str, Any]],
    benchmark: str | None = None,
    sbert_model: str | None = DEFAULT_SBERT_MODEL,
    use_sbert: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    normalization: str = "",
    confidence: float = 0.95,
) -> dict[str, Any]:
    """All metrics of one benchmark as a JSON-serialisable dict, values in percent (0–100).

    ``benchmark`` overrides the records' own field; without it the records must agree on one.
    A metric that applies to some samples only (A-OKVQA ``da``) is averaged and bootstrapped over those,
    and their number is reported as ``n_<metric>`` (``n_da``) at the top level and in every group. Breakdowns
    (``by_question_type``, …) are the benchmark's ``groups``.
    """
    preds = _as_predictions(records)
    benchmark = benchmark or infer_benchmark(preds)
    if not preds:
        raise ValueError("no prediction records")
    bench = _benchmark(benchmark)
    normalization = normalization or _official_normalization(bench)
    rows = score_records(preds, benchmark, sbert_model=sbert_model, use_sbert=use_sbert, normalization=normalization)
    metrics = _present_metrics(rows, bench)
    # One tokenizer call for every string and one METEOR process (Java only) for every group.
    captions = _tokenize_captions(preds) if bench.corpus_captions else None

    overall = _group_summary(bench, list(range(len(preds))), preds, rows, metrics, captions)
    overall.pop("n")
    counts = {k: overall.pop(k) for k in [k for k in overall if k.startswith("n_")]}  # e.g. n_da
    result: dict[str, Any] = {
        "benchmark": benchmark,
        "n": len(preds),
        **counts,
        "overall": overall,
        "ci": {},
        "confidence": confidence,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "sbert_model": resolve_sbert_model(sbert_model) if use_sbert else None,
    }
    if captions is not None:
        result["tokenizer"] = captions.tokenizer  # ptb-java (the official pipeline) | ptb-python-fallback
        if result["overall"].get("meteor") is None:
            result["notes"] = [METEOR_ABSENT_NOTE]
    if n_bootstrap > 0:
        for m in metrics:
            values = _applicable(rows, m)  # A-OKVQA: difficult questions are out of DA's CI as of its mean
            if values.size:
                low, high = bootstrap_ci(values, n_bootstrap, confidence, seed)
                result["ci"][m] = [_pct(low), _pct(high)]

    def summarise(groups: Mapping[str, Any]) -> dict[str, Any]:
        return {k: summarise(g) if isinstance(g, Mapping) else _group_summary(bench, g, preds, rows, metrics, captions)
                for k, g in groups.items()}

    if bench.normalizations:
        result["normalization"] = normalization
    for key, groups in bench.groups(preds).items():
        result[key] = summarise(groups)
    return result


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.2f}"


def format_table(result: Mapping[str, Any]) -> str:
    """Readable text: overall with CIs, then one table per breakdown (``by_question_type`` → "question type",
    ``by_change_and_question_type`` → "change / question type"). NaN / null values (a metric with no applicable
    sample) print as '-'."""
    overall, ci = result["overall"], result.get("ci", {})
    metrics = list(overall)
    title = f"{result['benchmark']}: {result['n']} predictions"
    counted = [f"{m} over {result[f'n_{m}']}" for m in metrics if f"n_{m}" in result]
    if counted:
        title += f"  ({', '.join(counted)})"
    if "normalization" in result:
        title += f"  (normalization: {result['normalization']})"
    name_width = max(12, *(len(m) + 2 for m in metrics)) if metrics else 12
    lines = [title, "", f"  {'metric':<{name_width}}{'value':>8}   95% CI"]
    for m in metrics:
        bounds = ci.get(m)
        span = f"[{_fmt(bounds[0]).strip()}, {_fmt(bounds[1]).strip()}]" if bounds else ""
        lines.append(f"  {m:<{name_width}}{_fmt(overall[m]):>8}   {span}")
    widths = [max(12, len(m) + 2) for m in metrics]

    def table(name: str, groups: Mapping[str, Mapping[str, Any]]) -> None:
        if not groups:
            return
        width = max(len(name), *(len(k) for k in groups)) + 2
        lines.extend(["", f"  {name:<{width}}{'n':>6}" + "".join(f"{m:>{w}}" for m, w in zip(metrics, widths))])
        for key, g in groups.items():
            lines.append(f"  {key:<{width}}{g['n']:>6}" + "".join(f"{_fmt(g.get(m)):>{w}}" for m, w in zip(metrics, widths)))

    for key, groups in result.items():
        if not key.startswith("by_"):
            continue
        name = key[len("by_"):].replace("_and_", " / ").replace("_", " ")
        nested = bool(groups) and all(isinstance(v, Mapping) for g in groups.values() for v in g.values())
        table(name, {f"{a} / {b}": g for a, sub in groups.items() for b, g in sub.items()} if nested else groups)
    return "\n".join(lines)


def write_metrics(path: Path, result: Mapping[str, Any]) -> None:
    """metrics.json, atomically; NaN (an empty group) becomes null."""
    atomic_write_text(path, json.dumps(json_safe(dict(result)), indent=2, allow_nan=False) + "\n")
