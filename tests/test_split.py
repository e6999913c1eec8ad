"""Seeded, scene-disjoint splitting in the input's own format (python -m vlm split, dataset_split.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO, hypo3d_data, scanqa_data, write_json
from vlm.data.errors import DataError
from vlm.data.split import group_counts
from vlm.stages import split

SPLIT_SCRIPT = REPO / "hypo_dataset" / "dataset_split.py"


def run_split(src, out, **kw):
    cfg = split.Config(input=str(src), out_dir=str(out), **kw)
    assert split.main(cfg) == 0
    return {n: json.loads((out / f"{n}.json").read_text()) for n in cfg.names}


def hypo_qids(part):
    return [qa["question_id"] for ch in part.values() for c in ch for qa in c["questions_answers"]]


def test_group_counts_largest_remainder_and_no_empty_split():
    assert group_counts(10, [0.8, 0.1, 0.1]) == [8, 1, 1]
    assert group_counts(7, [0.5, 0.25, 0.25]) == [3, 2, 2]  # 3.5, 1.75, 1.75: the two .75 remainders win
    assert group_counts(4, [0.5, 0.25, 0.25]) == [2, 1, 1]
    assert group_counts(5, [0.4, 0.3, 0.3]) == [2, 2, 1]  # 2, 1.5, 1.5: a tie goes to the earlier split
    assert group_counts(6, [0.8, 0.1, 0.1]) == [4, 1, 1]  # 0.6 rounds to 0 -> takes one from train
    assert group_counts(2, [0.8, 0.1, 0.1])[2] == 0  # too few groups: reported as an error by assign


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    src = write_json(tmp_path / "h.json", hypo3d_data(n_scenes=20))
    run_split(src, tmp_path / "a", seed=7)
    run_split(src, tmp_path / "b", seed=7)
    run_split(src, tmp_path / "c", seed=8)
    for name in ("train.json", "val.json", "test.json", "split_manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "test.json").read_bytes() != (tmp_path / "c" / "test.json").read_bytes()


def test_scene_disjoint_and_complete_hypo3d(tmp_path):
    data = hypo3d_data(n_scenes=20)
    src = write_json(tmp_path / "h.json", data)
    parts = run_split(src, tmp_path / "o", ratios=[0.6, 0.2, 0.2])
    scenes = [set(p) for p in parts.values()]
    assert not (scenes[0] & scenes[1] or scenes[0] & scenes[2] or scenes[1] & scenes[2])
    assert [len(s) for s in scenes] == [12, 4, 4]
    assert sorted(q for p in parts.values() for q in hypo_qids(p)) == sorted(hypo_qids(data))
    # Output keeps the input's format: every change entry is a copy of the original's fields.
    sid = next(iter(parts["train"]))
    assert parts["train"][sid] == data[sid]
    manifest = json.loads((tmp_path / "o" / "split_manifest.json").read_text())
    assert manifest["splits"]["val"] == {"file": "val.json", "questions": 16, "scenes": 4}


def test_group_by_change_and_none(tmp_path):
    data = hypo3d_data(n_scenes=4, changes=3, qas=2)
    src = write_json(tmp_path / "h.json", data)
    parts = run_split(src, tmp_path / "c", group_by="change", ratios=[0.5, 0.25, 0.25])
    changes = [{(sid, c["context_change"]) for sid, ch in p.items() for c in ch} for p in parts.values()]
    assert not (changes[0] & changes[1] or changes[0] & changes[2] or changes[1] & changes[2])
    assert all(len(c["questions_answers"]) == 2 for p in parts.values() for ch in p.values() for c in ch)
    parts = run_split(src, tmp_path / "n", group_by="none", ratios=[0.5, 0.25, 0.25])
    assert [len(hypo_qids(p)) for p in parts.values()] == [12, 6, 6]


@pytest.mark.parametrize("grouped", [False, True])
def test_scanqa_both_layouts_scene_disjoint(tmp_path, grouped):
    flat = scanqa_data(n_scenes=10)
    data = flat
    if grouped:
        data = {}
        for rec in flat:
            data.setdefault(rec["scene_id"], []).append(rec)
    src = write_json(tmp_path / "s.json", data)
    parts = run_split(src, tmp_path / "o")
    assert all(isinstance(p, type(data)) for p in parts.values())
    recs = [[r for rs in p.values() for r in rs] if grouped else p for p in parts.values()]
    scenes = [{r["scene_id"] for r in rs} for rs in recs]
    assert not (scenes[0] & scenes[1] or scenes[0] & scenes[2] or scenes[1] & scenes[2])
    assert sum(map(len, recs)) == len(flat)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"ratios": [0.5, 0.3, 0.3]}, "ratios must sum to 1"),
        ({"ratios": [1.0, 0.0, 0.0]}, "every ratio must be > 0"),
        ({"ratios": [0.5, 0.5]}, "2 ratios for 3 split names"),
        ({"group_by": "change"}, "'change' groups need Hypo3D"),
    ],
)
def test_bad_ratios_and_options_are_clear_errors(tmp_path, kw, message):
    src = write_json(tmp_path / "s.json", scanqa_data(n_scenes=10))
    with pytest.raises(DataError, match=message):
        split.main(split.Config(input=str(src), out_dir=str(tmp_path / "o"), **kw))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_too_few_scenes_is_an_error(tmp_path):
    src = write_json(tmp_path / "s.json", scanqa_data(n_scenes=2))
    with pytest.raises(DataError, match="would be empty: 2 scene groups"):
        split.main(split.Config(input=str(src), out_dir=str(tmp_path / "o")))


def test_dataset_split_script_modes_1_and_2(tmp_path):
    data = hypo3d_data(n_scenes=20)
    src = write_json(tmp_path / "full.json", data)
    run = tmp_path / "run"

    def script(*args):
        r = subprocess.run([sys.executable, str(SPLIT_SCRIPT), *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r

    script(0.4, 0.1, 0.5, src, 1, run, "--seed", 3)
    out = run / "split"
    pool = json.loads((out / "cot_pool.json").read_text())
    teacher = json.loads((out / "teacher_train.json").read_text()) | json.loads((out / "teacher_val.json").read_text())
    assert not set(pool) & set(teacher) and len(pool) == 10
    script(0.6, 0.2, 0.2, out / "cot_pool.json", 2, run, "--seed", 3)
    cot = {n: json.loads((out / f"cot_{n}.json").read_text()) for n in ("train", "val", "test")}
    assert sorted(q for p in cot.values() for q in hypo_qids(p)) == sorted(hypo_qids(pool))
    assert (out / "mode1_manifest.json").is_file() and (out / "mode2_manifest.json").is_file()
    # The ScanQA copy is the same script (a symlink), format auto-detected.
    scan = write_json(tmp_path / "scan.json", scanqa_data(n_scenes=10))
    r = subprocess.run([sys.executable, str(REPO / "scanqa_dataset" / "dataset_split.py"), "0.4", "0.1", "0.5", str(scan), "1",
                        str(tmp_path / "r2")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r2" / "split" / "mode1_manifest.json").read_text())["benchmark"] == "scanqa"


def test_dataset_split_script_bad_ratios_exit_2(tmp_path):
    src = write_json(tmp_path / "full.json", hypo3d_data(n_scenes=20))
    r = subprocess.run([sys.executable, str(SPLIT_SCRIPT), "0.5", "0.5", "0.5", str(src), "1", str(tmp_path / "run")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "ratios must sum to 1" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
