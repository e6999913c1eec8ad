"""LLaVA-CoT-100k format: record validation (every malformed class counted, never a crash), the strict and
lenient loaders, the committed toy sample, and ``python -m vlm prepare llava-cot`` (join split zip parts,
checksum, resume, extract, corrupt archive → exit 2)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from helpers import REPO, run_vlm

from vlm.__main__ import main as vlm_main
from vlm.benchmarks import llava_cot as lc
from vlm.data import toyworld
from vlm.data.errors import DataError
from vlm.models.base import IGNORE_INDEX
from vlm.stages import prepare

SAMPLE = REPO / "llava_cot_dataset" / "sample"
COT = ("<SUMMARY>Find the chair.</SUMMARY> <CAPTION>A red chair at the front.</CAPTION> "
       "<REASONING>The chair is red.</REASONING> <CONCLUSION>red</CONCLUSION>")


def good(rid="r0", image="coco/train2017/a.jpg", cot=COT, question="<image>\nWhat colour is the chair?"):
    return {"id": rid, "image": image, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": cot}]}


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    for rel in ("coco/train2017/a.jpg", "sqa/train/1/image.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    return root


def with_cot(cot):
    return good(cot=cot)


COT_BLUE = COT.replace("red<", "blue<").replace("red chair", "blue table")


def multi_turn(rid="m", first="What colour is the chair?", second="And the table?"):
    """Two human/gpt pairs, by default in the official generator's layout (no <image> placeholder)."""
    rec = good(rid, question=first)
    rec["conversations"] += [{"from": "human", "value": second}, {"from": "gpt", "value": COT_BLUE}]
    return rec


# Every malformed-record class, with the reason kind it must be counted under.
def bad_cases():
    no_gpt = good()
    no_gpt["conversations"] = no_gpt["conversations"][:1]
    wrong_turn = good()
    wrong_turn["conversations"][1] = "gpt says hi"
    unknown_role = good()
    unknown_role["conversations"][1]["from"] = "assistant"
    return {
        "missing id": ({k: v for k, v in good().items() if k != "id"}, "missing key 'id'"),
        "missing image": ({k: v for k, v in good().items() if k != "image"}, "missing key 'image'"),
        "missing conversations": ({k: v for k, v in good().items() if k != "conversations"}, "missing key 'conversations'"),
        "image not a string": ({**good(), "image": 3}, "wrong type of 'image'"),
        "conversations not a list": ({**good(), "conversations": {"from": "human"}}, "wrong type of 'conversations'"),
        "record not an object": (["id", "image"], "record is not a JSON object"),
        "turn not an object": (wrong_turn, "bad turn"),
        "unknown role": (unknown_role, "unknown role"),
        "no gpt turn": (no_gpt, "no gpt turn"),
        "missing tag": (with_cot(COT.replace("<CAPTION>A red chair at the front.</CAPTION> ", "")), "missing tag <CAPTION>"),
        "tags out of order": (with_cot("<CAPTION>c</CAPTION> <SUMMARY>s</SUMMARY> <REASONING>r</REASONING> "
                                       "<CONCLUSION>x</CONCLUSION>"), "tags out of order"),
        "empty tag": (with_cot(COT.replace("<CONCLUSION>red</CONCLUSION>", "<CONCLUSION>  </CONCLUSION>")), "empty tag <CONCLUSION>"),
        "duplicated tag": (with_cot(COT + " <SUMMARY>again</SUMMARY>"), "duplicated tag <SUMMARY>"),
        "unclosed tag": (with_cot(COT.replace("</REASONING>", "")), "unbalanced tag <REASONING>"),
        "two <image> tokens": (good(question="<image>\n<image>\nWhat?"), "wrong <image> count"),
        "<image> in two turns": (multi_turn(first="<image>\nWhat?", second="<image>\nAnd the table?"), "wrong <image> count"),
        "<image> without an image": ({k: v for k, v in good().items() if k != "image"}, "wrong <image> count"),
        "missing image file": (good(image="coco/train2017/missing.jpg"), "image not found"),
        "path escaping the root": (good(image="../outside.jpg"), "image path escapes the image root"),
        "absolute image path": (good(image="/etc/passwd"), "image path escapes the image root"),
    }


