"""Real-size code paths on tiny models: the LM head only at target rows (in chunks) gives the same losses and
gradients as full logits; generation keeps one position per step; full fine-tunes train exactly the LM and the
projector; the image budget reaches processor and model alike; bad flags fail before a model loads."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from helpers import REPO, run_vlm
from vlm.kd import DIVERGENCES, TopK, ce_sum, kd_loss, teacher_topk
from vlm.kd.losses import chunked_sums, shifted_rows, target_loss_sums
from vlm.models import load_model
from vlm.models.base import IGNORE_INDEX, head_replaced, output_head

FAMILIES = ("llava-ov", "qwen2-vl", "cobra")
IMAGE = REPO / "hypo_dataset" / "sample" / "images" / "toy0000.png"
SAMPLE = REPO / "hypo_dataset" / "sample"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def rel_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    return bool(((a - b).abs().max() <= rtol * b.abs().max().clamp_min(1e-12)).item())


def conversations():
    def conv(question, answer, second=None):
        turns = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                 {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        if second:
            turns += [{"role": "user", "content": [{"type": "text", "text": second[0]}]},
                      {"role": "assistant", "content": [{"type": "text", "text": second[1]}]}]
        return turns

    return [conv("How many chairs are there?", "two chairs near the table", ("And tables?", "one")),
            conv("What colour is the sofa?", "red")]


# ---------------------------------------------------------------------------------------------- the loss maths
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("chunk_rows", [1, 3, 4096])
def test_chunked_sums_equal_the_full_logit_losses(divergence, chunk_rows):
    g = torch.Generator().manual_seed(0)
    B, L, H, V, k = 3, 11, 8, 40, 5
    hidden = torch.randn(B, L, H, generator=g, requires_grad=True)
    head = torch.nn.Linear(H, V, bias=False)
    labels = torch.full((B, L), IGNORE_INDEX)
    labels[0, 3:8] = torch.randint(0, V, (5,), generator=g)
    labels[1, 1:10] = torch.randint(0, V, (9,), generator=g)
    labels[2, 6:9] = torch.randint(0, V, (3,), generator=g)
    labels[1, 5] = IGNORE_INDEX
    teacher = teacher_topk(torch.randn(B, L, V, generator=g) * 3, labels, k)
    for temperature in (1.0, 2.0):
        logits = head(hidden)
        ce_ref = ce_sum(logits, labels)
        kd_ref, _ = kd_loss(logits, labels, teacher, divergence=divergence, temperature=temperature)
        ref_grads = torch.autograd.grad(ce_ref + kd_ref, [hidden, head.weight])

        rows, targets, mask = shifted_rows(hidden, labels)
        t_rows = TopK(*(t[:, 1:][mask] for t in teacher[:3]))
        ce, kd = chunked_sums(rows, head, targets, t_rows, divergence=divergence, temperature=temperature,
                              chunk_rows=chunk_rows)
        grads = torch.autograd.grad(ce + kd, [hidden, head.weight])
        assert rel_close(ce, ce_ref) and rel_close(kd, kd_ref)
        assert all(rel_close(a, b) for a, b in zip(grads, ref_grads))
    ce_only, none = chunked_sums(rows, head, targets, None, chunk_rows=chunk_rows)
    assert none is None and rel_close(ce_only, ce_sum(head(hidden), labels))


def test_no_targets_gives_zero_connected_to_the_head():
    head = torch.nn.Linear(4, 7)
    ce, kd = chunked_sums(torch.zeros(0, 4), head, torch.zeros(0, dtype=torch.long))
    ce.backward()
    assert float(ce.detach()) == 0.0 and kd is None and head.weight.grad is not None


# ---------------------------------------------------------------------------------------------- every family
@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    import os

    old = os.environ.get("VLM_ZOO_DIR")
    os.environ["VLM_ZOO_DIR"] = str(tmp_path_factory.mktemp("zoo"))
    yield {f: load_model(f"zoo:{f}-mirror", device="cpu", dtype="float32") for f in FAMILIES}
    if old is None:
        os.environ.pop("VLM_ZOO_DIR")
    else:
        os.environ["VLM_ZOO_DIR"] = old


def real_vocab_mirror(family: str):
    from vlm.data.errors import DataError
    from vlm.models.tokenizer import qwen2_tokenizer_file

    try:
        qwen2_tokenizer_file()
    except DataError:
        pytest.skip("pip install -r requirements-test.txt")
    return load_model(f"zoo:{family}-mirror-152k", device="cpu", dtype="float32")


@pytest.mark.parametrize("family", [*FAMILIES, "qwen2-vl-152k", "llava-ov-152k-blind"])
def test_target_row_head_matches_full_logits_on_every_family(mirrors, family):
    """The finetune path (head only at target rows, chunked) vs today's full-logit path on a real model
    forward with an image: same CE + KD loss and same gradients, LoRA and full fine-tune alike; also at the
    real 151,936-row vocabulary (LLaVA-OV blind there: its anyres image is ~1.5k tokens of full logits)."""
    from peft import LoraConfig, get_peft_model

    from vlm.models.base import blind

    name = family.removesuffix("-blind").removesuffix("-152k")
    adapter = real_vocab_mirror(name) if "152k" in family else mirrors[family]
    if family.endswith("-blind"):
        batch = adapter.training_batch([blind(c) for c in conversations()], [None, None])
    else:
        img = Image.open(IMAGE).convert("RGB")
        batch = adapter.training_batch(conversations(), [img, img])
    labels = batch.pop("labels")
    V = output_head(adapter.model).weight.shape[0]
    teacher = teacher_topk(torch.randn(*labels.shape, V, generator=torch.Generator().manual_seed(1)) * 2, labels, 8)
    torch.manual_seed(0)
    lora = get_peft_model(adapter.model, LoraConfig(r=4, lora_alpha=8, target_modules=adapter.lora_targets(), init_lora_weights=False))
    try:
        for model in (lora, lora.get_base_model()):  # LoRA, then every weight (full fine-tune)
            params = [p for p in model.parameters() if p.requires_grad] if model is lora else list(model.parameters())
            for p in params:
                p.requires_grad_(True)
            logits = model(**batch).logits.float()
            ref = ce_sum(logits, labels) + kd_loss(logits, labels, teacher)[0]
            ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
            seen = []
            head = output_head(model)
            hook = head.register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
            try:
                ce, kd, _ = target_loss_sums(model, batch, labels, teacher, chunk_rows=5)
            finally:
                hook.remove()
            assert seen == [(2,)]  # the head's one call inside the forward returned the two sums, no logits
            assert "forward" not in head.__dict__  # the head's own forward is back
            grads = torch.autograd.grad(ce + kd, params, allow_unused=True)
            assert rel_close(ce + kd, ref)
            # 1e-5 of the largest gradient entry: parameters whose gradient is ~1e-9 (float32 noise) compare absolutely
            scale = max(float(b.abs().max()) for b in ref_grads if b is not None)
            for a, b in zip(grads, ref_grads):
                assert (a is None) == (b is None)
                assert a is None or float((a - b).abs().max()) <= 1e-5 * max(float(b.abs().max()), scale)
    finally:
        lora.unload()
        for p in adapter.model.parameters():
            p.requires_grad_(False)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_scores_one_position_per_step(mirrors, family):
    adapter = mirrors[family]
    shapes = []
    handle = output_head(adapter.model).register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
    try:
        prompt = [conversations()[0][:1], conversations()[1][:1]]
        img = Image.open(IMAGE).convert("RGB")
        adapter.generate(prompt, [img, img], {"max_new_tokens": 4, "min_new_tokens": 4})
    finally:
        handle.remove()
    assert shapes and all(s[1] == 1 for s in shapes), shapes


# ---------------------------------------------------------------------------------------------- full fine-tune
EXPECTED_GROUPS = {
    "llava-ov": {"model.language_model", "model.multi_modal_projector", "model.image_newline", "lm_head"},
    "qwen2-vl": {"model.language_model", "model.visual.merger", "lm_head"},
    "cobra": {"language_model", "multi_modal_projector"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_full_finetune_trains_the_lm_and_projector_only(tmp_path, family, mirrors):
    """With an untied lm_head (the 7B checkpoints'), every LM weight, the head and the projector train; no
    vision-encoder weight does."""
    adapter = load_model(f"zoo:{family}-mirror", device="cpu", dtype="float32")
    head = output_head(adapter.model)
    head.weight = torch.nn.Parameter(head.weight.detach().clone())  # untie
    adapter.model.config.tie_word_embeddings = False
    groups = adapter.set_full_finetune()
    assert set(groups) == EXPECTED_GROUPS[family]
    trainable = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert any(n.endswith("lm_head.weight") for n in trainable)
    frozen = {n for n, p in adapter.model.named_parameters() if not p.requires_grad}
    assert frozen and all("vision_tower" in n or ("visual" in n and "merger" not in n) for n in frozen)
    assert not any("vision_tower" in n or ("visual." in n and "merger" not in n) for n in trainable)


# ---------------------------------------------------------------------------------------------- image budget
def test_image_budget_sets_processor_and_model_alike(mirrors):
    big = Image.new("RGB", (1024, 768), (40, 90, 200))
    conv = [conversations()[1]]
    counts = {}
    for family, budgets in (("llava-ov", [{}, {"max_image_tiles": 4}, {"max_image_tiles": 1}]),
                            ("qwen2-vl", [{}, {"max_pixels": 256 * 784}, {"max_pixels": 64 * 784}])):
        for b in budgets:
            adapter = load_model(f"zoo:{family}-mirror", device="cpu", image_budget=b)
            batch = adapter.training_batch(conv, [big])
            batch.pop("labels")
            with torch.no_grad(), head_replaced(adapter.model, lambda head, hidden: hidden[..., :0, :]):
                adapter.model(**batch)  # features and placeholders agree, or the model raises
            counts[(family, tuple(b.values()))] = int((batch["input_ids"] == adapter.image_token_id).sum())
            assert bool(adapter.budget_applied) == bool(b)
    ov = [v for k, v in counts.items() if k[0] == "llava-ov"]
    qw = [v for k, v in counts.items() if k[0] == "qwen2-vl"]
    assert ov[0] > 4000 and ov[0] > ov[1] > ov[2]
    assert qw[0] > qw[1] > qw[2] and qw[1] <= 256 and qw[2] <= 64


def test_bad_flags_fail_before_any_model_loads(tmp_path):
    r = run_vlm("finetune", "--model", "zoo:no-such-entry", "--data", SAMPLE / "hypo3d.json", "--images_dir", SAMPLE / "images",
                "--alpha", "1.5", "--temperature", "0", "--logit_chunk_rows", "0", "--answer_weight", "0",
                "--out_dir", tmp_path / "x")
    assert r.returncode == 2
    for flag in ("--alpha", "--temperature", "--logit_chunk_rows", "--answer_weight"):
        assert flag in r.stderr
    assert "no-such-entry" not in r.stderr and not (tmp_path / "x").exists()
    if not torch.cuda.is_available():
        r = run_vlm("finetune", "--model", "zoo:no-such-entry", "--data", SAMPLE / "hypo3d.json", "--images_dir",
                    SAMPLE / "images", "--fsdp", "--out_dir", tmp_path / "z")
        assert r.returncode == 2 and "--fsdp" in r.stderr and "GPUs" in r.stderr and not (tmp_path / "z").exists()
    r = run_vlm("evaluate", "--model", "zoo:no-such-entry", "--data", SAMPLE / "hypo3d.json", "--images_dir", SAMPLE / "images",
                "--max_pixels", "-1", "--out_dir", tmp_path / "y")
    assert r.returncode == 2 and "--max_pixels" in r.stderr and not (tmp_path / "y").exists()


def test_inference_flags_are_checked_when_parsed(tmp_path):
    """evaluate / generate_cot refuse bad counts in their Config (parse time: before data, model or out_dir)."""
    from vlm.cli import parse_config
    from vlm.data.errors import DataError
    from vlm.stages import evaluate, generate_cot

    split = ["--data", str(SAMPLE / "hypo3d.json"), "--out_dir", str(tmp_path / "x")]
    with pytest.raises(DataError) as e:
        parse_config(generate_cot.Config, [*split, "--teacher", "zoo:x", "--top_k", "0", "--batch_size", "0",
                                           "--logit_chunk_rows", "-1"])
    assert [loc for _, loc, _ in e.value.lines] == ["--top_k", "--batch_size", "--logit_chunk_rows"]
    assert "must be >= 1, got -1" in str(e.value)
    with pytest.raises(DataError) as e:
        parse_config(evaluate.Config, [*split, "--model", "zoo:x", "--batch_size", "0", "--max_new_tokens", "-2"])
    assert [loc for _, loc, _ in e.value.lines] == ["--batch_size", "--max_new_tokens"]
    assert parse_config(generate_cot.Config, [*split, "--teacher", "zoo:x"]).top_k >= 1  # the defaults pass
    r = run_vlm("generate_cot", "--teacher", "zoo:no-such-entry", *split, "--top_k", "0")
    assert r.returncode == 2 and "flags: --top_k: must be >= 1, got 0" in r.stderr and "no-such-entry" not in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("family", ["llava-ov", "qwen2-vl"])
@pytest.mark.parametrize("chunk_rows", [256, 3])
def test_rescoring_writes_the_cache_bytes_of_full_logits(mirrors, family, chunk_rows, tmp_path):
    """generate_cot's re-scoring (head on target rows, chunked, top-k per chunk) vs the full-logit path it
    replaced: the same cache, byte for byte, at the default chunk size. With tiny chunks the CPU GEMM takes
    another kernel for a 3-row matrix and float32 log_tail may move by float32 rounding; ids and fp16 log-probs stay equal."""
    from types import SimpleNamespace

    from vlm.kd import CacheWriter, target_rows
    from vlm.stages.generate_cot import rescore

    adapter = mirrors[family]
    img = Image.open(IMAGE).convert("RGB")
    convs = conversations()
    samples = [SimpleNamespace(id=f"s{i}", image=IMAGE) for i in range(len(convs))]
    vocab = output_head(adapter.model).weight.shape[0]
    with torch.no_grad(), CacheWriter(tmp_path / "old", k=8, vocab_size=vocab) as w:
        batch = adapter.training_batch(convs, [img] * len(convs))
        labels = batch.pop("labels")
        logits = adapter.model(**batch).logits
        for row, s in enumerate(samples):
            w.add(s.id, *target_rows(logits[row].float(), labels[row]))
    recipe = SimpleNamespace(conversation=lambda s, outputs, blind: convs[int(s.id[1:])])
    cfg = SimpleNamespace(batch_size=2, blind=False, logit_chunk_rows=chunk_rows)
    with CacheWriter(tmp_path / "new", k=8, vocab_size=vocab) as w:
        rescore(adapter, recipe, samples, {s.id: {"phases": []} for s in samples}, w, cfg)
    names = sorted(p.name for p in (tmp_path / "old").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "new").iterdir())
    if chunk_rows >= 256:
        assert all((tmp_path / "old" / n).read_bytes() == (tmp_path / "new" / n).read_bytes() for n in names)
    else:
        from vlm.kd import LogitCache

        old, new = LogitCache(tmp_path / "old"), LogitCache(tmp_path / "new")
        for s in samples:
            a, b = old.get(s.id), new.get(s.id)
            assert torch.equal(a.ids, b.ids) and torch.equal(a.logprobs, b.logprobs) and torch.equal(a.target_ids, b.target_ids)
            assert torch.allclose(a.log_tail, b.log_tail, rtol=0, atol=2e-6)  # a difference of two ~6.4 logsumexps


@pytest.mark.gpu
@pytest.mark.parametrize("full", [False, True])
def test_fsdp_finetune_on_gpus(tmp_path, full):
    """FSDP2 through the Trainer (accelerate shards only on accelerators: on CPU --fsdp is refused above): LoRA and
    full fine-tune train, the head runs inside the sharded forward, and the result saves whole and loads."""
    import json
    import os
    import subprocess
    import sys

    nproc = min(2, torch.cuda.device_count())
    env = {**os.environ, "VLM_ZOO_DIR": str(tmp_path / "zoo")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "vlm", "finetune",
           "--model", "zoo:llava-ov-mirror", "--data", str(SAMPLE / "hypo3d.json"), "--images_dir", str(SAMPLE / "images"),
           "--limit", "8", "--batch_size", "2", "--max_steps", "3", "--fsdp", "--gradient_checkpointing",
           "--out_dir", str(tmp_path / "run"), *(["--full_finetune"] if full else [])]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "trainer_log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log if "loss" in e)
    load_model("zoo:llava-ov-mirror", adapter=str(tmp_path / "run" / "adapter"), device="cuda")
