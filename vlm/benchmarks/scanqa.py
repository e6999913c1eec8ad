"""ScanQA: the official flat list ``[{scene_id, question_id, question, answers, object_ids, object_names}]``
or the scene-grouped variant ``{scene_id: [qa, ...]}``. Images: ``{images_dir}/{scene_id}.png``.

Metrics (definition: ``scripts/score.py``, ATR-DBI/ScanQA): EM@1 = the prediction is one of the reference
answers; BLEU-1..4, ROUGE-L, CIDEr and METEOR over all references, after PTB tokenisation
(``vlm.metrics.caption_scores``: pycocoevalcap's Java PTBTokenizer and METEOR when ``java`` is on PATH, exactly
the official pipeline; otherwise the Python ``ptb_tokenize`` and no METEOR — null, not 0; metrics.json's
``tokenizer`` says which ran); plus SBERT cosine (best reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from vlm.benchmarks.base import Benchmark, Row, first_group
from vlm.data.common import check_images_dir, check_str, check_unique_ids, read_json, resolve_image
from vlm.data.errors import Problems
from vlm.data.sample import Sample
from vlm.data.split import Unit

NAME = "scanqa"
OPTIONAL_LIST_KEYS = ("object_ids", "object_names")  # absent in the official test split


def iter_records(data: Any, problems: Problems) -> Iterator[tuple[str, str | None, Any]]:
    """(location, scene_id from the grouping key or None, record) for either layout."""
    if isinstance(data, list):
        for i, rec in enumerate(data):
            yield f"[{i}]", None, rec
    elif isinstance(data, dict):
        for scene_id, recs in data.items():
            if not isinstance(recs, list):
                problems.add(scene_id, f"expected a list of questions, got {type(recs).__name__}")
                continue
            for i, rec in enumerate(recs):
                yield f"{scene_id}[{i}]", scene_id, rec
    else:
        problems.add("top level", f"expected a list of questions or {{scene_id: [questions]}}, got {type(data).__name__}")


def parse_scanqa(data: Any, file: str | Path, images_dir: Path | None = None) -> list[Sample]:
    problems = Problems(file)
    samples: list[Sample] = []
    ids: list[tuple[str, str]] = []
    images: dict[str, str | None] = {}  # one existence check per scene, not per question
    for where, group_scene, rec in iter_records(data, problems):
        if not isinstance(rec, dict):
            problems.add(where, f"expected an object, got {type(rec).__name__}")
            continue
        qid = rec.get("question_id")
        if isinstance(qid, str):
            where = f"{where} (question_id '{qid}')"
        if group_scene is not None and "scene_id" not in rec:
            rec = {**rec, "scene_id": group_scene}
        scene_id = check_str(rec, "scene_id", where, problems)
        if group_scene is not None and scene_id is not None and scene_id != group_scene:
            problems.add(f"{where}.scene_id", f"'{scene_id}' differs from its group key '{group_scene}'")
        qid = check_str(rec, "question_id", where, problems)
        if qid is not None:
            ids.append((qid, where))  # duplicates count even in broken records
        question = check_str(rec, "question", where, problems)
        answers = rec.get("answers")
        if answers is None:
            problems.add(where, "missing key 'answers'")
        elif not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            problems.add(f"{where}.answers", "expected a list of strings")
            answers = None
        elif not answers or not all(a.strip() for a in answers):
            problems.add(f"{where}.answers", "empty answers" if not answers else "an answer is an empty string")
            answers = None
        for key in OPTIONAL_LIST_KEYS:
            if key in rec and not isinstance(rec[key], list):
                problems.add(f"{where}.{key}", f"expected a list, got {type(rec[key]).__name__}")
        if None in (scene_id, qid, question, answers):
            continue
        if scene_id not in images:
            images[scene_id] = resolve_image(images_dir, scene_id, where, problems)
        extras = {k: v for k, v in rec.items() if k not in ("scene_id", "question_id", "question", "answers")}
        samples.append(
            Sample(
                id=qid,
                benchmark=NAME,
                scene_id=scene_id,
                image=images[scene_id],
                question=question,
                answers=list(answers),
                question_type=[],
                context=extras,
            )
        )
    check_unique_ids(ids, problems)
    problems.raise_if_any()
    return samples


def load_scanqa(path: str | Path, images_dir: str | Path | None = None, data: Any = None) -> list[Sample]:
    """Validated Samples of a ScanQA file (``data``: its JSON when already parsed)."""
    return parse_scanqa(read_json(path) if data is None else data, path, check_images_dir(images_dir))


def scanqa_exact_match(prediction: str, references: Sequence[str], *, clean: bool = False) -> float:
    """EM@1. ``clean=False`` is the official check, ``answer in ref_answers`` on raw strings
    (ATR-DBI/ScanQA scripts/score.py, evals_json): ScanQA's classifier emits answer-vocabulary strings,
    so it needs no cleaning. ``clean=True`` compares both sides after ``ptb_tokenize`` — the only cleaning
    the official script applies anywhere (before BLEU/ROUGE/CIDEr) — for free-form generated answers."""
    if clean:
        from vlm.metrics.text import ptb_exact_match  # vlm.metrics imports the registry, so not at the top

        return ptb_exact_match(prediction, references)
    return float(prediction in references)


class ScanQA(Benchmark):
    name = NAME
    headline = "em@1"
    metrics = ("em@1", "em@1_clean")
    corpus_captions = True
    fallback = True  # any list of objects, any scene-grouped object: asked after the specific formats

    def claims(self, data: Any) -> bool:
        return isinstance(data, list) or first_group(data) is not None

    def claims_record(self, record: Any) -> bool:
        return isinstance(record, dict)

    def load(self, path, images_dir=None, *, data=None, **options) -> list[Sample]:
        return load_scanqa(path, images_dir, data)

    def split_group(self, record: dict) -> str:
        return record["scene_id"]

    def split_units(self, data: Any) -> list[Unit]:
        if isinstance(data, list):
            return super().split_units(data)
        return [Unit(scene_id, (scene_id, i), f"{scene_id}[{i}]", f"{scene_id}[{i}]")
                for scene_id, recs in data.items() for i, _ in enumerate(recs)]

    def split_rebuild(self, data: Any, keep: set[tuple]) -> Any:
        if isinstance(data, list):
            return super().split_rebuild(data, keep)
        grouped = {sid: [r for i, r in enumerate(recs) if (sid, i) in keep] for sid, recs in data.items()}
        return {sid: recs for sid, recs in grouped.items() if recs}

    def score(self, preds, *, sbert_model, normalization) -> list[Row]:
        return [{"em@1": scanqa_exact_match(p.prediction, p.references),
                 "em@1_clean": scanqa_exact_match(p.prediction, p.references, clean=True)} for p in preds]
