"""Model layer: family registry from config.json, the adapter contract on every family, the zoo.

Uses the random-init ``*-mirror`` zoo entries: tiny widths, but the real checkpoints' preprocessing
(image size, patch, pinpoints / pixel bounds), so the real processor paths run.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from helpers import REPO, conversation, run_vlm
from vlm.data.errors import DataError
from vlm.models import family_of, load_model
from vlm.models.base import IGNORE_INDEX, blind

FAMILIES = {"llava-ov": "llava_onevision", "qwen2-vl": "qwen2_vl", "cobra": "cobra"}
IMAGE = REPO / "hypo_dataset" / "sample" / "images" / "toy0000.png"


@pytest.fixture(scope="session")
def mirrors(zoo_dir):
    return {prefix: load_model(f"zoo:{prefix}-mirror", device="cpu") for prefix in FAMILIES}


def image():
    return Image.open(IMAGE).convert("RGB")


# ---------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("prefix", FAMILIES)
def test_family_comes_from_config_model_type(mirrors, prefix):
    assert family_of(f"zoo:{prefix}-mirror") == FAMILIES[prefix]
    assert mirrors[prefix].family == FAMILIES[prefix]


def test_family_errors_are_one_clear_line(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(DataError, match="'bert' is not supported \\(supported: llava_onevision, qwen2_vl, qwen2_5_vl, cobra\\)"):
        family_of(str(tmp_path / "bert"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="config.json: not found"):
        family_of(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="unknown zoo entry"):
        family_of("zoo:nope")


def test_family_cli(tmp_path):
    # an empty zoo: the entry is built on the way, and its build output must not pollute the answer on stdout
    r = run_vlm("family", "zoo:qwen2-vl-mirror", env={"VLM_ZOO_DIR": str(tmp_path)})
    assert r.returncode == 0 and r.stdout == "qwen2_vl\n", r.stdout
    assert "zoo: built qwen2-vl-mirror" in r.stderr
    r = run_vlm("family", "/nonexistent/model")
    assert r.returncode == 2 and "not a checkpoint folder" in r.stderr


# ---------------------------------------------------------------------------------------------- adapter contract
@pytest.mark.parametrize("prefix", FAMILIES)
def test_labels_cover_assistant_turns_only(mirrors, prefix):
    ad = mirrors[prefix]
    batch = ad.training_batch([conversation(), conversation()[:2]], [image(), image()])
    tok = ad.tokenizer
    for row, expected in ((0, "two<|im_end|>front left<|im_end|>"), (1, "two<|im_end|>")):
        labels = batch["labels"][row]
        assert tok.decode(labels[labels != IGNORE_INDEX]) == expected
    # image tokens and padding are never labels; the row with fewer turns is right-padded
    assert not ((batch["input_ids"] == ad.image_token_id) & (batch["labels"] != IGNORE_INDEX)).any()
    assert batch["attention_mask"][1, -1] == 0 and batch["labels"][1, -1] == IGNORE_INDEX
    with torch.no_grad():
        out = ad.model(**batch)  # the model checks image tokens against its vision features
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("prefix", FAMILIES)
def test_blind_mode_has_no_image_tokens(mirrors, prefix):
    ad = mirrors[prefix]
    conv = blind(conversation())
    assert all(item["type"] == "text" for m in conv for item in m["content"])
    batch = ad.training_batch([conv], [None])
    assert "pixel_values" not in batch
    assert not (batch["input_ids"] == ad.image_token_id).any()
    with torch.no_grad():
        assert torch.isfinite(ad.model(**batch).loss)
    with pytest.raises(ValueError, match="an image item but no image"):
        ad.training_batch([conversation()], [None])


@pytest.mark.parametrize("prefix", FAMILIES)
def test_batched_left_padded_generation_equals_one_by_one(mirrors, prefix):
    ad = mirrors[prefix]
    convs = [conversation()[:1], [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the room in detail, please."}]}],
             blind(conversation())[:1]]
    imgs = [image(), image().transpose(Image.FLIP_LEFT_RIGHT), None]
    cfg = {"max_new_tokens": 4}
    batched = ad.generate(convs, imgs, cfg)
    single = [ad.generate([c], [i], cfg)[0] for c, i in zip(convs, imgs)]
    assert batched == single


@pytest.mark.parametrize("prefix", FAMILIES)
def test_lora_targets_language_model_only(mirrors, prefix):
    from peft import LoraConfig, get_peft_model

    ad = mirrors[prefix]
    model = get_peft_model(ad.model, LoraConfig(r=2, target_modules=ad.lora_targets()))
    try:
        wrapped = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and not n.endswith(("lora_A", "lora_B"))]
        assert wrapped and all("language_model" in n for n in wrapped)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
    finally:
        model.unload()  # give the shared mirror back without adapters


# ---------------------------------------------------------------------------------------------- zoo
def test_zoo_build_is_deterministic(tmp_path, monkeypatch):
    from vlm.models import zoo

    states = []
    for run in ("a", "b"):
        monkeypatch.setenv("VLM_ZOO_DIR", str(tmp_path / run))
        path = zoo.ensure("cobra-mirror")
        states.append((path / "tokenizer.json").read_bytes())
        states.append(load_model(str(path), device="cpu").model.state_dict())
    assert states[0] == states[2]
    assert states[1].keys() == states[3].keys()
    assert all(torch.equal(states[1][k], states[3][k]) for k in states[1])


def test_zoo_build_in_parallel_gives_the_weights_of_one_by_one(tmp_path, monkeypatch):
    """`zoo build A B` builds in one child process per entry, side by side: the same bytes as a build in this
    process; an unknown name is one clear error and nothing is built."""
    from vlm.models import zoo

    names = ("llava-ov-mirror", "qwen2-vl-mirror")
    r = run_vlm("zoo", "build", *names, "--jobs", "2", env={"VLM_ZOO_DIR": str(tmp_path / "parallel")})
    assert r.returncode == 0, r.stderr
    assert all(f"zoo: building {n}" in r.stderr for n in names)
    monkeypatch.setenv("VLM_ZOO_DIR", str(tmp_path / "serial"))
    for name in names:
        serial = zoo.ensure(name) / "model.safetensors"
        assert serial.read_bytes() == (tmp_path / "parallel" / f"v{zoo.ZOO_VERSION}" / name / "model.safetensors").read_bytes()
    r = run_vlm("zoo", "build", "llava-ov-mirror", "no-such-entry", env={"VLM_ZOO_DIR": str(tmp_path / "bad")})
    assert r.returncode != 0 and "zoo:no-such-entry" in r.stderr and "unknown zoo entry" in r.stderr
    assert not (tmp_path / "bad" / f"v{zoo.ZOO_VERSION}" / "llava-ov-mirror").exists()


@pytest.mark.slow
def test_zoo_pretraining_runs_both_stages_and_the_card_asks_through_the_recipes(tmp_path, monkeypatch):
    """A trained entry at 2 + 2 steps: the alignment stage and the chat stage both run (HF Trainer), the card's
    evaluation writes held-out Hypo3D files and asks every question through the recipes; the answer-weighted
    loss at weight 1 is the model's own CE."""
    import dataclasses
    import functools

    from vlm.models import zoo

    monkeypatch.setenv("VLM_ZOO_DIR", str(tmp_path))
    spec = dataclasses.replace(zoo.zoo_specs()["llava-ov-student"], steps=2, align_steps=2, batch_size=2, align_batch_size=2)
    monkeypatch.setitem(zoo.zoo_specs(), "llava-ov-student", spec)
    monkeypatch.setattr(zoo, "evaluate_card", functools.partial(zoo.evaluate_card, n_scenes=1))
    card = json.loads((zoo.ensure("llava-ov-student") / "zoo_card.json").read_text())
    assert card["pretraining"]["alignment"]["steps"] == 2 and card["pretraining"]["chats"]["steps"] == 2
    assert card["eval"]["questions"] == 6  # 1 scene x 2 changes x 3 questions, each with its own change
    assert {"cell_acc_normal", "cell_acc_blind", "qa_em_cot_normal", "qa_em_cot_blind", "qa_em_direct_normal"} <= set(card["eval"])
    adapter = load_model("zoo:llava-ov-student", device="cpu")
    rows = zoo.chats(2, zoo.EVAL_SEED)
    batch = adapter.training_batch([r[0] for r in rows], [r[1] for r in rows])
    with torch.no_grad():
        assert torch.allclose(zoo.answer_weighted_loss(adapter.model, batch, 1.0), adapter.model(**batch).loss, atol=1e-5)
    assert adapter.base_image_tokens(batch["pixel_values"]).shape[1] == 9  # one token per 16-px cell of the 48-px image


