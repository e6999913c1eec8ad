"""COCO Captions: loader on the committed toy sample (COCO's own layout), detection ahead of ScanQA's permissive
one, every bad-structure class as one line each, the no-caption warning, scoring against pycocoevalcap run
directly (COCOEvalCap's pipeline), the recipes, and the validate / split / metrics CLIs."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from helpers import REPO, write_json

from vlm.benchmarks import BENCHMARKS, default_images_dir, detect_benchmark, detect_file, load_samples
from vlm.benchmarks import coco_captions as cc
from vlm.data import toyworld
from vlm.data.errors import DataError

SAMPLE = REPO / "coco_dataset" / "sample"
ANNOTATIONS = SAMPLE / "annotations" / "captions_val2017.json"
OTHER_SAMPLES = {
    "hypo3d": REPO / "hypo_dataset" / "sample" / "hypo3d.json",
    "scanqa": REPO / "scanqa_dataset" / "sample" / "scanqa.json",
    "llava-cot": REPO / "llava_cot_dataset" / "sample" / "train.jsonl",
    "aokvqa": REPO / "aokvqa_dataset" / "sample" / "aokvqa_val.json",
}


def run_cli(capsys, *argv):
    from vlm.__main__ import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def captions_file(images=None, annotations=None, **extra) -> dict:
    """A small, valid captions file: images 1 and 2, two captions each."""
    return {
        "info": {"description": "test"}, "licenses": [],
        "images": images if images is not None else [
            {"id": 1, "file_name": "000000000001.jpg", "height": 4, "width": 4},
            {"id": 2, "file_name": "000000000002.jpg", "height": 4, "width": 4}],
        "annotations": annotations if annotations is not None else [
            {"id": 10, "image_id": 1, "caption": "A red chair."}, {"id": 11, "image_id": 2, "caption": "A blue bed. "},
            {"id": 12, "image_id": 1, "caption": "A chair that is red.\n"}, {"id": 13, "image_id": 2, "caption": "A bed."}],
        **extra,
    }


# ---------------------------------------------------------------- the toy sample
def test_toy_sample_loads_one_sample_per_image():
    data = json.loads(ANNOTATIONS.read_text())
    samples = load_samples(ANNOTATIONS, images_dir=default_images_dir(ANNOTATIONS))
    assert len(samples) == len(data["images"]) == 25 and len(data["annotations"]) == 125
    for s, image in zip(samples, data["images"]):
        assert s.benchmark == "coco-captions" and s.id == s.scene_id == str(image["id"])
        assert s.question == cc.CAPTION_PROMPT and s.question_type == []
        assert s.answers == [a["caption"] for a in data["annotations"] if a["image_id"] == image["id"]]
        assert len(s.answers) == toyworld.COCO_CAPTIONS_PER_IMAGE
        assert s.answers[0].startswith("A top view of a room with ")  # the canonical caption comes first
        assert s.image == str((SAMPLE / "val2017" / image["file_name"]).resolve())
    quirky = [a for s in samples for a in s.answers if a != a.rstrip()]
    assert quirky and all(a.rstrip() in a for a in quirky)  # trailing space / newline kept as written
    # annotations interleave the images, as in the real file
    assert data["annotations"][0]["image_id"] != data["annotations"][1]["image_id"]


def test_toy_sample_is_the_generator_output():
    data, files = toyworld.build_coco_captions(seed=0, scenes=25)
    assert toyworld.json_bytes(data) == ANNOTATIONS.read_bytes()
    assert sorted(files) == sorted(p.name for p in (SAMPLE / "val2017").iterdir())
    assert toyworld.build_coco_captions(seed=1, scenes=2)[0] != toyworld.build_coco_captions(seed=0, scenes=2)[0]
    # rooms of their own: no image id (= scene index) of the other toy samples, which use scenes 0..
    assert min(image["id"] for image in data["images"]) >= toyworld.COCO_FIRST_SCENE


def test_toy_captions_describe_the_room():
    scene = toyworld.generate_scene(toyworld.scene_rng(0, 1000, "scene"), 1000)
    captions = toyworld.toy_captions(scene, toyworld.scene_rng(0, 1000, "coco"))
    assert len(captions) == len(set(captions)) == toyworld.COCO_CAPTIONS_PER_IMAGE
    for o in scene.objects:
        assert o.name in captions[0] and o.kind in captions[1] + captions[2] + captions[3] + captions[4]


def test_images_dir_layouts(tmp_path):
    # COCO's layout: ROOT/annotations/captions_val2017.json -> ROOT/val2017
    assert default_images_dir(ANNOTATIONS) == str(SAMPLE / "val2017")
    by_folder = load_samples(ANNOTATIONS, images_dir=SAMPLE / "val2017")
    assert [s.image for s in load_samples(ANNOTATIONS, images_dir=SAMPLE)] == [s.image for s in by_folder]  # a COCO root
    # val2017/ next to the file, or the images next to the file itself (a split file)
    shutil.copy(ANNOTATIONS, tmp_path / "captions_val2017.json")
    assert default_images_dir(tmp_path / "captions_val2017.json") == str(tmp_path)
    (tmp_path / "val2017").mkdir()
    assert default_images_dir(tmp_path / "captions_val2017.json") == str(tmp_path / "val2017")
    write_json(tmp_path / "test.json", captions_file())
    assert default_images_dir(tmp_path / "test.json") == str(tmp_path)


# ---------------------------------------------------------------- detection
def test_detected_as_coco_not_scanqa():
    data = json.loads(ANNOTATIONS.read_text())
    assert BENCHMARKS["scanqa"].claims(data)  # ScanQA's scene-grouped detection would take it ('licenses')...
    assert detect_benchmark(data) == detect_file(ANNOTATIONS) == "coco-captions"  # ...but COCO is asked first
    assert detect_benchmark(captions_file(annotations=[])) == "coco-captions"
    instances = captions_file(annotations=[{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1], "segmentation": []}])
    assert not BENCHMARKS["coco-captions"].claims(instances)  # COCO's detection files are no caption files


@pytest.mark.parametrize("bench", list(OTHER_SAMPLES))
def test_other_samples_detected_as_before(bench):
    assert detect_file(OTHER_SAMPLES[bench]) == bench


# ---------------------------------------------------------------- strict structure, lenient quirks
def test_every_structure_problem_is_one_line(tmp_path):
    data = captions_file(
        images=[{"id": 1, "file_name": "a.jpg"}, {"id": "2", "file_name": "b.jpg"}, {"file_name": "c.jpg"},
                {"id": 1, "file_name": "d.jpg"}, "image"],
        annotations=[{"id": 10, "image_id": 1, "caption": "A chair."}, {"id": 11, "image_id": 42, "caption": "A bed."},
                     {"id": 12, "image_id": 1, "caption": None}, {"id": 10, "image_id": 1, "caption": "Again."},
                     {"id": 13, "caption": "No image."}, {"id": 14, "image_id": 1, "caption": "  "}])
    path = write_json(tmp_path / "captions_val2017.json", data)
    with pytest.raises(DataError) as e:
        load_samples(path)
    assert str(e.value).splitlines() == [f"{path}: {line}" for line in (
        "images[1].id: expected an integer, got str",
        "images[2]: missing key 'id'",
        "images[4]: expected an object, got str",
        "annotations[2] (id 12).caption: expected a string, got NoneType",
        "annotations[4] (id 13): missing key 'image_id'",
        "images[3] (id 1): duplicate image id 1 (first at images[0] (id 1))",
        "annotations[3] (id 10): duplicate annotation id 10 (first at annotations[0] (id 10))",
        "annotations[1] (id 11).image_id: image_id 42 is not among the images",
        "annotations[5] (id 14).caption: empty caption",
    )]
    for broken, line in (([], "top level: expected an object with 'images' and 'annotations', got list"),
                         ({"images": []}, "top level: missing key 'annotations'"),
                         ({"images": {}, "annotations": []}, "images: expected a list, got dict")):
        path = write_json(tmp_path / "broken.json", broken)
        with pytest.raises(DataError) as e:
            BENCHMARKS["coco-captions"].load(path)
        assert str(e.value) == f"{path}: {line}"


def test_missing_image_file_is_named(tmp_path):
    (tmp_path / "val2017").mkdir()
    path = write_json(tmp_path / "captions_val2017.json", captions_file())
    with pytest.raises(DataError) as e:
        load_samples(path, images_dir=tmp_path / "val2017")
    assert [(loc, msg.split(":")[0]) for _, loc, msg in e.value.lines] == [
        ("images[0] (id 1).file_name", "image not found"), ("images[1] (id 2).file_name", "image not found")]


def test_image_without_captions_is_a_warning(tmp_path, capsys):
    data = captions_file()
    data["images"] += [{"id": 3, "file_name": "c.jpg"}, {"id": 4, "file_name": "d.jpg"}]
    path = write_json(tmp_path / "captions_val2017.json", data)
    rc, out, err = run_cli(capsys, "validate", path)
    assert rc == 0 and "OK — 2 " in out, err
    assert err.splitlines() == [f"{path}: images[2] (id 3): {cc.NO_CAPTIONS}", f"{path}: images[3] (id 4): {cc.NO_CAPTIONS}",
                                f"{path}: 2 warning(s), accepted: 2 x {cc.NO_CAPTIONS}"]
    assert [s.id for s in load_samples(path)] == ["1", "2"]
    assert load_samples(path)[1].answers == ["A blue bed. ", "A bed."]  # as written


# ---------------------------------------------------------------- scoring
PAIRS = [  # (prediction, references): hand-made, trailing space / newline and punctuation included
    ("a red chair in a room", ["A red chair.", "A chair that is red.\n", "There is a red chair in the room. "]),
    ("two beds and a lamp", ["Two beds and a lamp on a grey floor.", "A lamp next to two beds.", "Beds, two of them."]),
    ("a green sofa", ["A green sofa at the back.", "A sofa, green.", "The room holds a green sofa and a plant."]),
    ("an empty room", ["A room with a yellow table.", "A yellow table in the center.", "One table, yellow."]),
]


def official_scores(pairs) -> tuple[dict[str, float], list[float]]:
    """pycocoevalcap's COCOEvalCap.evaluate, step by step: PTBTokenizer on references and predictions (the Java
    one when java is on PATH, as officially), then Bleu(4), Meteor (Java only), Rouge, Cider."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from vlm.metrics.text import java_available, ptb_tokenize

    gts = {i: [{"caption": r} for r in refs] for i, (_, refs) in enumerate(pairs)}
    res = {i: [{"caption": p}] for i, (p, _) in enumerate(pairs)}
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        gts, res = PTBTokenizer().tokenize(gts), PTBTokenizer().tokenize(res)
    else:
        gts = {i: [ptb_tokenize(c["caption"]) for c in caps] for i, caps in gts.items()}
        res = {i: [ptb_tokenize(c["caption"]) for c in caps] for i, caps in res.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, per_image = Cider().compute_score(gts, res)
    out = dict(zip(("bleu-1", "bleu-2", "bleu-3", "bleu-4"), bleu)) | {"rouge-l": rouge, "cider": cider}
    if java_available():
        from pycocoevalcap.meteor.meteor import Meteor

        from vlm.metrics.text import stop_meteor

        meteor = Meteor()
        out["meteor"] = meteor.compute_score(gts, res)[0]
        stop_meteor(meteor)
    return out, [float(x) for x in per_image]


def records(pairs):
    return [{"id": str(i), "benchmark": "coco-captions", "prediction": p, "references": refs, "question_type": []}
            for i, (p, refs) in enumerate(pairs)]


def test_scores_equal_pycocoevalcap():
    from vlm.metrics import compute_metrics, score_records

    official, official_cider = official_scores(PAIRS)
    rows = score_records(records(PAIRS), "coco-captions", use_sbert=False)
    assert [r["cider"] for r in rows] == pytest.approx(official_cider, abs=1e-12)  # per image, the official values
    result = compute_metrics(records(PAIRS), use_sbert=False, n_bootstrap=200)
    overall = result["overall"]
    for key, value in official.items():
        assert overall[key] == pytest.approx(100 * value, abs=1e-3), key
    assert result["ci"]["cider"][0] <= overall["cider"] <= result["ci"]["cider"][1]  # per-image values carry the CI
    assert sum(official_cider) / len(official_cider) == pytest.approx(official["cider"], abs=1e-12)  # mean == corpus
    assert set(result["ci"]) == {"cider", "rouge-l"}  # BLEU / METEOR are corpus values only
    assert BENCHMARKS["coco-captions"].headline == "cider"


def test_perfect_captions_and_sbert():
    from vlm.metrics import score_records

    pairs = [(refs[0], refs) for _, refs in PAIRS]
    rows = score_records(records(pairs), "coco-captions")
    assert all(r["sbert"] == pytest.approx(1.0, abs=1e-5) for r in rows)  # the best reference is the prediction
    worse = score_records(records(PAIRS), "coco-captions")
    assert sum(r["cider"] for r in rows) > sum(r["cider"] for r in worse)
    assert all(0.0 <= r["rouge-l"] <= 1.0 and not math.isnan(r["cider"]) for r in worse)


# ---------------------------------------------------------------- recipes
def test_caption_recipes_use_the_task_text():
    from vlm.recipes import load_recipe

    sample = load_samples(ANNOTATIONS)[0]
    direct = load_recipe("caption").conversation(sample, [])
    assert direct[0]["content"][-1]["text"] == cc.CAPTION_PROMPT  # no "single word or short phrase"
    scratch = load_recipe("caption-scratchpad")
    conv = scratch.conversation(sample, ["A bed and a lamp."])
    assert conv[0]["content"][-1]["text"].startswith(cc.CAPTION_PROMPT + "\n")
    assert "word" not in conv[-1]["content"][-1]["text"] and cc.CAPTION_PROMPT in conv[-1]["content"][-1]["text"]
    assert scratch.answer(["reasoning", "A bed and a lamp."]) == "A bed and a lamp."
    assert load_recipe("caption").gold(sample) == [sample.answers[0]]  # fine-tuning on captions: the canonical one


# ---------------------------------------------------------------- CLIs
def test_validate_split_and_metrics_cli(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "validate", ANNOTATIONS)
    assert rc == 0 and "OK — 25 " in out and "(coco-captions)" in out and not err, err
    rc, out, err = run_cli(capsys, "validate", ANNOTATIONS, "--images_dir", SAMPLE)
    assert rc == 0 and "images: 25/25" in out, err

    rc, out, err = run_cli(capsys, "split", ANNOTATIONS, "--out_dir", tmp_path, "--seed", 3)
    assert rc == 0, err
    original = json.loads(ANNOTATIONS.read_text())
    parts = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("train", "val", "test")}
    ids = {n: [im["id"] for im in d["images"]] for n, d in parts.items()}
    assert sorted(i for v in ids.values() for i in v) == sorted(im["id"] for im in original["images"])  # image-disjoint, all
    for name, part in parts.items():
        assert part["info"] == original["info"] and part["licenses"] == original["licenses"]
        assert part["annotations"] == [a for a in original["annotations"] if a["image_id"] in set(ids[name])]
        samples = load_samples(tmp_path / f"{name}.json", images_dir=SAMPLE / "val2017")  # a valid captions file
        assert [s.id for s in samples] == [str(i) for i in ids[name]]
    manifest = json.loads((tmp_path / "split_manifest.json").read_text())
    assert manifest["benchmark"] == "coco-captions" and sum(s["questions"] for s in manifest["splits"].values()) == 25

    from vlm.metrics import prediction_record

    test = load_samples(tmp_path / "test.json")
    preds = tmp_path / "predictions.jsonl"
    preds.write_text("".join(json.dumps(prediction_record(s, s.answers[1])) + "\n" for s in test))
    rc, out, err = run_cli(capsys, "metrics", preds, "--no_sbert", "--n_bootstrap", 50)
    assert rc == 0, err
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["benchmark"] == "coco-captions" and result["n"] == len(test)
    assert {"cider", "rouge-l", "bleu-1", "bleu-4", "meteor"} <= set(result["overall"]) and "cider" in result["ci"]
    assert "cider" in out
