"""Hypo3D: ``{scene_id: [{context_change, change_type, questions_answers: [...]}, ...]}``.

Top-view images live at ``{images_dir}/{scene_id}.png``; axis definitions (xlsx sheet 'Sheet1' or
CSV with columns scene_id, Front, Back, Left, Right; empty cells allowed) become the orientation
sentence the benchmark's evaluation scripts build: "The {item} was located at the {direction} of the scene."

Metrics (definition: the benchmark's ``metric_compute.py``, LuxiaraQian/Hypo3D): answers are normalised
(direction phrase table, articles, punctuation, number words → digits), then EM = equality and
PM = |set(pred) ∩ set(ref)| / len(ref tokens); plus SBERT cosine of the normalised texts. Aggregated overall,
per change type, per question type (multi-label) and per change × question type.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from vlm.benchmarks.base import Benchmark, Row, first_group, group_indices
from vlm.data.common import check_images_dir, check_str, check_unique_ids, read_json, resolve_image
from vlm.data.errors import DataError, Problems
from vlm.data.sample import Sample
from vlm.data.split import Unit

NAME = "hypo3d"
CHANGE_CATEGORIES = ("Movement", "Removal", "Attribute", "Addition", "Replacement")
QUESTION_TYPES = ("Direction", "Semantic", "Scale")
AXIS_COLUMNS = ("scene_id", "Front", "Back", "Left", "Right")
QA_KEYS = ("question_id", "question_type", "question", "answer")


def change_category(change_type: str) -> str | None:
    """'Object Movement Change' -> 'Movement' (the official script takes the second word)."""
    words = change_type.replace("_", " ").split()
    for word in words:
        if word.capitalize() in CHANGE_CATEGORIES:
            return word.capitalize()
    return None


def orientation_sentence(axes: dict[str, str]) -> str:
    return " ".join(f"The {item} was located at the {direction.lower()} of the scene." for direction, item in axes.items())


def _axis_rows(path: Path) -> list[tuple[str, list[Any]]]:
    """(location, row) pairs; first row is the header."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [(f"line {i}", row) for i, row in enumerate(csv.reader(f), start=1)]
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        import openpyxl

        try:
            wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as e:  # openpyxl raises several types for a corrupt zip / non-xlsx file
            raise DataError.single(path, "-", f"cannot read workbook: {e}") from None
        if "Sheet1" not in wb.sheetnames:
            raise DataError.single(path, "-", f"no sheet 'Sheet1' (sheets: {', '.join(wb.sheetnames)})")
        rows = [(f"Sheet1 row {i}", list(r)) for i, r in enumerate(wb["Sheet1"].iter_rows(values_only=True), start=1)]
        wb.close()
        return rows
    raise DataError.single(path, "-", "axis definitions must be .csv or .xlsx")


def load_axis_definitions(path: str | Path) -> dict[str, dict[str, str]]:
    """{scene_id: {"Front": item, ...}} keeping only non-empty cells, in Front/Back/Left/Right order."""
    path = Path(path)
    if not path.is_file():
        raise DataError.single(path, "-", "axis definition file not found")
    rows = _axis_rows(path)
    if not rows:
        raise DataError.single(path, "line 1", "empty file: expected a header scene_id, Front, Back, Left, Right")
    header = [str(c).strip() if c is not None else "" for c in rows[0][1]]
    missing = [c for c in AXIS_COLUMNS if c not in header]
    if missing:
        raise DataError.single(path, rows[0][0], f"missing column(s) {', '.join(missing)} (header: {header})")
    col = {name: header.index(name) for name in AXIS_COLUMNS}
    problems = Problems(path)
    axes: dict[str, dict[str, str]] = {}
    for where, row in rows[1:]:
        cells = [("" if c is None else str(c).strip()) for c in row] + [""] * len(header)
        scene_id = cells[col["scene_id"]]
        if not scene_id:
            continue  # spreadsheet padding rows
        if scene_id in axes:
            problems.add(where, f"duplicate scene_id '{scene_id}'")
            continue
        axes[scene_id] = {d: cells[col[d]] for d in AXIS_COLUMNS[1:] if cells[col[d]]}
    problems.raise_if_any()
    return axes


