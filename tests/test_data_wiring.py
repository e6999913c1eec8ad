"""The four formats behind one data layer: detection from the file, load_samples / load_split with images (both
A-OKVQA image-folder styles), default image folders, splitting A-OKVQA and LLaVA-CoT in their own formats, and
the validate / prior CLIs on each committed sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, run_vlm

from vlm.data import BENCHMARKS, default_images_dir, detect_benchmark, detect_file, load_samples, load_split
from vlm.benchmarks.aokvqa import rationale_target
from vlm.data.errors import DataError
from vlm.stages import split

SAMPLES = {
    "hypo3d": REPO / "hypo_dataset" / "sample" / "hypo3d.json",
    "scanqa": REPO / "scanqa_dataset" / "sample" / "scanqa.json",
    "llava-cot": REPO / "llava_cot_dataset" / "sample" / "train.jsonl",
    "aokvqa": REPO / "aokvqa_dataset" / "sample" / "aokvqa_val.json",
    "coco-captions": REPO / "coco_dataset" / "sample" / "annotations" / "captions_val2017.json",
}
AOKVQA_DIR = SAMPLES["aokvqa"].parent
LLAVA_IMAGES = SAMPLES["llava-cot"].parent / "images"


def test_every_format_is_wired():
    assert set(BENCHMARKS) == set(SAMPLES)


# ---------------------------------------------------------------- detection
@pytest.mark.parametrize("bench", list(SAMPLES))
def test_committed_samples_are_detected_from_the_file(bench):
    path = SAMPLES[bench]
    assert detect_file(path) == bench
    samples = load_samples(path)  # auto
    assert samples and {s.benchmark for s in samples} == {bench}
    assert all(s.image is None for s in samples)  # no images dir: text only
    if path.suffix == ".json":
        assert detect_benchmark(json.loads(path.read_text())) == bench


def test_lists_are_not_all_scanqa(tmp_path):
    aok = json.loads(SAMPLES["aokvqa"].read_text())
    llava = [json.loads(line) for line in SAMPLES["llava-cot"].read_text().splitlines()]
    assert detect_benchmark(aok) == "aokvqa" and detect_benchmark(llava) == "llava-cot"
    assert detect_benchmark([{"bad": 1}, *aok[:3]]) == "aokvqa"  # one broken record does not flip the verdict
    assert detect_benchmark([{"scene_id": "s", "question_id": "q", "question": "?", "answers": ["a"]}]) == "scanqa"
    # LLaVA-CoT as a JSON list, and JSON lines under a .json name
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(llava[:3]))
    lines = tmp_path / "lines.json"
    lines.write_text("".join(json.dumps(r) + "\n" for r in llava[:3]))
    for path in (listed, lines):
        assert detect_file(path) == "llava-cot"
        assert [s.id for s in load_samples(path)] == [r["id"] for r in llava[:3]]


def test_detection_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question": "x",}]')
    with pytest.raises(DataError, match=r"bad\.json: line 1 col \d+: malformed JSON"):
        detect_file(bad)
    with pytest.raises(DataError, match="file not found"):
        load_samples(tmp_path / "nope.jsonl")
    odd = tmp_path / "odd.json"
    odd.write_text('"just a string"')
    assert detect_file(odd) is None
    with pytest.raises(DataError, match="cannot tell the benchmark format"):
        load_samples(odd)
    with pytest.raises(DataError, match="unknown benchmark 'coco'"):
        load_samples(SAMPLES["aokvqa"], "coco")


# ---------------------------------------------------------------- images
def test_load_split_llava_cot_with_images():
    samples = load_split(SAMPLES["llava-cot"], images_dir=LLAVA_IMAGES)
    assert len(samples) == 100 and all(Path(s.image).is_file() for s in samples)
    assert samples[0].scene_id == "toy/toy0000" and Path(samples[0].image) == (LLAVA_IMAGES / "toy" / "toy0000.png").resolve()
    with pytest.raises(DataError, match="normal mode needs images"):
        load_split(SAMPLES["llava-cot"])


def test_load_split_aokvqa_coco_root_and_direct_folder(tmp_path):
    by_root = load_split(SAMPLES["aokvqa"], images_dir=AOKVQA_DIR)  # holds val2017/: a COCO root
    direct = load_split(SAMPLES["aokvqa"], images_dir=AOKVQA_DIR / "val2017")  # the image folder itself
    assert [s.to_dict() for s in by_root] == [s.to_dict() for s in direct]
    assert all(Path(s.image).parent == (AOKVQA_DIR / "val2017").resolve() for s in direct)
    for s in direct:
        assert s.context["rationale_cot"] == rationale_target(s) == f"{s.context['rationales'][0]}\nAnswer: {s.answers[0]}"
    # A split file's name says nothing about the COCO split: its images dir is the folder itself.
    part = tmp_path / "cot_test.json"
    part.write_text(json.dumps(json.loads(SAMPLES["aokvqa"].read_text())[:5]))
    samples = load_split(part, images_dir=AOKVQA_DIR / "val2017")
    assert [s.image for s in samples] == [s.image for s in direct[:5]]
    with pytest.raises(DataError) as e:  # a COCO root is no image folder for it: named, per question
        load_split(part, images_dir=AOKVQA_DIR)
    assert e.value.lines[0][0] == str(part) and "image not found" in e.value.lines[0][2]


@pytest.mark.parametrize("bench", list(SAMPLES))
def test_default_images_dir_of_each_sample_exists(bench):
    images = default_images_dir(SAMPLES[bench], bench)
    assert Path(images).is_dir() and default_images_dir(SAMPLES[bench]) == images  # auto-detected too
    assert load_samples(SAMPLES[bench], images_dir=images)[0].image is not None


def test_default_images_dir_of_an_aokvqa_split_file(tmp_path):
    assert default_images_dir(tmp_path / "cot_test.json", "aokvqa") == str(tmp_path)
    assert default_images_dir(tmp_path / "aokvqa_v1p0_train.json", "aokvqa") == str(tmp_path / "train2017")
    assert default_images_dir(tmp_path / "cot_test.jsonl", "llava-cot") == str(tmp_path / "images")
    with pytest.raises(DataError, match="unknown benchmark"):
        default_images_dir(tmp_path / "x.json", "nope")


# ---------------------------------------------------------------- splitting
def run_split(src, out, **kw):
    cfg = split.Config(input=str(src), out_dir=str(out), **kw)
    assert split.main(cfg) == 0
    return cfg


def test_split_llava_cot_jsonl_keeps_lines_and_images_apart(tmp_path):
    src = SAMPLES["llava-cot"]
    cfg = run_split(src, tmp_path / "a", seed=5)
    run_split(src, tmp_path / "b", seed=5)
    names = [f"{n}.jsonl" for n in cfg.names] + ["split_manifest.json"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    original = src.read_bytes().splitlines(keepends=True)
    manifest = json.loads((tmp_path / "a" / "split_manifest.json").read_text())
    images, total = [], 0
    for n in cfg.names:
        part = tmp_path / "a" / f"{n}.jsonl"
        lines = part.read_bytes().splitlines(keepends=True)
        assert lines == [line for line in original if line in set(lines)]  # the input's own lines, in order
        samples = load_samples(part, images_dir=LLAVA_IMAGES)  # parses back, images resolve
        images.append({s.scene_id for s in samples})
        total += len(samples)
        assert manifest["splits"][n] == {"file": f"{n}.jsonl", "questions": len(samples), "scenes": len(images[-1])}
    assert not (images[0] & images[1] or images[0] & images[2] or images[1] & images[2])
    assert total == len(original) == 100 and [len(i) for i in images] == [20, 3, 2]
    run_split(src, tmp_path / "c", seed=6)
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "c" / "test.jsonl").read_bytes()


def test_split_llava_cot_json_list_and_multi_turn_records(tmp_path):
    records = [json.loads(line) for line in SAMPLES["llava-cot"].read_text().splitlines()][:40]
    two = records[0]
    two["conversations"] += [{"from": "human", "value": "And again?"}, dict(two["conversations"][1])]
    src = tmp_path / "llava.json"
    src.write_text(json.dumps(records))
    run_split(src, tmp_path / "o", ratios=[0.5, 0.25, 0.25])
    parts = {n: json.loads((tmp_path / "o" / f"{n}.json").read_text()) for n in ("train", "val", "test")}
    assert sorted(r["id"] for p in parts.values() for r in p) == sorted(r["id"] for r in records)
    manifest = json.loads((tmp_path / "o" / "split_manifest.json").read_text())
    assert sum(s["questions"] for s in manifest["splits"].values()) == 40  # a multi-turn record is one question (its last turn)
    assert {s["file"] for s in manifest["splits"].values()} == {"train.json", "val.json", "test.json"}


def test_split_aokvqa_by_image(tmp_path):
    data = json.loads(SAMPLES["aokvqa"].read_text())
    cfg = run_split(SAMPLES["aokvqa"], tmp_path / "a", seed=3)
    run_split(SAMPLES["aokvqa"], tmp_path / "b", seed=3)
    parts = {}
    for n in cfg.names:
        raw = (tmp_path / "a" / f"{n}.json").read_bytes()
        assert raw == (tmp_path / "b" / f"{n}.json").read_bytes()
        parts[n] = json.loads(raw)
        assert parts[n] == [r for r in data if r in parts[n]]  # original records, original order
        samples = load_samples(tmp_path / "a" / f"{n}.json", images_dir=AOKVQA_DIR / "val2017")
        assert {s.benchmark for s in samples} == {"aokvqa"}
    ids = [{r["image_id"] for r in p} for p in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, parts.values())) == len(data)
    manifest = json.loads((tmp_path / "a" / "split_manifest.json").read_text())
    assert manifest["benchmark"] == "aokvqa" and [s["scenes"] for s in manifest["splits"].values()] == [len(i) for i in ids]


@pytest.mark.parametrize("bench", ["aokvqa", "llava-cot"])
def test_split_group_by_change_is_hypo3d_only(tmp_path, bench):
    with pytest.raises(DataError, match=f"'change' groups need Hypo3D context changes \\({bench} has none\\)"):
        split.main(split.Config(input=str(SAMPLES[bench]), out_dir=str(tmp_path / "o"), group_by="change"))
    assert not (tmp_path / "o").exists()


def test_split_refuses_a_bad_llava_cot_record_and_writes_nothing(tmp_path):
    lines = SAMPLES["llava-cot"].read_text().splitlines(keepends=True)
    bad = json.loads(lines[7])
    bad["conversations"][1]["value"] = bad["conversations"][1]["value"].replace("<CAPTION>", "")
    src = tmp_path / "train.jsonl"
    src.write_text("".join(lines[:7]) + json.dumps(bad) + "\n" + "".join(lines[8:]) + "{oops\n")
    with pytest.raises(DataError) as e:
        split.main(split.Config(input=str(src), out_dir=str(tmp_path / "o")))
    found = [(loc, msg) for _, loc, msg in e.value.lines]
    assert found[0] == (f"line 8 (id {bad['id']})", "unbalanced tag <CAPTION>: 0 <CAPTION>, 1 </CAPTION>")
    assert found[1][0] == f"line {len(lines) + 1}" and found[1][1].startswith("not JSON")
    assert not (tmp_path / "o").exists()


def test_dataset_split_script_on_llava_cot(tmp_path):
    import subprocess
    import sys

    script = REPO / "hypo_dataset" / "dataset_split.py"
    for args in ([0.4, 0.1, 0.5, SAMPLES["llava-cot"], 1], [0.6, 0.2, 0.2, tmp_path / "split" / "cot_pool.jsonl", 2]):
        r = subprocess.run([sys.executable, str(script), *map(str, args), str(tmp_path)], capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
    out = tmp_path / "split"
    pool = set((out / "cot_pool.jsonl").read_bytes().splitlines())
    cot = [set((out / f"cot_{n}.jsonl").read_bytes().splitlines()) for n in ("train", "val", "test")]
    assert set().union(*cot) == pool and sum(map(len, cot)) == len(pool)


# ---------------------------------------------------------------- CLIs
@pytest.mark.parametrize("bench", list(SAMPLES))
def test_validate_cli_on_each_sample(bench):
    path = SAMPLES[bench]
    r = run_vlm("validate", path, "--images_dir", default_images_dir(path, bench))
    assert r.returncode == 0, r.stderr
    assert f"({bench})" in r.stdout and "have an image" in r.stdout


def test_validate_cli_broken_llava_cot_and_aokvqa(tmp_path):
    lines = SAMPLES["llava-cot"].read_text().splitlines(keepends=True)
    llava = tmp_path / "train.jsonl"
    llava.write_text("".join(lines[:2]) + lines[2].replace('"image": "toy/', '"image": "../') + "".join(lines[3:]))
    r = run_vlm("validate", llava, "--images_dir", LLAVA_IMAGES)
    rid = json.loads(lines[2])["id"]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"{llava}: line 3 (id {rid}): image path escapes the image root: ../"), r.stderr
    data = json.loads(SAMPLES["aokvqa"].read_text())
    data[4]["choices"] = data[4]["choices"][:3]
    aok = tmp_path / "aokvqa_val.json"
    aok.write_text(json.dumps(data))
    r = run_vlm("validate", aok)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"{aok}: [4] (question_id '{data[4]['question_id']}').choices: expected 4 strings, got 3"


def test_prior_cli_on_a_llava_cot_split(tmp_path):
    run_split(SAMPLES["llava-cot"], tmp_path / "s")
    out = tmp_path / "p.jsonl"
    r = run_vlm("prior", "--train", tmp_path / "s" / "train.jsonl", "--test", tmp_path / "s" / "test.jsonl", "--out", out)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    test_ids = [s.id for s in load_samples(tmp_path / "s" / "test.jsonl")]
    assert [row["id"] for row in rows] == test_ids and {row["benchmark"] for row in rows} == {"llava-cot"}
    assert all(row["prediction"] for row in rows)

