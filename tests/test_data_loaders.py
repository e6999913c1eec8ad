"""Loaders for the real Hypo3D / ScanQA formats: happy paths and every bad-input class."""

from __future__ import annotations

import csv
import json

import pytest

from helpers import hypo3d_data, run_vlm, scanqa_data, write_images, write_json
from vlm.data import detect_benchmark, load_samples
from vlm.data.errors import DataError
from vlm.benchmarks.hypo3d import change_category, load_axis_definitions, load_hypo3d, orientation_sentence
from vlm.benchmarks.scanqa import load_scanqa


# ---------------------------------------------------------------- happy paths
def test_hypo3d_loads_every_question(hypo3d_files):
    path, images, data = hypo3d_files
    samples = load_hypo3d(path, images)
    assert len(samples) == sum(len(c["questions_answers"]) for ch in data.values() for c in ch)
    s = samples[1]
    assert s.benchmark == "hypo3d" and s.id == "00001" and s.scene_id == "scene0000_00"
    assert s.question_type == ["Direction", "Semantic"]  # space-separated multi-label
    assert s.answers == ["two"] and s.answer == "two"
    assert s.context["change_type"] == "Movement" and s.context["change_type_raw"] == "Object Movement Change"
    assert s.image.endswith("scene0000_00.png")


def test_hypo3d_without_images_dir_is_text_only(hypo3d_files):
    path, _, _ = hypo3d_files
    assert all(s.image is None for s in load_hypo3d(path))


def test_change_category_words():
    assert change_category("Object Movement Change") == "Movement"
    assert change_category("Replacement") == "Replacement"
    assert change_category("attribute change") == "Attribute"
    assert change_category("Something Else") is None


def test_axis_definitions_csv_and_xlsx_give_the_same_orientation(tmp_path, hypo3d_files):
    import openpyxl

    rows = [["scene_id", "Front", "Back", "Left", "Right"], ["scene0000_00", "door", "", "window", ""],
            ["scene0001_00", "", "tv", "", "shelf"]]
    csv_path = tmp_path / "axis.csv"
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    wb = openpyxl.Workbook()
    wb.active.title = "Sheet1"
    for r in rows:
        wb.active.append([c or None for c in r])  # empty cells in a real xlsx are None
    xlsx_path = tmp_path / "axis.xlsx"
    wb.save(xlsx_path)
    a, b = load_axis_definitions(csv_path), load_axis_definitions(xlsx_path)
    assert a == b == {"scene0000_00": {"Front": "door", "Left": "window"}, "scene0001_00": {"Back": "tv", "Right": "shelf"}}
    assert orientation_sentence(a["scene0000_00"]) == (
        "The door was located at the front of the scene. The window was located at the left of the scene."
    )
    path, images, _ = hypo3d_files
    samples = load_hypo3d(path, images, xlsx_path)
    assert samples[0].context["orientation"].startswith("The door was located at the front")
    assert [s for s in samples if s.scene_id == "scene0002_00"][0].context["orientation"] == ""


def test_axis_definitions_wrong_sheet_or_columns(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.title = "Axes"
    wb.active.append(["scene_id", "Front"])
    wb.save(tmp_path / "a.xlsx")
    with pytest.raises(DataError, match="no sheet 'Sheet1'"):
        load_axis_definitions(tmp_path / "a.xlsx")
    (tmp_path / "b.csv").write_text("scene_id,Front,Back\nscene0,door,\n")
    with pytest.raises(DataError, match=r"b\.csv: line 1: missing column\(s\) Left, Right"):
        load_axis_definitions(tmp_path / "b.csv")


def test_scanqa_flat_and_grouped_layouts_agree(tmp_path, scanqa_files):
    path, images, data = scanqa_files
    flat = load_scanqa(path, images)
    grouped = {}
    for rec in data:
        grouped.setdefault(rec["scene_id"], []).append({k: v for k, v in rec.items() if k != "scene_id"})
    gpath = write_json(tmp_path / "grouped.json", grouped)
    assert [s.to_dict() for s in load_scanqa(gpath, images)] == [s.to_dict() for s in flat]
    assert flat[0].answers == ["brown chair", "chair"] and flat[0].context["object_names"] == ["chair"]


def test_format_detection(hypo3d_files, scanqa_files):
    assert detect_benchmark(hypo3d_files[2]) == "hypo3d"
    assert detect_benchmark(scanqa_files[2]) == "scanqa"
    assert load_samples(hypo3d_files[0])[0].benchmark == "hypo3d"
    assert load_samples(scanqa_files[0])[0].benchmark == "scanqa"


# ---------------------------------------------------------------- bad input: one line per problem
def _errors(fn, *args) -> list[str]:
    with pytest.raises(DataError) as e:
        fn(*args)
    return e.value.render().splitlines()


def test_malformed_json_names_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "scene0": [\n    {"context_change": "x",,}\n  ]\n}\n')
    (line,) = _errors(load_hypo3d, p)
    assert line.startswith(f"{p}: line 3 col ") and "malformed JSON" in line


