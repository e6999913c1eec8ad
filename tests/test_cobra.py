"""Cobra (SigLIP + MLP projector + Mamba) as real transformers classes: tiny random models, CPU, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlm.models.base import IGNORE_INDEX
from vlm.models.cobra import CobraConfig, CobraForConditionalGeneration, make_cobra_processor

IMAGE_SIZE, PATCH_SIZE = 32, 16
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 4 SigLIP patches, no CLS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "[UNK]"]
WORDS = (
    "user assistant system what is the of a an in on to how many where which color colour chair table bed sofa "
    "lamp door window room left right red blue green yellow white black one two three four five yes no there "
    "are near next behind front step first then so answer because object objects count see it this that".split()
)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image> ' }}{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ ' <|im_end|> ' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}"
)


def make_tokenizer():
    """An in-memory word-level tokenizer (~90 ids) with the ChatML/LLaVA special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="[UNK]"
    )


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return make_cobra_processor(tokenizer, IMAGE_SIZE, PATCH_SIZE, chat_template=CHAT_TEMPLATE)


def tiny_config(tokenizer, **overrides) -> CobraConfig:
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    text = dict(hidden_size=32, num_hidden_layers=2, state_size=8, vocab_size=100, initializer_range=0.5,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    return CobraConfig(vision_config=vision, text_config=text,
                       image_token_id=tokenizer.convert_tokens_to_ids("<image>"), **overrides)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return CobraForConditionalGeneration(tiny_config(tokenizer)).eval()


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def prompt(question: str, image: bool = True) -> str:
    return f"<|im_start|>user {'<image> ' if image else ''}{question} <|im_end|> <|im_start|>assistant"


def strip_after_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def test_config_accepts_dicts_or_objects_and_round_trips(tokenizer, tmp_path):
    from transformers import AutoConfig, MambaConfig, SiglipVisionConfig

    cfg = tiny_config(tokenizer)
    assert isinstance(cfg.vision_config, SiglipVisionConfig) and isinstance(cfg.text_config, MambaConfig)
    assert cfg.vision_config.vision_use_head is False  # the pooling head is never used by Cobra
    assert cfg.tie_word_embeddings is True and cfg.get_text_config(decoder=True) is cfg.text_config
    same = CobraConfig(vision_config=cfg.vision_config, text_config=cfg.text_config, image_token_id=3)
    assert same.text_config.hidden_size == 32
    cfg.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is CobraConfig
    loaded.name_or_path = cfg.name_or_path
    assert loaded.to_dict() == cfg.to_dict()
    assert CobraConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    untied = CobraConfig(text_config={"hidden_size": 8, "num_hidden_layers": 1}, tie_word_embeddings=False)
    assert untied.text_config.tie_word_embeddings is False


def test_forward_loss_and_gradients_with_frozen_vision(tokenizer, processor):
    torch.manual_seed(0)
    model = CobraForConditionalGeneration(tiny_config(tokenizer)).train()
    model.vision_tower.requires_grad_(False)
    batch = processor(text=[prompt("how many chair") + " two"], images=images(1), return_tensors="pt")
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == N_IMAGE_TOKENS
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == model.config.image_token_id, IGNORE_INDEX)
    out = model(**batch, labels=labels)
    assert out.logits.shape == (*batch["input_ids"].shape, 100) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0  # image features reach the loss
    assert model.language_model.backbone.layers[0].mixer.in_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vision_tower.parameters())


def test_gradient_checkpointing_matches(tokenizer, processor):
    torch.manual_seed(0)
    model = CobraForConditionalGeneration(tiny_config(tokenizer)).train()
    batch = processor(text=[prompt("what color")], images=images(1), return_tensors="pt")
    ref = model(**batch, labels=batch["input_ids"]).loss
    model.activation_checkpointing_enable()
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert torch.allclose(ref, loss) and model.multi_modal_projector.linear_2.weight.grad is not None


def test_resize_keeps_tying_and_earlier_feature_layer(tokenizer):
    torch.manual_seed(0)
    model = CobraForConditionalGeneration(tiny_config(tokenizer, vision_feature_layer=-2)).eval()
    model.resize_token_embeddings(104)  # e.g. after adding <image> / chat tokens to a pretrained Mamba vocab
    lm = model.language_model
    assert lm.lm_head.weight.shape == (104, 32) and lm.lm_head.weight is lm.backbone.embeddings.weight
    assert model.config.text_config.vocab_size == 104
    image_id = model.config.image_token_id
    ids = torch.tensor([[1] + [image_id] * N_IMAGE_TOKENS + [103]])
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert out.logits.shape == (1, ids.shape[1], 104)


