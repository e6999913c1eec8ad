"""Answer-prior baseline: what a model scores without looking at the image or the change.

For each test question predict the most frequent training answer among training questions with
the same pattern (question types + the first two words, "how many", "what colour", …), backing off
to the first word, to the types alone, then to the overall most frequent answer. A blind model should beat this; a VLM that does not is
answering from priors. Writes predictions.jsonl in the contract ``evaluate`` uses, so
``python -m vlm metrics`` scores it like any model.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from vlm.benchmarks import BENCHMARKS, load_samples
from vlm.data.errors import DataError
from vlm.data.sample import Sample
from vlm.io import atomic_write_text
from vlm.metrics import prediction_record


def keys(sample: Sample) -> list[tuple]:
    """From most to least specific; the empty key is the global prior."""
    types = tuple(sorted(sample.question_type))
    words = sample.question.lower().split()
    return [(types, tuple(words[:2])), (types, tuple(words[:1])), (types,), ()]


def fit(train: list[Sample]) -> dict[tuple, str]:
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for s in train:
        for k in keys(s):
            counts[k][s.answer.strip().lower()] += 1
    # most_common breaks ties by first appearance: deterministic for a fixed training file
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


@dataclass
class Config:
    """Answer-prior baseline (no model): most frequent training answer per question pattern."""

    train: str = field(metadata={"help": "training split (any benchmark file: python -m vlm validate --help)"})
    test: str = field(metadata={"help": "split to predict (same format)"})
    out: str = field(metadata={"help": "predictions.jsonl to write"})
    benchmark: str = field(default="auto", metadata={"help": f"{' | '.join(BENCHMARKS)} | auto"})


def main(cfg: Config) -> int:
    train = load_samples(cfg.train, cfg.benchmark)
    test = load_samples(cfg.test, cfg.benchmark)
    if not train:
        raise DataError.single(cfg.train, "top level", "no questions to learn a prior from")
    table = fit(train)
    lines = []
    for s in test:
        answer = next(table[k] for k in keys(s) if k in table)
        lines.append(json.dumps(prediction_record(s, answer, model="prior", mode="blind"), ensure_ascii=False))
    atomic_write_text(Path(cfg.out), "\n".join(lines) + "\n")
    print(f"prior baseline: {len(test)} predictions from {len(train)} training questions -> {cfg.out}")
    return 0