def parse_hypo3d(
    data: Any,
    file: str | Path,
    images_dir: Path | None = None,
    axes: dict[str, dict[str, str]] | None = None,
) -> list[Sample]:
    """Validate a parsed Hypo3D JSON object and turn it into Samples; all problems raised together."""
    problems = Problems(file)
    if not isinstance(data, dict):
        problems.add("top level", f"expected an object {{scene_id: [changes]}}, got {type(data).__name__}")
        problems.raise_if_any()
    samples: list[Sample] = []
    ids: list[tuple[str, str]] = []
    for scene_id, changes in data.items():
        where_scene = scene_id
        if not isinstance(changes, list):
            problems.add(where_scene, f"expected a list of changes, got {type(changes).__name__}")
            continue
        image = resolve_image(images_dir, scene_id, where_scene, problems)
        orientation = orientation_sentence(axes.get(scene_id, {})) if axes else ""
        for ci, change in enumerate(changes):
            where_change = f"{scene_id}[{ci}]"
            if not isinstance(change, dict):
                problems.add(where_change, f"expected an object, got {type(change).__name__}")
                continue
            context_change = check_str(change, "context_change", where_change, problems)
            change_type = check_str(change, "change_type", where_change, problems)
            category = change_category(change_type) if change_type else None
            if change_type and category is None:
                problems.add(f"{where_change}.change_type", f"'{change_type}' names none of {', '.join(CHANGE_CATEGORIES)}")
            qas = change.get("questions_answers")
            if not isinstance(qas, list):
                problems.add(where_change, "missing key 'questions_answers'" if qas is None else "'questions_answers' must be a list")
                continue
            # Extra keys (e.g. the toy world's scene descriptions) travel along for CoT recipes.
            extras = {k: v for k, v in change.items() if k not in ("context_change", "change_type", "questions_answers")}
            for qi, qa in enumerate(qas):
                where = f"{where_change}.questions_answers[{qi}]"
                if not isinstance(qa, dict):
                    problems.add(where, f"expected an object, got {type(qa).__name__}")
                    continue
                qid = qa.get("question_id")
                if isinstance(qid, int) and not isinstance(qid, bool):
                    qid = str(qid)  # numeric ids are common in hand-made files; they are still ids
                    qa = {**qa, "question_id": qid}
                if isinstance(qid, str):
                    where = f"{where} (question_id '{qid}')"
                fields = {k: check_str(qa, k, where, problems) for k in QA_KEYS}
                if fields["question_id"] is not None:
                    ids.append((fields["question_id"], where))  # duplicates count even in broken records
                if None in fields.values() or context_change is None or category is None:
                    continue
                samples.append(
                    Sample(
                        id=fields["question_id"],
                        benchmark=NAME,
                        scene_id=scene_id,
                        image=image,
                        question=fields["question"],
                        answers=[fields["answer"]],
                        question_type=fields["question_type"].split(),
                        context={
                            "context_change": context_change,
                            "change_type": category,
                            "change_type_raw": change_type,
                            "change_index": ci,
                            "orientation": orientation,
                            **extras,
                        },
                    )
                )
    check_unique_ids(ids, problems)
    problems.raise_if_any()
    return samples


def load_hypo3d(
    path: str | Path, images_dir: str | Path | None = None, axis_definitions: str | Path | None = None, data: Any = None
) -> list[Sample]:
    """Validated Samples of a Hypo3D file (``data``: its JSON when already parsed)."""
    data = read_json(path) if data is None else data
    images = check_images_dir(images_dir)
    axes = load_axis_definitions(axis_definitions) if axis_definitions else None
    return parse_hypo3d(data, path, images, axes)


# ---------------------------------------------------------------------------------------------
# Answer normalisation and EM / PM
# ---------------------------------------------------------------------------------------------

