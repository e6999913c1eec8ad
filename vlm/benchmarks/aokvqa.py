"""A-OKVQA: a JSON list of questions about COCO 2017 images::

    {"question_id": str, "question": str, "choices": [4 str], "correct_choice_idx": int,
     "direct_answers": [10 str], "difficult_direct_answer": bool, "rationales": [3 str], "image_id": int}

Images: ``{coco_root}/{split}2017/{image_id:012}.jpg`` (the official ``get_coco_path``), or
``{image_dir}/{image_id:012}.jpg`` when the image folder itself is given (a split file such as ``cot_test.json``
does not name its COCO split). The test split
carries no answers: ``correct_choice_idx``, ``direct_answers``, ``difficult_direct_answer`` and ``rationales``
may be missing when ``split == "test"`` or, in a file whose name names no split, when no question carries
``correct_choice_idx`` or ``direct_answers`` (its Samples then have ``answers == []``); such an unlabelled file loads for prediction-only runs and
the loader says so (``FILE: note: …`` on stderr); MC / DA need labels (scoring refuses
unlabelled records instead of reporting 0 or NaN).

Quirks of the real files: A-OKVQA v1.0 val and test hold a handful of questions with an empty string among
their ``direct_answers`` or ``choices`` (e.g. choices ``["s", "", "b", "f"]``). The official loader
(``load_aokvqa.py``) reads the file as it is, so we accept them too: each empty item is a warning
(``FILE: [i] (question_id …).choices[1]: empty choice``, printed to stderr with counts), not an error. The
empty strings stay in ``context["choices"]`` / ``context["direct_answers"]`` and are scored as the official
code scores them (plain string equality, below); they are left out of ``Sample.answers`` (the references of
SBERT and of the ``rationale_cot`` target), which keeps the correct choice first.

Metrics follow the official evaluation, allenai/aokvqa ``evaluation/eval_predictions.py`` (``eval_aokvqa``)
and ``aokvqa_utils.py`` (``map_to_choices``):

* MC accuracy: ``float(pred == choices[correct_choice_idx])`` over every question. A free-text prediction
  that is not one of the choices is mapped first (official ``remap_predictions.py`` → ``map_to_choices``:
  the choice with the highest cosine similarity of GloVe sentence embeddings,
  ``sentence-transformers/average_word_embeddings_glove.6B.300d``). Here: exact match after ``clean_answer``,
  then a bare option letter ("B", "(b)"), then — only when an ``encoder`` is passed — the official
  embedding argmax; an unmapped prediction is wrong.
* DA accuracy: ``min(1, #{direct answers == pred} / 3)``, averaged over questions with
  ``difficult_direct_answer == False``: the official code EXCLUDES difficult questions from DA (the
  current ``eval_predictions.py`` filters ``if multiple_choice is False``; the maintainers confirm in
  allenai/aokvqa issue #2 that difficult questions are left out of the direct-answer setting. An older
  version of the same file and ``aokvqa_utils.eval_aokvqa`` applied that filter to MC instead — the bug
  that issue reported; we follow the fix). MC keeps every question.
* A question without a prediction scores 0 (the official non-strict path appends 0.0).
* The official code compares raw strings; A-OKVQA's choices and direct answers are lower-case without
  punctuation, so we compare after ``clean_answer`` (lower-case, collapse spaces, strip a final '.') on both
  sides — a no-op on the references, it only forgives a model's "Cab." for "cab".
* Empty references, as officially: an empty direct answer counts among the 10 (it matches only an empty
  prediction: ``num_match = sum([pred == da for da in direct_answers])``), and an empty choice is a choice
  (``pred == choices[correct_choice_idx]``). Differences from the official, all from the rules above: a
  prediction that cleans to "" (whitespace, ".") matches an empty reference like "" does (officially only ""
  itself does), and a bare option letter names the empty choice at its position ("(b)" -> "" for
  ``["s", "", "b", "f"]``; a literal choice "b" wins over the letter, exact matches come first).

Scores are fractions in [0, 1] (the official script prints percentages).


In metrics.json (``python -m vlm metrics``): ``mc`` (the headline) and ``da`` as above — ``da`` is NaN per sample
for difficult questions, left out of the mean and of its bootstrap CI, and ``n_da`` says how many questions
count; with SBERT, ``mc_sbert_mapped``: MC after mapping a free-text prediction that names no choice to the
choice of highest cosine similarity. The official ``remap_predictions.py`` uses averaged GloVe embeddings
(``average_word_embeddings_glove.6B.300d``), which are not available offline; we use the packaged MiniLM
sentence embeddings instead, so this number approximates the official remapped MC and ``mc`` stays the
headline; ``sbert``: best cosine over the references (correct choice + direct answers). Records without
labels (the unlabelled test split, ``correct_choice_idx`` null) are refused with "no labels".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlm.benchmarks.base import Benchmark, Row
from vlm.data.common import check_images_dir, check_str, check_unique_ids, read_json
from vlm.data.errors import DataError, Problems
from vlm.data.sample import Sample

NAME = "aokvqa"
SPLITS = ("train", "val", "test")
N_CHOICES, N_DIRECT, N_RATIONALES = 4, 10, 3
ANSWER_KEYS = ("correct_choice_idx", "direct_answers", "difficult_direct_answer", "rationales")  # absent in test
LABEL_KEYS = ("correct_choice_idx", "direct_answers")  # a file where no question has these is unlabelled
RECORD_KEYS = ("choices", "correct_choice_idx", "direct_answers", "difficult_direct_answer")  # what MC / DA need


def coco_path(coco_root: str | Path, split: str, image_id: int) -> Path:
    return Path(coco_root) / f"{split}2017" / f"{image_id:012}.jpg"


def split_from_name(path: str | Path) -> str | None:
    """'aokvqa_v1p0_val.json' / 'aokvqa_val.json' -> 'val'; 'test_w_ans' files use the test images. Only
    A-OKVQA's own file names count: a split file of ours ('cot_test.json', 'train.json') says nothing about
    the COCO split its images come from -> None."""
    m = re.fullmatch(r"aokvqa(?:[_-].*)?[_-](train|val|test)(?:_w_ans)?\.json", Path(path).name)
    return m.group(1) if m else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


EMPTY_ITEM = {"choices": "empty choice", "direct_answers": "empty direct answer"}  # accepted, warned


def _check_str_list(rec: dict, key: str, n: int, where: str, problems: Problems) -> list[str] | None:
    """The list, or None after an error. Empty items are errors, except in ``EMPTY_ITEM`` keys: warnings."""
    value = rec[key]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        problems.add(f"{where}.{key}", f"expected a list of {n} strings, got {type(value).__name__}"
                     + ("" if not isinstance(value, list) else " with non-string items"))
        return None
    if len(value) != n:
        problems.add(f"{where}.{key}", f"expected {n} strings, got {len(value)}")
        return None
    empty = [j for j, x in enumerate(value) if not x.strip()]
    if empty and key not in EMPTY_ITEM:
        problems.add(f"{where}.{key}", "an item is an empty string")
        return None
    for j in empty:
        idx = rec.get("correct_choice_idx")
        correct = key == "choices" and idx == j and _is_int(idx)
        problems.warn(f"{where}.{key}[{j}]", EMPTY_ITEM[key] + (" (the correct one)" if correct else ""))
    return value


def parse_aokvqa(data: Any, file: str | Path, coco_root: Path | None = None, split: str | None = None,
                 image_dir: Path | None = None) -> list[Sample]:
    """Validate a parsed A-OKVQA list and turn it into Samples; all problems raised together. Images come from
    ``coco_root`` (``{split}2017/`` below it) or straight from ``image_dir``; with neither, ``image`` is None.
    A question with answers and rationales carries ``context["rationale_cot"]`` (``rationale_target``)."""
    problems = Problems(file)
    if not isinstance(data, list):
        problems.add("top level", f"expected a list of questions, got {type(data).__name__}")
        problems.raise_if_any()
    no_labels = bool(data) and all(isinstance(r, dict) and not any(k in r for k in LABEL_KEYS) for r in data)
    lenient = split == "test" or (split is None and no_labels)  # unlabelled: the official test split
    samples: list[Sample] = []
    ids: list[tuple[str, str]] = []
    images: dict[int, str | None] = {}
    for i, rec in enumerate(data):
        where = f"[{i}]"
        if not isinstance(rec, dict):
            problems.add(where, f"expected an object, got {type(rec).__name__}")
            continue
        if isinstance(rec.get("question_id"), str):
            where = f"{where} (question_id '{rec['question_id']}')"
        qid = check_str(rec, "question_id", where, problems)
        if qid is not None:
            ids.append((qid, where))
        question = check_str(rec, "question", where, problems)
        ok = qid is not None and question is not None
        choices = None
        if "choices" not in rec:
            problems.add(where, "missing key 'choices'")
        else:
            choices = _check_str_list(rec, "choices", N_CHOICES, where, problems)
        ok &= choices is not None
        image_id = rec.get("image_id")
        if "image_id" not in rec:
            problems.add(where, "missing key 'image_id'")
            ok = False
        elif not _is_int(image_id) or image_id < 0:
            problems.add(f"{where}.image_id", f"expected a non-negative integer, got {image_id!r}")
            ok = False
        answers: dict[str, Any] = {"correct_choice_idx": None, "direct_answers": [], "difficult_direct_answer": None,
                                   "rationales": []}
        for key in ANSWER_KEYS:
            if key not in rec:
                if not lenient:
                    problems.add(where, f"missing key '{key}'" + ("" if split else " (only the test split may omit it)"))
                    ok = False
                continue
            value = rec[key]
            if key == "correct_choice_idx":
                if not _is_int(value) or not 0 <= value < N_CHOICES:
                    problems.add(f"{where}.{key}", f"expected an integer in 0..{N_CHOICES - 1}, got {value!r}")
                    ok = False
                    continue
            elif key == "difficult_direct_answer":
                if not isinstance(value, bool):
                    problems.add(f"{where}.{key}", f"expected true or false, got {value!r}")
                    ok = False
                    continue
            else:
                value = _check_str_list(rec, key, N_DIRECT if key == "direct_answers" else N_RATIONALES, where, problems)
                if value is None:
                    ok = False
                    continue
            answers[key] = value
        if not ok:
            continue
        if (coco_root is not None or image_dir is not None) and image_id not in images:
            path = image_dir / f"{image_id:012}.jpg" if image_dir is not None else coco_path(coco_root, split, image_id)
            images[image_id] = str(path.resolve()) if path.is_file() else None
            if images[image_id] is None:
                problems.add(f"{where}.image_id", f"image not found: {path}")
        idx = answers["correct_choice_idx"]
        sample = Sample(
            id=qid,
            benchmark=NAME,
            scene_id=str(image_id),  # questions about one image stay on one side of a split
            image=images.get(image_id),
            question=question,
            answers=([choices[idx]] if idx is not None else []) + [a for a in answers["direct_answers"] if a.strip()],
            question_type=[],
            context={"choices": list(choices), **answers, "image_id": image_id},
        )
        if sample.answers and answers["rationales"]:
            sample.context["rationale_cot"] = rationale_target(sample)  # what recipes train on (gold: rationale_cot)
        samples.append(sample)
    check_unique_ids(ids, problems)
    problems.raise_if_any()
    unlabelled = sum(s.context["correct_choice_idx"] is None for s in samples)
    if unlabelled:
        problems.note(("no labels" if unlabelled == len(samples) else f"{unlabelled} of {len(samples)} questions have no labels")
                      + " (no correct_choice_idx / direct_answers: an unlabelled test file): loaded for prediction-only "
                      "runs; MC / DA cannot be scored without labels")
    problems.report_warnings()
    return samples


def load_aokvqa(path: str | Path, coco_root: str | Path | None = None, split: str | None = None,
                image_dir: str | Path | None = None) -> list[Sample]:
    """Load and validate an A-OKVQA file; ``split`` (train | val | test) defaults to the one in the file name
    and picks the COCO image folder ``{coco_root}/{split}2017``. ``image_dir`` instead: the folder that holds
    ``{image_id:012}.jpg`` itself (no split needed)."""
    split = split or split_from_name(path)
    if split is not None and split not in SPLITS:
        raise DataError.single(path, "-", f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    if coco_root not in (None, "") and image_dir not in (None, ""):
        raise DataError.single(path, "-", "pass a COCO root or an image folder, not both")
    root = None
    if coco_root not in (None, ""):
        if split is None:
            raise DataError.single(path, "-", "cannot tell the split from the file name: pass split= (train | val | test)")
        root = Path(coco_root)
        if not (root / f"{split}2017").is_dir():
            raise DataError.single(root / f"{split}2017", "-", "COCO image folder not found")
    return parse_aokvqa(read_json(path), path, root, split, check_images_dir(image_dir))


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------

Encoder = Callable[[list[str]], Any]  # texts -> (n, d) embeddings


def clean_answer(text: str) -> str:
    return " ".join(str(text).lower().split()).rstrip(".").strip()


def map_to_choice(prediction: str, choices: Sequence[str], encoder: Encoder | None = None) -> str | None:
    """The choice a prediction names: exact (cleaned) match, a bare option letter, else — with an encoder —
    the official embedding argmax (``map_to_choices``); None when nothing maps."""
    pred = clean_answer(prediction)
    for choice in choices:
        if clean_answer(choice) == pred:
            return choice
    m = re.fullmatch(r"\(?([a-z])\)?[.:)]?", pred)
    if m and ord(m.group(1)) - ord("a") < len(choices):
        return choices[ord(m.group(1)) - ord("a")]
    if encoder is not None and pred:
        import numpy as np

        emb = np.asarray(encoder([prediction, *choices]), dtype=float)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return choices[int(np.argmax(emb[1:] @ emb[0]))]
    return None


def mc_score(prediction: str | None, sample: Sample, encoder: Encoder | None = None) -> float | None:
    """1.0 / 0.0, or None when the question has no gold choice (test split)."""
    idx = sample.context.get("correct_choice_idx")
    if idx is None:
        return None
    choices = sample.context["choices"]
    if prediction is None:
        return 0.0
    return float(map_to_choice(prediction, choices, encoder) == choices[idx])


def da_score(prediction: str | None, sample: Sample) -> float | None:
    """min(1, matches / 3), or None when the question does not count for DA (difficult, or no answers)."""
    if sample.context.get("difficult_direct_answer") is not False or not sample.context.get("direct_answers"):
        return None
    if prediction is None:
        return 0.0
    pred = clean_answer(prediction)
    return min(1.0, sum(pred == clean_answer(a) for a in sample.context["direct_answers"]) / 3.0)


def _predictions(preds: Mapping[str, str] | Sequence[str], samples: Sequence[Sample]) -> list[str | None]:
    if isinstance(preds, Mapping):
        return [preds.get(s.id) for s in samples]
    if len(preds) != len(samples):
        raise ValueError(f"{len(preds)} predictions for {len(samples)} samples")
    return list(preds)


def _mean(scores: list[float | None]) -> float:
    kept = [s for s in scores if s is not None]
    return sum(kept) / len(kept) if kept else math.nan


def mc_accuracy(preds: Mapping[str, str] | Sequence[str], samples: Sequence[Sample], encoder: Encoder | None = None) -> float:
    """Mean MC score over questions with a gold choice; ``preds`` by sample id or aligned with ``samples``."""
    return _mean([mc_score(p, s, encoder) for p, s in zip(_predictions(preds, samples), samples)])


def da_accuracy(preds: Mapping[str, str] | Sequence[str], samples: Sequence[Sample]) -> float:
    """Mean DA soft accuracy over non-difficult questions (difficult ones excluded, as the official code does)."""
    return _mean([da_score(p, s) for p, s in zip(_predictions(preds, samples), samples)])


def rationale_target(sample: Sample, which: int = 0) -> str:
    """Rationale-based CoT training target: ``"{rationale}\\nAnswer: {correct choice}"``."""
    rationales = sample.context.get("rationales") or []
    if not sample.answers:
        raise DataError.single(NAME, f"question {sample.id}", "no answer (test split): no training target")
    if not 0 <= which < len(rationales):
        raise DataError.single(NAME, f"question {sample.id}", f"no rationale #{which} (it has {len(rationales)})")
    return f"{rationales[which]}\nAnswer: {sample.answers[0]}"


# ---------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _str_list(value: Any) -> bool:  # empty items allowed: the real files have a few (scored as officially)
    return isinstance(value, list) and bool(value) and all(isinstance(x, str) for x in value)


class AOKVQA(Benchmark):
    name = NAME
    headline = "mc"
    metrics = ("mc", "da", "mc_sbert_mapped")
    counted = ("da",)  # difficult questions are out of DA
    record_keys = RECORD_KEYS
    train_recipe = "rationale"
    group_noun = "images"

    def claims_record(self, record: Any) -> bool:
        return isinstance(record, dict) and "choices" in record and "image_id" in record

    def load(self, path, images_dir=None, *, data=None, **options) -> list[Sample]:
        """``images_dir``: a COCO root when it holds the ``{split}2017`` folder of the split the file name names
        (``aokvqa_v1p0_val.json``), else the folder of ``{image_id:012}.jpg`` itself (what a split file such as
        ``cot_test.json`` needs)."""
        split = split_from_name(path)
        coco = bool(images_dir) and split is not None and (Path(images_dir) / f"{split}2017").is_dir()
        return load_aokvqa(path, images_dir if coco else None, image_dir=None if coco else images_dir)

    def default_images_dir(self, path: Path) -> Path:
        """``<dir>/<split>2017`` when the file name names the split, else ``<dir>`` (a split file next to its images)."""
        split = split_from_name(path)
        return path.parent / f"{split}2017" if split else path.parent

    def split_group(self, record: dict) -> str:
        return str(record["image_id"])  # every question about one COCO image

    def task_text(self, sample: Sample) -> str:
        text = super().task_text(sample)
        if sample.context.get("choices"):  # the multiple-choice setting shows the options
            text += "\nChoices: " + ", ".join(sample.context["choices"])
        return text

    def score(self, preds, *, sbert_model, normalization) -> list[Row]:
        for p in preds:
            missing = [k for k in RECORD_KEYS if k not in p.context]
            if missing:
                raise ValueError(f"A-OKVQA record '{p.id}' lacks {', '.join(missing)} (write records with prediction_record)")
        unlabelled = [p.id for p in preds if p.context["correct_choice_idx"] is None]
        if unlabelled:  # an unlabelled test split: say so instead of scoring 0 or NaN
            raise ValueError(f"no labels: {len(unlabelled)} of {len(preds)} A-OKVQA records have no correct_choice_idx "
                             f"(e.g. '{unlabelled[0]}'; the unlabelled test split is prediction-only) — nothing to score")
        samples = [p.as_sample() for p in preds]
        rows = [{"mc": _nan_if_none(mc_score(p.prediction, s)), "da": _nan_if_none(da_score(p.prediction, s))}
                for p, s in zip(preds, samples)]
        if sbert_model is not None:
            from vlm.metrics.text import sbert_encoder

            encoder = sbert_encoder([t for p in preds for t in (p.prediction, *p.context["choices"])], sbert_model)
            for row, p, s in zip(rows, preds, samples):
                row["mc_sbert_mapped"] = _nan_if_none(mc_score(p.prediction, s, encoder))
        return rows

    def check_record(self, record: Mapping[str, Any], bad: Callable[[str, str], None]) -> None:
        """The keys MC / DA need (written by ``prediction_record`` from the Sample's context)."""
        hint = " (written by prediction_record from the A-OKVQA sample)"
        for key in RECORD_KEYS:
            if key not in record:
                bad(key, "missing" + hint)
        choices = record.get("choices")
        if "choices" in record and not _str_list(choices):
            bad("choices", f"expected a non-empty list of strings, got {json.dumps(choices)[:60]}")
            choices = None
        idx = record.get("correct_choice_idx")
        if idx is None and "correct_choice_idx" in record:
            bad("correct_choice_idx", "null: an unlabelled question (A-OKVQA test split); MC / DA need labels, "
                "score a labelled split (val, test_w_ans)")
        elif "correct_choice_idx" in record:
            n = len(choices) if choices else N_CHOICES
            if not _is_int(idx) or not 0 <= idx < n:
                bad("correct_choice_idx", f"expected an integer in 0..{n - 1}, got {json.dumps(idx)[:60]}")
        direct = record.get("direct_answers")
        if "direct_answers" in record and not _str_list(direct) and not (idx is None and direct == []):
            bad("direct_answers", f"expected a non-empty list of strings, got {json.dumps(direct)[:60]}")
        difficult = record.get("difficult_direct_answer")
        if "difficult_direct_answer" in record and not isinstance(difficult, bool):
            bad("difficult_direct_answer", f"expected true or false, got {json.dumps(difficult)[:60]}")


if __name__ == "__main__":  # the committed toy sample (vlm.data.toyworld writes it)
    from vlm.data import toyworld
    from vlm.data.common import write_sample_cli

    write_sample_cli(toyworld.write_aokvqa_sample, "write the toy-world A-OKVQA sample (aokvqa_val.json + val2017/*.jpg)",
                     "aokvqa sample: {n} questions -> {out}")