@pytest.mark.parametrize("case", list(bad_cases()))
def test_every_malformed_class_has_its_reason(case, image_root):
    rec, kind = bad_cases()[case]
    reasons = lc.validate_record(copy.deepcopy(rec), image_root)
    assert kind in {lc.reason_kind(r) for r in reasons}, reasons


def test_good_record_and_image_root_none(image_root):
    assert lc.validate_record(good(), image_root) == []
    assert lc.validate_record(good(image="coco/train2017/missing.jpg"), None) == []  # no disk check without a root
    assert lc.validate_record(good(image="../x.jpg"), None) == ["image path escapes the image root: ../x.jpg"]
    assert lc.validate_record({**good(), "id": 7}, image_root) == []  # numeric ids are ids


def test_validate_never_raises_on_junk(image_root):
    for junk in (None, 3, "s", [], {}, {"conversations": [None, 1, {"from": None}]}, {"id": [], "image": {}, "conversations": "x"}):
        assert lc.validate_record(junk, image_root)


def write_jsonl(path: Path, lines) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


@pytest.fixture
def mixed_file(tmp_path, image_root):
    cases = bad_cases()
    lines = [good("g0"), good("g1", image="sqa/train/1/image.png")]
    lines += [dict(rec, id=f"b{i}") if isinstance(rec, dict) and "id" in rec else rec
              for i, (rec, _) in enumerate(cases.values())]
    lines += ["{not json", "", good("g0")]  # a non-JSON line, a blank line (skipped), a duplicate id
    return write_jsonl(tmp_path / "train.jsonl", lines), image_root, cases


def test_scan_counts_every_reason(mixed_file):
    path, root, cases = mixed_file
    report = lc.scan(path, root)
    assert report.total == 2 + len(cases) + 2 and report.good == 2 and report.bad == len(cases) + 2
    for _, kind in cases.values():
        assert report.reasons[kind] >= 1, kind
    assert report.reasons["not JSON"] == 1 and report.reasons["duplicate id"] == 1
    assert report.sources == {"coco": 1, "sqa": 1}
    text = report.render()
    assert "2 good" in text and "not JSON" in text and "line" in text


def test_strict_loader_lists_every_bad_record(mixed_file):
    path, root, cases = mixed_file
    with pytest.raises(DataError) as e:
        lc.load_llava_cot(path, root)
    lines = e.value.lines
    assert {loc.split(" ")[1] for _, loc, _ in lines} >= {str(n) for n in range(3, 3 + len(cases))}  # every bad line
    assert all(f == str(path) for f, _, _ in lines)
    assert any(loc == "line 4 (id b1)" and msg == "missing key 'image'" for _, loc, msg in lines)
    assert any(msg.startswith("not JSON") for _, _, msg in lines)
    assert any(msg.startswith("duplicate id: 'g0'") for _, _, msg in lines)


def test_lenient_loader_skips_bad_records(mixed_file):
    path, root, _ = mixed_file
    samples = lc.load_llava_cot(path, root, strict=False)
    assert [s.id for s in samples] == ["g0", "g1"]
    s = samples[0]
    assert s.benchmark == "llava-cot" and s.question == "What colour is the chair?" and s.answers == ["red"]
    assert s.context["summary"] == "Find the chair." and s.context["caption"] == "A red chair at the front."
    assert s.context["reasoning"] == "The chair is red." and s.context["conclusion"] == "red"
    assert s.context["cot"] == COT and s.context["source"] == "coco"
    assert Path(s.image) == root / "coco/train2017/a.jpg" and s.scene_id == "coco/train2017/a"


