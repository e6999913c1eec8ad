"""ScanQA format: the official flat list ``[{scene_id, question_id, question, answers, object_ids, object_names}]``
or the scene-grouped variant ``{scene_id: [qa, ...]}``. Images: ``{images_dir}/{scene_id}.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from vlm.data.common import check_images_dir, check_str, check_unique_ids, read_json, resolve_image
from vlm.data.errors import Problems
from vlm.data.sample import Sample

BENCHMARK = "scanqa"
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
                benchmark=BENCHMARK,
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


def load_scanqa(path: str | Path, images_dir: str | Path | None = None, axis_definitions: str | Path | None = None) -> list[Sample]:
    del axis_definitions  # ScanQA has no axis file; same signature as the other loaders
    return parse_scanqa(read_json(path), path, check_images_dir(images_dir))