# Copied verbatim (order included) from Hypo3D's metric_compute.py ``normalize_text``.
HYPO3D_REPLACEMENTS: dict[str, str] = {
    "back and right": "back right",
    "back and left": "back left",
    "front and right": "front right",
    "front and left": "front left",
    "behind and to the right": "back right",
    "behind and to the left": "back left",
    "in front and to the right": "front right",
    "to the": "",
    "by the": "",
    "on the": "",
    "near": "",
    "next": "",
    "corner": "",
    "behind": "back",
    "bottom": "back",
    "top": "front",
    "right side": "right",
    "left side": "left",
    "front side": "front",
    "back side": "back",
    "in front of": "front",
    "on the left of": "left",
    "on the right of": "right",
    "on the left": "left",
    "on the right": "right",
    "north": "front",
    "south": "back",
    "east": "right",
    "west": "left",
    "northwest": "front left",
    "northeast": "front right",
    "southwest": "back left",
    "southeast": "back right",
    "forward": "front",
    "backward": "back",
    "bottom of": "back",
    "left of": "left",
    "right of": "right",
    "front of": "front",
    "back of": "back",
}
# One alternation, longest phrase first, applied in a single pass (a replacement is never re-scanned).
_HYPO3D_PATTERN = re.compile(
    r"\b(" + "|".join(map(re.escape, sorted(HYPO3D_REPLACEMENTS, key=len, reverse=True))) + r")\b"
)
_NUMBER_PREFIXES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

Normalization = Literal["official", "per_model", "per_model_6152577"]
NORMALIZATIONS: tuple[str, ...] = ("official", "per_model", "per_model_6152577")


def _word_to_num(word: str) -> str | None:
    """word2number's reading of one word as a digit string, or None. Quirk kept: 'point' → '0'."""
    from word2number import w2n

    try:
        return str(w2n.word_to_num(word))
    except ValueError:
        return None


def _words_to_digits(text: str, *, drop_after_number: bool) -> str:
    out: list[str] = []
    seen_number = False
    for word in text.split():
        number = _word_to_num(word)
        if number is not None:
            out.append(number)
            seen_number = True
        elif not (drop_after_number and seen_number):
            out.append(word)
    return " ".join(out)


def normalize_hypo3d(text: str, variant: Normalization = "official") -> str:
    """Hypo3D answer normalisation.

    ``official`` is metric_compute.py: one longest-first pass over the phrase table, articles removed
    and stripped, only [a-zA-Z0-9 whitespace] kept, number words → digits — where, as in the published
    numbers, every non-number word after the first number is dropped ('two chairs' → '2').
    ``per_model`` is the per-model evaluate.py scripts as they were up to revision 98c6b4b (e.g.
    2D-VLM/llava-ov/evaluate.py, still so at d51a478): no phrase table, 'To the' removed case-sensitively,
    answers starting with a number word keep only their first word, all non-number words are kept.
    ``per_model_6152577`` is the per-model scripts' later normalisation (2D-VLM/Qwen2-VL/evaluate.py at
    revision 6152577): metric_compute.py's phrase table, articles and punctuation, but number words → digits
    keeps every other word ('two chairs' → '2 chairs'). The name pins the revision so that results recorded as
    ``per_model`` keep their meaning.
    """
    if variant == "official":
        text = text.lower()
        text = _HYPO3D_PATTERN.sub(lambda m: HYPO3D_REPLACEMENTS[m.group(0)], text)
        text = re.sub(r"\b(?:a|an|the)\b", "", text).strip()
        text = re.sub(r"[^a-zA-Z0-9\s]", "", text)
        return _words_to_digits(text, drop_after_number=True)
    if variant == "per_model":
        # Order matters and is the scripts' own: 'To the' is removed before lowercasing (case-sensitive).
        text = text.replace("To the", "").lower()
        if text.startswith(_NUMBER_PREFIXES):
            text = text.split(" ")[0]
        text = re.sub(r"[^a-zA-Z0-9\s]", "", text).strip()
        text = _words_to_digits(text, drop_after_number=False)
        return re.sub(r"\b(a|an|the)\b", "", text)  # no strip afterwards, as in the scripts
    if variant == "per_model_6152577":
        text = _HYPO3D_PATTERN.sub(lambda m: HYPO3D_REPLACEMENTS[m.group(0)], text.lower())
        text = re.sub(r"\b(?:a|an|the)\b", "", text).strip()
        text = re.sub(r"[^a-zA-Z0-9\s]", "", text)
        return _words_to_digits(text, drop_after_number=False)
    raise ValueError(f"unknown Hypo3D normalization '{variant}' (known: {', '.join(NORMALIZATIONS)})")