def test_json_list_file_and_multi_turn(tmp_path, image_root):
    rec = multi_turn(first="<image>\nWhat colour is the chair?")
    path = tmp_path / "train.json"
    path.write_text(json.dumps([rec, good("x")]))
    samples = lc.load_llava_cot(path, image_root)
    # one sample per record: the last pair is the question and reference, earlier pairs are history
    assert [(s.id, s.question, s.answer) for s in samples] == [("m", "And the table?", "blue"), ("x", "What colour is the chair?", "red")]
    assert samples[0].context["history"] == [["What colour is the chair?", COT]] and samples[0].context["cot"] == COT_BLUE
    assert "history" not in samples[1].context
    rec["conversations"][3]["value"] = "no tags"
    reasons = lc.validate_record(rec, image_root)
    assert "missing tag <SUMMARY>: gpt turn 3" in reasons


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        lc.load_llava_cot(tmp_path / "nope.jsonl")


def test_committed_sample_loads_cleanly():
    report = lc.scan(SAMPLE / "train.jsonl", SAMPLE / "images")
    assert report.total == report.good == 100
    samples = lc.load_llava_cot(SAMPLE / "train.jsonl", SAMPLE / "images")
    assert len({s.id for s in samples}) == 100 and all(Path(s.image).is_file() for s in samples)
    assert all(s.context["source"] == "toy" and s.answer for s in samples)
    records = [json.loads(ln) for ln in (SAMPLE / "train.jsonl").read_text().splitlines()]
    placeholder = [r for r in records if r["conversations"][0]["value"].startswith("<image>\n")]
    multi = [r for r in records if len(r["conversations"]) > 2]
    assert len(placeholder) == 36 and len(multi) == 32  # both layouts: LLaVA-style and the official generator's
    assert all(len(r["conversations"]) == 4 and "<image>" not in json.dumps(r) for r in multi)
    assert sum("history" in s.context for s in samples) == 32
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 2_000_000


def test_sample_generator_is_deterministic():
    a, imgs_a = toyworld.llava_cot_records(seed=0, scenes=3, per_scene=2)
    b, imgs_b = toyworld.llava_cot_records(seed=0, scenes=3, per_scene=2)
    c, _ = toyworld.llava_cot_records(seed=1, scenes=3, per_scene=2)
    assert a == b and imgs_a == imgs_b and a != c
    full = [json.loads(ln) for ln in (SAMPLE / "train.jsonl").read_text().splitlines()]
    assert full[:2] == toyworld.llava_cot_records(seed=0, scenes=1, per_scene=4)[0][:2]  # the committed sample is seed 0


