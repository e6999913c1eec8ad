"""Toy world: determinism, prefix property, coverage, and answers re-derived independently.

The checks below do not reuse the generator's question logic: they parse the written sentences and
questions with their own regexes, rebuild the changed scene from the change sentence, and read colours
and object sizes back from the written PNGs.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from PIL import Image

from vlm.data import toyworld as tw

ROWS, COLS = ("front", "", "back"), ("left", "", "right")
NUMBERS = "zero one two three four five six seven eight nine".split()


def phrase(cell: tuple[int, int]) -> str:
    return " ".join(w for w in (ROWS[cell[0]], COLS[cell[1]]) if w) or "center"


CELL_OF = {phrase((r, c)): (r, c) for r in range(3) for c in range(3)}


def write(tmp_path: Path, name: str, **kw) -> Path:
    out = tmp_path / name
    cfg = tw.Config(hypo3d_out=str(out / "hypo"), scanqa_out=str(out / "scanqa"), **kw)
    assert tw.main(cfg) == 0
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The committed-sample configuration: 40 scenes, seed 0."""
    out = write(tmp_path_factory.mktemp("tw"), "w", scenes=40, seed=0)
    cfg = tw.Config(scenes=40, seed=0)
    hypo = json.loads((out / "hypo" / "hypo3d.json").read_text())
    scanqa = json.loads((out / "scanqa" / "scanqa.json").read_text())
    return out, tw.generate_world(cfg), hypo, scanqa


@pytest.fixture(scope="module")
def areas(world):
    """Size of each kind measured in the written pictures (shapes are the same in every scene)."""
    out, scenes, _, _ = world
    found: dict[str, int] = {}
    for s in scenes:
        image = np.asarray(Image.open(out / "hypo" / "images" / f"{s.scene_id}.png"))
        found.update(kind_areas(image, {o.cell: (o.colour, o.kind) for o in s.objects}))
    assert set(found) == set(tw.KINDS)
    return found


# --- determinism -----------------------------------------------------------------------------------


def test_same_seed_gives_identical_files(tmp_path):
    a, b = files(write(tmp_path, "a", scenes=6, seed=3)), files(write(tmp_path, "b", scenes=6, seed=3))
    assert a.keys() == b.keys()
    assert {"hypo/hypo3d.json", "hypo/axis_definition.csv", "hypo/axis_definition.xlsx", "hypo/images/toy0005.png",
            "scanqa/scanqa.json", "scanqa/images/toy0000.png"} <= a.keys()
    assert not [k for k in a if k.endswith(".tmp")]
    for name in a:
        assert a[name] == b[name], name  # xlsx included: zip entry times and metadata dates are fixed