def test_hypo3d_all_problems_listed_not_just_the_first(tmp_path):
    data = hypo3d_data(n_scenes=3)
    del data["scene0000_00"][0]["questions_answers"][0]["answer"]  # missing key
    data["scene0001_00"][1]["questions_answers"][1]["question"] = 7  # wrong type
    data["scene0002_00"][0]["questions_answers"][0]["answer"] = "  "  # empty answer
    data["scene0002_00"][1]["change_type"] = "Object Teleport Change"  # unknown category
    data["scene0002_00"][0]["questions_answers"][1]["question_id"] = "00000"  # duplicate id
    p = write_json(tmp_path / "h.json", data)
    lines = _errors(load_hypo3d, p)
    text = "\n".join(lines)
    assert len(lines) == 5, text
    assert all(line.startswith(f"{p}: ") for line in lines)
    assert "scene0000_00[0].questions_answers[0] (question_id '00000'): missing key 'answer'" in text
    assert "scene0001_00[1].questions_answers[1] (question_id '00007').question: expected a string, got int" in text
    assert "scene0002_00[0].questions_answers[0] (question_id '00008').answer: empty string" in text
    assert "scene0002_00[1].change_type: 'Object Teleport Change' names none of" in text
    assert "duplicate id '00000' (first at scene0000_00[0].questions_answers[0]" in text


def test_hypo3d_wrong_top_level_types(tmp_path):
    p = write_json(tmp_path / "h.json", [1, 2])
    assert "top level: expected an object" in _errors(load_hypo3d, p)[0]
    p = write_json(tmp_path / "h2.json", {"s0": {"context_change": "x"}, "s1": [{"context_change": "a", "change_type": "Object Removal Change"}]})
    lines = _errors(load_hypo3d, p)
    assert "s0: expected a list of changes, got dict" in lines[0]
    assert "s1[0]: missing key 'questions_answers'" in lines[1]


def test_missing_image_and_escaping_path(tmp_path):
    data = hypo3d_data(n_scenes=2)
    data["../../etc/passwd"] = data.pop("scene0001_00")
    p = write_json(tmp_path / "h.json", data)
    images = write_images(tmp_path / "images", [])  # no images at all
    lines = _errors(load_hypo3d, p, images)
    assert "scene0000_00: image not found" in lines[0]
    assert "../../etc/passwd: image path" in lines[1] and "escapes the images dir" in lines[1]


def test_scanqa_bad_records(tmp_path):
    data = scanqa_data(n_scenes=2, per_scene=2)
    data[0]["answers"] = []
    data[1]["answers"] = "chair"
    del data[2]["question"]
    data[3]["object_ids"] = 3
    data.append(dict(data[2], question="q?"))  # duplicate question_id
    p = write_json(tmp_path / "s.json", data)
    text = "\n".join(_errors(load_scanqa, p))
    assert "[0] (question_id 'train-scene0000-0').answers: empty answers" in text
    assert "[1] (question_id 'train-scene0000-1').answers: expected a list of strings" in text
    assert "[2] (question_id 'train-scene0001-0'): missing key 'question'" in text
    assert "[3] (question_id 'train-scene0001-1').object_ids: expected a list, got int" in text
    assert "duplicate id 'train-scene0001-0'" in text


def test_error_list_is_capped(tmp_path):
    data = scanqa_data(n_scenes=30, per_scene=3)
    for rec in data:
        rec["answers"] = []
    lines = _errors(load_scanqa, write_json(tmp_path / "s.json", data))
    assert len(lines) == 51 and lines[-1] == "... and 40 more problems"


# ---------------------------------------------------------------- the CLI: exit 2, nothing written
def test_validate_cli_ok_and_bad(tmp_path, hypo3d_files):
    path, images, data = hypo3d_files
    ok = run_vlm("validate", path, "--images_dir", images)
    assert ok.returncode == 0, ok.stderr
    assert "24 questions, 6 scenes" in ok.stdout
    data["scene0000_00"][0]["questions_answers"][0]["answer"] = ""
    bad = write_json(tmp_path / "bad.json", data)
    r = run_vlm("validate", bad, "--images_dir", images)
    assert r.returncode == 2
    assert r.stderr.strip() == f"{bad}: scene0000_00[0].questions_answers[0] (question_id '00000').answer: empty string"
    assert "Traceback" not in r.stderr


def test_split_cli_refuses_bad_input_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = tmp_path / "out"
    r = run_vlm("split", bad, "--out_dir", out)
    assert r.returncode == 2 and "malformed JSON" in r.stderr
    assert not out.exists()


def test_unknown_stage_and_help():
    r = run_vlm("nope")
    assert r.returncode == 2 and "unknown stage 'nope'" in r.stderr
    r = run_vlm("--help")
    assert r.returncode == 0 and "split" in r.stdout and "metrics" in r.stdout
    r = run_vlm("split", "--help")
    assert r.returncode == 0 and "--group_by" in r.stdout and "positionally" in r.stdout


def test_yaml_config_supplies_options(tmp_path, hypo3d_files):
    path, _, _ = hypo3d_files
    cfg = tmp_path / "split.yaml"
    cfg.write_text(f"input: {path}\nout_dir: {tmp_path / 'o'}\nseed: 3\n")
    r = run_vlm("split", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o" / "split_manifest.json").read_text())["seed"] == 3
    cfg.write_text("inptu: x\n")
    r = run_vlm("split", "--config", cfg)
    assert r.returncode == 2 and f"{cfg}: key 'inptu': unknown option" in r.stderr