# ---------------------------------------------------------------- prepare: parts, checksum, resume, extract
def make_dataset(root: Path, n_parts: int = 3, suffixes=("aa", "ab", "ac")) -> tuple[bytes, dict[str, bytes]]:
    """A small LLaVA-CoT dataset: train.jsonl + image.zip (stored, so a flipped byte is a CRC error) in parts."""
    records, images = toyworld.llava_cot_records(seed=0, scenes=4, per_scene=2)
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "train.jsonl", records)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for rel, data in images.items():
            zf.writestr(zipfile.ZipInfo(rel, date_time=(2000, 1, 1, 0, 0, 0)), data)
    blob = buf.getvalue()
    step = -(-len(blob) // n_parts)
    for i, suffix in enumerate(suffixes[:n_parts]):
        (root / f"image.zip.part-{suffix}").write_bytes(blob[i * step:(i + 1) * step])
    return blob, images


def run_prepare(root, *extra, capsys=None):
    code = vlm_main(["prepare", "llava-cot", "--root", str(root), *extra])
    out = capsys.readouterr() if capsys else None
    return code, out


def test_natural_part_order_and_gaps(tmp_path):
    for name in ("image.zip.part-10", "image.zip.part-2", "image.zip.part-1", "image.zip.part-aa.md5", "other.zip.part-0"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in prepare.find_parts(tmp_path)] == ["image.zip.part-1", "image.zip.part-2", "image.zip.part-10"]
    assert prepare.missing_parts(prepare.find_parts(tmp_path))[:2] == ["image.zip.part-3", "image.zip.part-4"]
    letters = [tmp_path / f"image.zip.part-{s}" for s in ("aa", "ab", "ad")]
    assert prepare.missing_parts(letters) == ["image.zip.part-ac"]


def test_join_checksum_extract_validate(tmp_path, capsys):
    root = tmp_path / "ds"
    blob, images = make_dataset(root)
    code, out = run_prepare(root, capsys=capsys)
    assert code == 0, out.err
    assert (root / "image.zip").read_bytes() == blob
    sha = hashlib.sha256(blob).hexdigest()
    assert (root / "image.zip.sha256").read_text() == f"{sha}  image.zip\n"
    assert all((root / rel).read_bytes() == data for rel, data in images.items())
    assert "8 records, 8 good, 0 bad" in out.out and f"image root: {root} " in out.out
    # Re-run: nothing joined, hashed or extracted again.
    code, out = run_prepare(root, capsys=capsys)
    assert code == 0 and "already joined" in out.out and "not hashed again" in out.out
    assert f"{len(images)} entries already extracted with the right size: skipped" in out.out


def test_resume_after_partial_join(tmp_path, capsys):
    root = tmp_path / "ds"
    blob, _ = make_dataset(root)
    cut = len((root / "image.zip.part-aa").read_bytes()) + 100  # crosses a part boundary
    (root / prepare.JOINING).write_bytes(blob[:cut])
    code, out = run_prepare(root, capsys=capsys)
    assert code == 0 and f"resuming the join at byte {cut:,}" in out.out
    assert (root / "image.zip").read_bytes() == blob and not (root / prepare.JOINING).exists()
    assert (root / "image.zip.sha256").read_text().split()[0] == hashlib.sha256(blob).hexdigest()


def test_partial_join_that_does_not_match_starts_over(tmp_path, capsys):
    root = tmp_path / "ds"
    blob, _ = make_dataset(root)
    (root / prepare.JOINING).write_bytes(b"\0" * 500)
    code, out = run_prepare(root, capsys=capsys)
    assert code == 0 and "joining from the start" in out.out and (root / "image.zip").read_bytes() == blob


def test_shipped_checksum_is_verified(tmp_path, capsys):
    root = tmp_path / "ds"
    blob, _ = make_dataset(root)
    (root / "image.zip.md5").write_text(f"{hashlib.md5(blob).hexdigest()}  image.zip\n")
    code, out = run_prepare(root, capsys=capsys)
    assert code == 0 and "md5 matches image.zip.md5" in out.out
    other = tmp_path / "bad"
    make_dataset(other)
    (other / "image.zip.sha256").write_text("0" * 64 + "\n")
    code, out = run_prepare(other, capsys=capsys)
    assert code == 2 and "does not match image.zip.sha256" in out.err and len(out.err.strip().splitlines()) == 1


def test_corrupt_part_exits_2_with_one_line(tmp_path, capsys):
    root = tmp_path / "ds"
    make_dataset(root)
    part = root / "image.zip.part-ab"
    original = part.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF  # inside a stored PNG: the entry's CRC fails
    part.write_bytes(bytes(data))
    code, out = run_prepare(root, capsys=capsys)
    assert code == 2 and len(out.err.strip().splitlines()) == 1
    assert out.err.startswith(f"{root / 'image.zip'}: ") and "corrupt" in out.err
    # The user re-downloads the part (same size): image.zip is stale and must be joined again.
    part.write_bytes(original)
    code, out = run_prepare(root, capsys=capsys)
    assert code == 0 and "the parts changed since it was joined: joining again" in out.out


def test_truncated_archive_and_missing_part_exit_2(tmp_path, capsys):
    root = tmp_path / "ds"
    make_dataset(root)
    (root / "image.zip.part-ac").write_bytes(b"")  # the central directory is gone
    code, out = run_prepare(root, capsys=capsys)
    assert code == 2 and "not a valid zip archive" in out.err and len(out.err.strip().splitlines()) == 1
    gap = tmp_path / "gap"
    make_dataset(gap)
    (gap / "image.zip.part-ab").unlink()
    code, out = run_prepare(gap, capsys=capsys)
    assert code == 2 and "missing part(s) image.zip.part-ab" in out.err


def test_zip_slip_is_refused(tmp_path, capsys):
    root = tmp_path / "ds"
    root.mkdir()
    with zipfile.ZipFile(root / "image.zip", "w") as zf:
        zf.writestr("toy/ok.png", b"x")
        zf.writestr("../evil.txt", b"x")
    (root / "train.jsonl").write_text("")
    code, out = run_prepare(root, capsys=capsys)
    assert code == 2 and "zip-slip" in out.err and not (tmp_path / "evil.txt").exists()
    assert not (root / "toy" / "ok.png").exists()  # nothing extracted


def test_nothing_downloaded_exits_2(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text("")
    code, out = run_prepare(tmp_path, capsys=capsys)
    assert code == 2 and "no image.zip.part-*" in out.err and len(out.err.strip().splitlines()) == 1
    code, out = run_prepare(tmp_path, "--check_only", capsys=capsys)
    assert code == 2 and "no extracted image folder" in out.err


def test_check_only_reports_bad_records_and_exits_0(tmp_path, capsys):
    root = tmp_path / "ds"
    make_dataset(root)
    code, out = run_prepare(root, "--check_only", capsys=capsys)
    assert code == 2  # parts only, nothing extracted yet
    assert "run without --check_only" in out.err
    assert run_prepare(root, capsys=capsys)[0] == 0
    with (root / "train.jsonl").open("a") as f:
        f.write("{oops\n" + json.dumps(good("bad", image="toy/none.png")) + "\n")
    code, out = run_prepare(root, "--check_only", capsys=capsys)
    assert code == 0 and "10 records, 8 good, 2 bad" in out.out
    assert "not JSON" in out.out and "image not found" in out.out


def test_prepare_end_to_end_subprocess(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root)
    r = run_vlm("prepare", "llava-cot", "--root", root)
    assert r.returncode == 0, r.stderr
    assert "8 records, 8 good, 0 bad" in r.stdout and (root / "image.zip.sha256").is_file()
    r = run_vlm("prepare", "llava-cot", "--root", tmp_path / "nowhere")
    assert r.returncode == 2 and r.stderr.strip() == f"{tmp_path / 'nowhere'}: -: dataset folder not found"


# ---------------------------------------------------------------- the official generator's layout
# generate.py strips "<image>\n" from the human turn and may write several human/gpt pairs per record; the
# official loader shows the record's image on the first user turn.
@pytest.fixture
def official_layout(tmp_path):
    """A train.jsonl in the official layout (no placeholder; single- and multi-turn) with its images."""
    import shutil

    root = tmp_path / "ds"
    for k in range(2):
        (root / "toy").mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / "images" / "toy" / f"toy000{k}.png", root / "toy" / f"toy000{k}.png")
    records = [good("single", image="toy/toy0000.png", question="What colour is the chair?"),
               {**multi_turn("multi"), "image": "toy/toy0001.png"},
               {**multi_turn("trailing", first="What colour is the chair?\n<image>"), "image": "toy/toy0000.png"}]
    return write_jsonl(tmp_path / "train.jsonl", records), root


def test_records_without_placeholder_validate(official_layout):
    path, root = official_layout
    assert lc.scan(path, root).good == 3
    samples = lc.load_llava_cot(path, root)
    assert [(s.id, s.question, s.answer) for s in samples] == [
        ("single", "What colour is the chair?", "red"), ("multi", "And the table?", "blue"), ("trailing", "And the table?", "blue")]
    assert samples[2].context["history"] == [["What colour is the chair?", COT]]  # placeholder removed from history too
    assert all(Path(s.image).is_file() for s in samples)


def test_placeholder_errors_stay(image_root):
    no_image = {k: v for k, v in good().items() if k != "image"}
    assert "wrong <image> count: 1 in the human turns but the record has no image" in lc.validate_record(no_image, image_root)
    assert "missing key 'image'" in lc.validate_record(no_image, image_root)
    two = multi_turn(first="<image>\nWhat colour?", second="<image>\nAnd the table?")
    assert lc.validate_record(two, image_root) == ["wrong <image> count: 2 in the human turns (expected at most 1, for one image)"]
    assert lc.validate_record(multi_turn(), image_root) == [] and lc.validate_record(good(question="What?"), image_root) == []


def test_training_conversation_image_first_and_every_gpt_turn_labelled(official_layout, zoo_dir):
    from PIL import Image

    from vlm.models import load_model
    from vlm.recipes import load_recipe

    path, root = official_layout
    single, multi, _ = lc.load_llava_cot(path, root)
    recipe = load_recipe("llava-cot")
    conv = recipe.conversation(multi, recipe.gold(multi))
    assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant"]
    assert [item["type"] for item in conv[0]["content"]] == ["image", "text"] and conv[0]["content"][1]["text"] == "What colour is the chair?"
    assert all(item["type"] == "text" for m in conv[1:] for item in m["content"])  # one image, on the first user turn
    assert conv[1]["content"][0]["text"] == COT and conv[3]["content"][0]["text"] == COT_BLUE
    assert "And the table?" in conv[2]["content"][0]["text"]  # the recipe's prompt for the last question
    blind = recipe.conversation(multi, recipe.gold(multi), blind=True)
    assert not any(item["type"] == "image" for m in blind for item in m["content"])
    one = recipe.conversation(single, recipe.gold(single))
    assert [m["role"] for m in one] == ["user", "assistant"] and one[0]["content"][0]["type"] == "image"

    adapter = load_model("zoo:llava-ov-mirror", device="cpu")
    image = Image.open(multi.image).convert("RGB")
    batch = adapter.training_batch([conv, one], [image, Image.open(single.image).convert("RGB")])
    ids = batch["input_ids"][0]
    assert int((ids == adapter.image_token_id).sum()) > 0
    first_image = int((ids == adapter.image_token_id).nonzero()[0])
    question = adapter.tokenizer.decode(ids[first_image:]).split("<|im_end|>")[0]
    assert "What colour is the chair?" in question  # the image sits in the first user turn
    labels = batch["labels"][0]
    target = adapter.tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert target.count("<SUMMARY>") == 2 and COT in target and COT_BLUE in target and target.count("<|im_end|>") == 2
    assert "What colour is the chair?" not in target and "And the table?" not in target
    labels = batch["labels"][1]
    assert adapter.tokenizer.decode(labels[labels != IGNORE_INDEX]).count("<SUMMARY>") == 1


def test_finetune_and_evaluate_on_the_official_layout(official_layout, zoo_dir, tmp_path):
    path, root = official_layout
    env = {"VLM_ZOO_DIR": str(zoo_dir)}
    r = run_vlm("finetune", "--model", "zoo:llava-ov-mirror", "--data", path, "--images_dir", root, "--recipe", "llava-cot",
                "--batch_size", 3, "--max_steps", 1, "--out_dir", tmp_path / "ft", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((tmp_path / "ft" / "train_config.json").read_text())
    assert cfg["examples"] == 3
    r = run_vlm("evaluate", "--model", "zoo:llava-ov-mirror", "--adapter", tmp_path / "ft" / "adapter", "--data", path,
                "--images_dir", root, "--recipe", "llava-cot", "--limit", 2, "--max_new_tokens", 4, "--no_sbert",
                "--out_dir", tmp_path / "eval", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(ln) for ln in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [(row["id"], row["references"]) for row in rows] == [("single", ["red"]), ("multi", ["blue"])]  # last turn scored
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 2