def test_xlsx_matches_csv(tmp_path):
    out = write(tmp_path, "a", scenes=8, seed=1) / "hypo"
    with (out / "axis_definition.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    wb = openpyxl.load_workbook(out / "axis_definition.xlsx")
    assert wb.sheetnames == ["Sheet1"]
    cells = [["" if v is None else v for v in row] for row in wb["Sheet1"].iter_rows(values_only=True)]
    assert cells == rows
    assert rows[0] == ["scene_id", "Front", "Back", "Left", "Right"]
    assert all(1 <= sum(bool(v) for v in row[1:]) <= 4 for row in rows[1:])


def test_different_seed_differs(tmp_path):
    a, b = files(write(tmp_path, "a", scenes=6, seed=0)), files(write(tmp_path, "b", scenes=6, seed=1))
    for name in ("hypo/hypo3d.json", "scanqa/scanqa.json", "hypo/axis_definition.csv", "hypo/images/toy0000.png"):
        assert a[name] != b[name], name


def test_prefix_property(tmp_path):
    small, big = write(tmp_path, "s", scenes=5, seed=2), write(tmp_path, "b", scenes=15, seed=2)
    hs, hb = (json.loads((d / "hypo" / "hypo3d.json").read_text()) for d in (small, big))
    assert list(hb.items())[:5] == list(hs.items())
    ss, sb = (json.loads((d / "scanqa" / "scanqa.json").read_text()) for d in (small, big))
    assert sb[: len(ss)] == ss
    for i in range(5):
        assert (small / "hypo/images" / f"toy{i:04d}.png").read_bytes() == (big / "hypo/images" / f"toy{i:04d}.png").read_bytes()
    csv_small = (small / "hypo/axis_definition.csv").read_text().splitlines()
    assert (big / "hypo/axis_definition.csv").read_text().splitlines()[: len(csv_small)] == csv_small


# --- structure and coverage ------------------------------------------------------------------------


def test_formats_and_coverage(world):
    _, scenes, hypo, scanqa = world
    assert list(hypo) == [f"toy{i:04d}" for i in range(40)]
    qas = [qa for recs in hypo.values() for rec in recs for qa in rec["questions_answers"]]
    assert [qa["question_id"] for qa in qas] == [f"{i:05d}" for i in range(len(qas))]
    assert len(qas) == 40 * 2 * 3 and len(scanqa) == 40 * 6
    change_types = {rec["change_type"] for recs in hypo.values() for rec in recs}
    assert change_types == {f"Object {c} Change" for c in tw.CATEGORIES}
    for records in (qas, scanqa):
        types = {t for qa in records for t in qa["question_type"].split()}
        assert types == set(tw.QUESTION_TYPES)
        answers = [qa.get("answer") or qa["answers"][0] for qa in records]
        assert max(answers.count(a) for a in set(answers)) < 0.25 * len(answers)  # no dominant answer
    for rec in scanqa:
        assert set(rec) >= {"scene_id", "question_id", "question", "answers", "object_ids", "object_names", "scene_description"}
        assert rec["question_id"].startswith(f"train-{rec['scene_id']}-") and rec["object_ids"]


def test_pairs_unique_and_one_object_per_cell(world):
    _, scenes, _, _ = world
    cfg = tw.Config(scenes=40)
    for scene in scenes:
        assert 3 <= len(scene.objects) <= 6 and 1 <= len(scene.anchors) <= 4
        changed = [tw.apply_change(scene, c) for c in tw.sample_changes(scene, tw.scene_rng(cfg.seed, scene.index, "hypo3d"), 2)]
        for s in [scene, *changed]:
            assert len({(o.colour, o.kind) for o in s.objects}) == len(s.objects)
            assert len({o.cell for o in s.objects}) == len(s.objects)
    kinds_repeat = sum(len({o.kind for o in s.objects}) < len(s.objects) for s in scenes)
    assert kinds_repeat > 5  # counting kinds is not always "one"


# --- answers re-derived independently ----------------------------------------------------------------


def apply_sentence(objs: dict, sentence: str) -> dict:
    """objs: {cell: (colour, kind)} → the scene after the change the sentence describes."""
    objs = dict(objs)
    cell_of = {v: k for k, v in objs.items()}
    if m := re.fullmatch(r"The (\w+) (\w+) has been moved to the (.+) of the room\.", sentence):
        objs[CELL_OF[m[3]]] = objs.pop(cell_of[(m[1], m[2])])
    elif m := re.fullmatch(r"The (\w+) (\w+) has been removed from the room\.", sentence):
        del objs[cell_of[(m[1], m[2])]]
    elif m := re.fullmatch(r"The (\w+) (\w+) has been painted (\w+)\.", sentence):
        objs[cell_of[(m[1], m[2])]] = (m[3], m[2])
    elif m := re.fullmatch(r"An? (\w+) (\w+) has been added to the (.+) of the room\.", sentence):
        assert CELL_OF[m[3]] not in objs
        objs[CELL_OF[m[3]]] = (m[1], m[2])
    elif m := re.fullmatch(r"The (\w+) (\w+) has been replaced by an? (\w+) (\w+)\.", sentence):
        objs[cell_of[(m[1], m[2])]] = (m[3], m[4])
    else:
        raise AssertionError(f"unparsed change: {sentence}")
    return objs


def describe(objs: dict) -> str:
    """Every cell front to back, left to right, empty ones as 'nothing' (the scene descriptions' listing)."""
    cells = [(r, c) for r in range(3) for c in range(3)]
    return "; ".join(f"{phrase(cell)}: {' '.join(objs[cell]) if cell in objs else 'nothing'}" for cell in cells) + "."


def kind_areas(image: np.ndarray, objs: dict) -> dict[str, int]:
    """Object size read from the picture: pixels of the object's colour inside its 16-px cell."""
    areas = {}
    for (r, c), (colour, kind) in objs.items():
        patch = image[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
        areas[kind] = int((patch == tw.COLOURS[colour]).all(-1).sum())
    return areas


def solve(question: str, objs: dict, areas: dict[str, int]) -> str:
    cell_of = {f"{c} {k}": cell for cell, (c, k) in objs.items()}
    q = question.replace(" now?", "?")
    if m := re.fullmatch(r"Where is the (\w+ \w+)\?", q):
        return phrase(cell_of[m[1]])
    if m := re.fullmatch(r"Which direction is the (\w+ \w+) from the (\w+ \w+)\?", q):
        (ra, ca), (rb, cb) = cell_of[m[1]], cell_of[m[2]]
        words = ["front" if ra < rb else "back" if ra > rb else "", "left" if ca < cb else "right" if ca > cb else ""]
        return " ".join(w for w in words if w)
    if m := re.fullmatch(r"What is at the (.+) of the room\?", q):
        return " ".join(objs[CELL_OF[m[1]]]) if CELL_OF[m[1]] in objs else "nothing"
    if m := re.fullmatch(r"What colour is the (\w+)\?", q):
        (colour,) = [c for c, k in objs.values() if k == m[1]]
        return colour
    if m := re.fullmatch(r"How many (\w+) objects are in the room\?", q):
        return NUMBERS[sum(c == m[1] for c, _ in objs.values())]
    if m := re.fullmatch(r"How many objects are on the (\w+) side of the room\?", q):
        index, value = {"front": (0, 0), "back": (0, 2), "left": (1, 0), "right": (1, 2)}[m[1]]
        return NUMBERS[sum(cell[index] == value for cell in objs)]
    if q == "How many objects are in the room?":
        return NUMBERS[len(objs)]
    if m := re.fullmatch(r"How many (\w+)s are in the room\?", q):
        return NUMBERS[sum(k == m[1] for _, k in objs.values())]
    if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the room\?", q):
        return "yes" if (m[1], m[2]) in objs.values() else "no"
    if m := re.fullmatch(r"Which is bigger, the (\w+ \w+) or the (\w+ \w+)\?", q):
        a, b = m[1], m[2]
        return a if areas[a.split()[1]] > areas[b.split()[1]] else b
    raise AssertionError(f"unparsed question: {question}")


def test_hypo3d_answers_follow_from_the_changed_scene(world, areas):
    _, scenes, hypo, _ = world
    for scene in scenes:
        original = {o.cell: (o.colour, o.kind) for o in scene.objects}
        for rec in hypo[scene.scene_id]:
            changed = apply_sentence(original, rec["context_change"])
            assert rec["scene_description"] == describe(original)
            assert rec["changed_scene_description"] == describe(changed)
            for qa in rec["questions_answers"]:
                assert qa["answer"] == solve(qa["question"], changed, areas), qa


def entries(description: str) -> dict[str, str]:
    return dict(part.split(": ") for part in description.rstrip(".").split("; "))


def test_movement_sentence_matches_moved_object(world):
    _, scenes, hypo, _ = world
    moves = 0
    for scene in scenes:
        changes = tw.sample_changes(scene, tw.scene_rng(0, scene.index, "hypo3d"), 2)
        for rec, change in zip(hypo[scene.scene_id], changes):
            assert rec["context_change"] == change.sentence
            m = re.fullmatch(r"The (\w+) (\w+) has been moved to the (.+) of the room\.", rec["context_change"])
            if not m:
                continue
            moves += 1
            assert entries(rec["changed_scene_description"])[m[3]] == f"{m[1]} {m[2]}"
            assert entries(rec["scene_description"])[m[3]] == "nothing"  # moved to a free cell
            moved = tw.apply_change(scene, change).find(m[1], m[2])
            assert moved.id == change.old.id and phrase(moved.cell) == m[3]
    assert moves >= 10


def test_scanqa_answers_follow_from_the_original_scene(world, areas):
    out, scenes, _, scanqa = world
    by_id = {s.scene_id: s for s in scenes}
    for rec in scanqa:
        scene = by_id[rec["scene_id"]]
        objs = {o.cell: (o.colour, o.kind) for o in scene.objects}
        image = np.asarray(Image.open(out / "scanqa" / "images" / f"{scene.scene_id}.png"))
        assert rec["answers"][0] == solve(rec["question"], objs, areas), rec
        assert rec["scene_description"] == describe(objs)
        kinds = {o.id: o.kind for o in scene.objects}
        assert rec["object_names"] == [kinds[i] for i in rec["object_ids"]]
        assert image.shape == (48, 48, 3)


# --- pictures ------------------------------------------------------------------------------------------


def test_pixels_at_cell_centres(world):
    out, scenes, _, _ = world
    for scene in scenes:
        image = Image.open(out / "hypo" / "images" / f"{scene.scene_id}.png").convert("RGB")
        assert image.size == (48, 48)
        objs = {o.cell: o for o in scene.objects}
        for r in range(3):
            for c in range(3):
                expected = tw.COLOURS[objs[(r, c)].colour] if (r, c) in objs else tw.FLOOR
                assert image.getpixel((c * 16 + 8, r * 16 + 8)) == expected
                # the border strip of the cell stays floor: shapes keep a margin
                assert image.getpixel((c * 16 + 2, r * 16 + 2)) == tw.FLOOR


# Independent of tw.image_edge: a counter-clockwise quarter turn sends top→left→bottom→right→top.
CCW = {"top": "left", "left": "bottom", "bottom": "right", "right": "top"}
SIDE_EDGE = {"Front": "top", "Back": "bottom", "Left": "left", "Right": "right"}


def edge_pixel(edge: str, offset: int = 20) -> tuple[int, int]:
    return {"top": (offset, 0), "bottom": (offset, 47), "left": (0, offset), "right": (47, offset)}[edge]


def test_rotate_moves_anchor_strips_and_objects(tmp_path):
    out = write(tmp_path, "r", scenes=12, seed=5, rotate=True)
    scenes = tw.generate_world(tw.Config(scenes=12, seed=5, rotate=True))
    plain = tw.generate_world(tw.Config(scenes=12, seed=5))
    assert {s.rotation for s in scenes} - {0}  # some scenes really are rotated
    for s, p in zip(scenes, plain):
        assert (s.objects, s.anchors) == (p.objects, p.anchors)  # rotation changes only the picture
        image = Image.open(out / "hypo" / "images" / f"{s.scene_id}.png")
        for side in tw.SIDES:
            edge = SIDE_EDGE[side]
            for _ in range(s.rotation):
                edge = CCW[edge]
            assert tw.image_edge(side, s.rotation) == edge
            expected = tw.ANCHORS[s.anchors[side]] if side in s.anchors else tw.FLOOR
            assert image.getpixel(edge_pixel(edge)) == expected, (s.scene_id, side)
        for o in s.objects:
            assert image.getpixel(tw.cell_center(o.row, o.col, 48, 3, s.rotation)) == tw.COLOURS[o.colour]
    answers = json.loads((out / "hypo" / "hypo3d.json").read_text())
    plain_out = write(tmp_path, "p", scenes=12, seed=5)
    assert answers == json.loads((plain_out / "hypo" / "hypo3d.json").read_text())  # answers stay in the scene frame


# --- configuration -----------------------------------------------------------------------------------


def test_layout_validation():
    with pytest.raises(ValueError, match="not divisible by --grid"):
        tw.generate_world(tw.Config(image_size=50, grid=3))
    with pytest.raises(ValueError, match="max_objects"):
        tw.generate_world(tw.Config(max_objects=9))
    assert tw.check_layout(64, 4) == 16


def test_cli_parses_and_reports_bad_layout(tmp_path, capsys):
    from vlm.__main__ import main

    assert main(["toyworld", "--scenes", "2", "--image_size", "50"]) == 2
    assert "not divisible" in capsys.readouterr().err
    assert main(["toyworld", "--scenes", "2", "--rotate", "--hypo3d_out", str(tmp_path / "h")]) == 0
    assert "2 scenes" in capsys.readouterr().out
    assert (tmp_path / "h" / "images" / "toy0001.png").is_file() and not (tmp_path / "s").exists()


def test_other_grid_sizes_render_and_answer():
    cfg = tw.Config(scenes=6, image_size=64, grid=4, max_objects=10)
    scenes = tw.generate_world(cfg)
    assert len(tw.build_hypo3d(scenes, cfg)) == 6
    for s in scenes:
        image = tw.render(s, 64)
        for o in s.objects:
            assert image.getpixel(tw.cell_center(o.row, o.col, 64, 4)) == tw.COLOURS[o.colour]


def test_written_files_load_with_the_benchmark_loaders(world):
    from vlm.data import load_samples

    out, _, _, _ = world
    hypo = load_samples(out / "hypo" / "hypo3d.json", images_dir=out / "hypo" / "images",
                        axis_definitions=out / "hypo" / "axis_definition.xlsx")
    scanqa = load_samples(out / "scanqa" / "scanqa.json", images_dir=out / "scanqa" / "images")
    assert len(hypo) == 240 and len(scanqa) == 240
    assert hypo[0].context["changed_scene_description"] and hypo[0].context["orientation"]