def test_image_token_count_mismatch_raises(model, tokenizer):
    ids = tokenizer(prompt("what color"), return_tensors="pt")["input_ids"]  # one <image>, 4 features
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(input_ids=ids, pixel_values=torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE))


def test_image_features_change_logits_and_embeds_path_matches(model, processor):
    batch = processor(text=[prompt("what color")], images=images(1), return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        other = model(**{**batch, "pixel_values": torch.randn_like(batch["pixel_values"])}).logits
        embeds = model.get_input_embeddings()(batch["input_ids"])
        via_embeds = model(inputs_embeds=embeds, pixel_values=batch["pixel_values"],
                           attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(logits, other)
    torch.testing.assert_close(logits, via_embeds)


def test_save_and_auto_load_round_trip(model, processor, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()  # no trust_remote_code
    assert type(loaded) is CobraForConditionalGeneration
    lm = loaded.language_model
    assert lm.lm_head.weight.data_ptr() == lm.backbone.embeddings.weight.data_ptr()  # Mamba ties by default
    batch = processor(text=[prompt("where is the lamp")], images=images(1), return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path)) is CobraForConditionalGeneration


def test_generate_with_cache_matches_no_cache_and_manual_loop(model, processor, tokenizer):
    batch = processor(text=[prompt("how many chair are there")], images=images(1), return_tensors="pt")
    kw = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    cached = model.generate(**batch, **kw)
    uncached = model.generate(**batch, use_cache=False, **kw)
    assert torch.equal(cached, uncached)
    ids = batch["input_ids"]
    with torch.no_grad():
        for _ in range(8):  # greedy by hand: full recompute, image every step
            nxt = model(input_ids=ids, pixel_values=batch["pixel_values"]).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=-1)
    assert torch.equal(cached, ids)
    assert len(set(cached[0, batch["input_ids"].shape[1]:].tolist())) > 1  # not a degenerate constant output


def test_left_padding_leaves_real_tokens_unchanged(model, processor, tokenizer):
    texts = [prompt("what color is the sofa next to the window"), prompt("how many")]
    imgs = images(2, seed=1)
    tokenizer.padding_side = "left"
    try:
        batch = processor(text=texts, images=imgs, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = "right"
    assert batch["attention_mask"][1, 0] == 0  # the short prompt really is padded
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    batched = model.generate(**batch, **kw)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        batched_logits = model(**batch).logits
    for i, (text, img) in enumerate(zip(texts, imgs)):
        single = processor(text=[text], images=[img], return_tensors="pt")
        n = single["input_ids"].shape[1]
        with torch.no_grad():
            torch.testing.assert_close(batched_logits[i, -n:], model(**single).logits[0], rtol=1e-4, atol=1e-4)
        alone = model.generate(**single, **kw)[0, n:].tolist()
        assert strip_after_eos(batched[i, width:].tolist(), tokenizer.eos_token_id) == alone


def test_processor_expands_image_token_and_round_trips(processor, tokenizer, tmp_path):
    from transformers import AutoProcessor, LlavaProcessor

    out = processor(text=[prompt("what color")], images=images(1), return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert processor.image_token_id == image_id
    assert int((out["input_ids"] == image_id).sum()) == N_IMAGE_TOKENS
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color"}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == prompt("what color") + " "

    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, LlavaProcessor)
    again = loaded(text=[prompt("what color")], images=images(1), return_tensors="pt")
    assert torch.equal(again["input_ids"], out["input_ids"])
    assert torch.allclose(again["pixel_values"], out["pixel_values"])
    assert loaded.patch_size == PATCH_SIZE and loaded.vision_feature_select_strategy == "full"


def test_processor_adds_missing_image_token():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    proc = make_cobra_processor(tok, IMAGE_SIZE, PATCH_SIZE)
    assert proc.image_token_id == tok.convert_tokens_to_ids("<image>") == 2


def test_lora_trains_only_adapters_and_blind_call_works(tokenizer, processor):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = CobraForConditionalGeneration(tiny_config(tokenizer))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(in_proj|x_proj|dt_proj|out_proj)")
    model = get_peft_model(base, lora)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)  # SigLIP's own out_proj is left alone
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    model.train()
    batch = processor(text=[prompt("how many lamp") + " one"], images=images(1), return_tensors="pt")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    opt.step()
    assert all(torch.equal(p, frozen_before[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    model.eval()
    blind = tokenizer([prompt("how many lamp", image=False)], return_tensors="pt")
    assert tokenizer.convert_tokens_to_ids("<image>") not in blind["input_ids"][0].tolist()
    with torch.no_grad():
        out = model(**blind, labels=blind["input_ids"])
    assert torch.isfinite(out.loss)
    gen = model.generate(**blind, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert gen.shape[1] <= blind["input_ids"].shape[1] + 3


def test_parallel_scan_matches_the_sequential_scan(tokenizer):
    """With mambapy installed the Mamba mixers use its parallel scan on CPU (no mamba-ssm kernels): same loss
    and gradients as transformers' sequential loop, which stays the reference."""
    pytest.importorskip("mambapy")
    torch.manual_seed(0)
    model = CobraForConditionalGeneration(tiny_config(tokenizer)).train()
    mixers = [m for m in model.modules() if hasattr(m, "use_mambapy")]
    assert mixers and all(m.use_mambapy for m in mixers)
    ids = torch.randint(5, 90, (2, 40))
    results = []
    for parallel in (True, False):
        for m in mixers:
            m.use_mambapy = parallel
        model.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.item(), model.language_model.lm_head.weight.grad.clone()))
    (lp, gp), (ls, gs) = results
    assert lp == pytest.approx(ls, rel=1e-5)
    torch.testing.assert_close(gp, gs, rtol=1e-3, atol=2e-5)  # float32 summation order differs


def test_assemble_cobra_from_a_siglip_tower_and_a_mamba_lm(tmp_path):
    """`python -m vlm assemble_cobra`: both pretrained weight sets copied in unchanged, ChatML + <image> tokens
    added to the LM's tokenizer (embeddings resized), and the result loads and generates like any checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import MambaConfig, MambaForCausalLM, PreTrainedTokenizerFast, SiglipVisionConfig, SiglipVisionModel

    from tests.helpers import run_vlm
    from vlm.models import load_model

    torch.manual_seed(0)
    vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                  num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE))
    vision.save_pretrained(tmp_path / "siglip")
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "[UNK]", *sorted(set(WORDS))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="[UNK]")
    lm = MambaForCausalLM(MambaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, state_size=8))
    lm.save_pretrained(tmp_path / "mamba")
    tok.save_pretrained(tmp_path / "mamba")
    out = tmp_path / "cobra"
    r = run_vlm("assemble_cobra", "--vision", tmp_path / "siglip", "--language", tmp_path / "mamba", "--out_dir", out)
    assert r.returncode == 0, r.stderr
    assert run_vlm("family", out).stdout.strip() == "cobra"
    a = load_model(str(out), device="cpu")
    tower = a.model.vision_tower.state_dict()
    copied = [k for k in vision.state_dict() if "head." not in k]  # SigLIP's pooling head is dropped on purpose
    assert copied and set(tower) == set(copied)
    for k in copied:
        torch.testing.assert_close(tower[k], vision.state_dict()[k], rtol=0, atol=0)
    emb = a.model.get_input_embeddings().weight
    assert emb.shape[0] == len(vocab) + 3  # <|im_start|>, <|im_end|>, <image>
    torch.testing.assert_close(emb[: len(vocab)], lm.get_input_embeddings().weight, rtol=0, atol=0)
    mixer, ref = a.model.language_model.backbone.layers[1].mixer, lm.backbone.layers[1].mixer
    torch.testing.assert_close(mixer.in_proj.weight, ref.in_proj.weight, rtol=0, atol=0)
    assert a.tokenizer.convert_tokens_to_ids("<|im_end|>") == a.model.generation_config.eos_token_id
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is on the table"}]}]
    assert len(a.generate([conv], images(1), {"max_new_tokens": 3})) == 1
    answer = {"role": "assistant", "content": [{"type": "text", "text": "a red chair"}]}
    batch = a.training_batch([conv + [answer]], images(1))
    assert (batch["labels"] != IGNORE_INDEX).sum() >= 3  # the answer and its <|im_end|> are targets
    r = run_vlm("assemble_cobra", "--vision", tmp_path / "siglip", "--language", tmp_path / "mamba", "--out_dir", out)
    assert r.returncode == 2 and "already exists" in r.stderr