def test_zoo_entries_come_from_the_family_modules(monkeypatch):
    """Each family module names its zoo entries (``ZOO_PREFIX``); the zoo keeps no family list of its own."""
    import sys
    import types

    from vlm.models import registry, zoo

    roles = ("teacher", "student", "mirror", "mirror-152k")
    assert list(zoo.ZOO) == [f"{prefix}-{role}" for prefix in FAMILIES for role in roles]
    for prefix, family in FAMILIES.items():
        assert registry.family_module(family).ZOO_PREFIX == prefix
        assert all(zoo.ZOO[f"{prefix}-{role}"].family == family for role in roles)
    fake = types.ModuleType("fake_family")
    fake.ZOO_PREFIX, fake.Adapter = "toy-vlm", types.SimpleNamespace(family="toy_vlm")
    monkeypatch.setitem(sys.modules, "fake_family", fake)
    monkeypatch.setitem(registry.FAMILIES, "toy_vlm", "fake_family")
    specs = zoo.zoo_specs.__wrapped__()  # uncached: the registry was patched
    assert [n for n in specs if n.startswith("toy-vlm-")] == [f"toy-vlm-{role}" for role in roles]
    assert specs["toy-vlm-student"].family == "toy_vlm" and specs["toy-vlm-mirror-152k"].tokenizer == "qwen2"


def test_zoo_list(zoo_dir):
    r = run_vlm("zoo", "list", env={"VLM_ZOO_DIR": str(zoo_dir)})
    assert r.returncode == 0 and "zoo:llava-ov-teacher" in r.stdout and "zoo:cobra-mirror" in r.stdout
