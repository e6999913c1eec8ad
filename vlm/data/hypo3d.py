"""Hypo3D format: ``{scene_id: [{context_change, change_type, questions_answers: [...]}, ...]}``.

Top-view images live at ``{images_dir}/{scene_id}.png``; axis definitions (xlsx sheet 'Sheet1' or
CSV with columns scene_id, Front, Back, Left, Right; empty cells allowed) become the orientation
sentence the benchmark's evaluation scripts build: "The {item} was located at the {direction} of the scene."
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from vlm.data.common import check_images_dir, check_str, check_unique_ids, read_json, resolve_image
from vlm.data.errors import DataError, Problems
from vlm.data.sample import Sample

BENCHMARK = "hypo3d"
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
                        benchmark=BENCHMARK,
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
    path: str | Path, images_dir: str | Path | None = None, axis_definitions: str | Path | None = None
) -> list[Sample]:
    axes = load_axis_definitions(axis_definitions) if axis_definitions else None
    return parse_hypo3d(read_json(path), path, check_images_dir(images_dir), axes)
