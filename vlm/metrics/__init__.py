"""Metrics, benchmark-agnostic: each benchmark scores its own samples (``vlm.benchmarks.<name>``: its official
metrics, documented there); this package aggregates them.

* ``text``: PTB tokenisation (Java PTBTokenizer or its Python port), corpus BLEU / ROUGE-L / CIDEr / METEOR
  (``caption_scores``), SBERT similarity;
* ``aggregate``: prediction records (``prediction_record``, ``load_predictions``), ``score_records`` /
  ``compute_metrics`` driven by the record's ``Benchmark``, bootstrap CIs, ``format_table``, ``write_metrics``;
* ``stage``: ``python -m vlm metrics preds.jsonl`` (``Config`` + ``main``, re-exported here for ``vlm.__main__``).
"""

from __future__ import annotations

from vlm.benchmarks import BENCHMARKS, get
from vlm.metrics.aggregate import (
    Prediction,
    bootstrap_ci,
    compute_metrics,
    format_table,
    infer_benchmark,
    load_predictions,
    prediction_record,
    reasoning_part,
    score_records,
    write_metrics,
)
from vlm.metrics.stage import Config, main
from vlm.metrics.text import (
    CAPTION_KEYS,
    DEFAULT_SBERT_MODEL,
    caption_scores,
    java_available,
    load_sbert,
    meteor_scorer,
    packaged_minilm_path,
    ptb_exact_match,
    ptb_tokenize,
    ptb_tokenize_batch,
    ptb_tokenize_java,
    resolve_sbert_model,
    sbert_encoder,
    sbert_similarity,
)

def headline(benchmark: str) -> str:
    """The metric a report leads with for this benchmark (DataError naming the known ones for an unknown name)."""
    return get(benchmark).headline


# name -> headline metric, derived from the registry (vlm/stages/report.py reads it with .get()).
HEADLINE: dict[str, str] = {name: b.headline for name, b in BENCHMARKS.items()}

__all__ = [
    "CAPTION_KEYS",
    "Config",
    "DEFAULT_SBERT_MODEL",
    "HEADLINE",
    "Prediction",
    "bootstrap_ci",
    "caption_scores",
    "compute_metrics",
    "format_table",
    "headline",
    "infer_benchmark",
    "java_available",
    "load_predictions",
    "load_sbert",
    "main",
    "meteor_scorer",
    "packaged_minilm_path",
    "prediction_record",
    "ptb_exact_match",
    "ptb_tokenize",
    "ptb_tokenize_batch",
    "ptb_tokenize_java",
    "reasoning_part",
    "resolve_sbert_model",
    "sbert_encoder",
    "sbert_similarity",
    "score_records",
    "write_metrics",
]