def partial_match_score(pred_normalized: str, ref_normalized: str) -> float:
    """Official PM on already-normalised texts: recall of the reference's distinct tokens."""
    ref_tokens = ref_normalized.split()
    if not ref_tokens:
        return 0.0
    return len(set(pred_normalized.split()) & set(ref_tokens)) / len(ref_tokens)


def hypo3d_exact_match(prediction: str, reference: str, variant: Normalization = "official") -> float:
    return float(normalize_hypo3d(prediction, variant) == normalize_hypo3d(reference, variant))


def hypo3d_partial_match(prediction: str, reference: str, variant: Normalization = "official") -> float:
    return partial_match_score(normalize_hypo3d(prediction, variant), normalize_hypo3d(reference, variant))


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


class Hypo3D(Benchmark):
    name = NAME
    headline = "em"
    metrics = ("em", "pm")
    normalizations = NORMALIZATIONS
    train_recipe = "hypo3d-cot"

    def claims(self, data: Any) -> bool:
        group = first_group(data)
        return group is not None and "questions_answers" in group[0]

    def load(self, path, images_dir=None, *, data=None, axis_definitions=None, **options) -> list[Sample]:
        return load_hypo3d(path, images_dir, axis_definitions, data)

    def split_units(self, data: Any) -> list[Unit]:
        """One unit per question, addressed (scene_id, change index, question index); its change is
        ``scene_id[change index]`` (for ``group_by=change``)."""
        units: list[Unit] = []
        for scene_id, changes in data.items():
            for ci, change in enumerate(changes):
                for qi, _ in enumerate(change["questions_answers"]):
                    key = f"{scene_id}[{ci}]"
                    units.append(Unit(scene_id, (scene_id, ci, qi), key, f"{key}[{qi}]"))
        return units

    def split_rebuild(self, data: Any, keep: set[tuple]) -> Any:
        out: dict[str, list] = {}
        for scene_id, changes in data.items():
            kept_changes = []
            for ci, change in enumerate(changes):
                qas = [qa for qi, qa in enumerate(change["questions_answers"]) if (scene_id, ci, qi) in keep]
                if qas:
                    kept_changes.append({**change, "questions_answers": qas})
            if kept_changes:
                out[scene_id] = kept_changes
        return out

    def task_text(self, sample: Sample) -> str:
        change = sample.context.get("context_change") or ""
        return f"Context change: {change}\nQuestion: {sample.question}" if change else super().task_text(sample)

    def _normalized(self, preds: Sequence[Any], normalization: str) -> tuple[list[str], list[str]]:
        return ([normalize_hypo3d(p.prediction, normalization) for p in preds],
                [normalize_hypo3d(p.references[0], normalization) for p in preds])

    def score(self, preds, *, sbert_model, normalization) -> list[Row]:
        pn, rn = self._normalized(preds, normalization)
        return [{"em": float(a == b), "pm": partial_match_score(a, b)} for a, b in zip(pn, rn)]

    def sbert_scores(self, preds, model, *, normalization) -> list[float]:
        from vlm.metrics.text import sbert_similarity

        return sbert_similarity(*self._normalized(preds, normalization), model)  # official: on the normalised texts

    def groups(self, preds) -> dict[str, Mapping]:
        # A record without a change type still counts overall, just in no change-type group. Records carry the
        # category word already; a raw 'Object Movement Change' is mapped to it too.
        by_change = group_indices(
            (i, [change_category(p.change_type) or p.change_type] if p.change_type else []) for i, p in enumerate(preds)
        )
        return {
            "by_question_type": group_indices((i, p.question_type) for i, p in enumerate(preds)),
            "by_change_type": by_change,
            "by_change_and_question_type": {
                c: group_indices((i, preds[i].question_type) for i in idx) for c, idx in by_change.items()
            },
        }

    def check_record(self, record: Mapping[str, Any], bad: Callable[[str, str], None]) -> None:
        # the per-type tables need both type fields
        if "question_type" not in record:
            bad("question_type", "missing (a list of question types)")
        if "change_type" not in record:
            bad("change_type", "missing (the change category, e.g. 'Movement')")
