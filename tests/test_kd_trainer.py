"""DistillTrainer (vlm/kd/trainer.py) as a library class: its loss equals the plain full-logit formula, and a
subclass trains and logs the CE / KD parts (a tiny random Llama on the CPU, seconds)."""

from __future__ import annotations

import json

import pytest
import torch

from vlm.kd import KDArguments, TopK, ce_sum, combined_loss, count_targets, kd_loss, teacher_topk
from vlm.kd.trainer import TEACHER_KEYS, DistillTrainer, JsonlLog
from vlm.models.base import IGNORE_INDEX

V, L = 48, 10


def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))


def batch(seed: int, rows: int = 2) -> dict:
    """Prompt (-100) then targets of different lengths, with the teacher's top-k aligned to the labels."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, V, (rows, L), generator=g)
    labels = input_ids.clone()
    for b in range(rows):
        labels[b, : 3 + b] = IGNORE_INDEX
    topk = teacher_topk(torch.randn(rows, L, V, generator=g) * 3, labels, k=8)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
            **dict(zip(TEACHER_KEYS, topk))}


def training_args(tmp_path, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path / "checkpoints"), use_cpu=True, report_to=[], save_strategy="no",
                             remove_unused_columns=False, dataloader_num_workers=0, **kw)


@pytest.mark.parametrize("kd_active", [True, False])
def test_compute_loss_is_the_full_logit_formula(tmp_path, kd_active):
    model = tiny_lm()
    kd_args = KDArguments(alpha=0.3, temperature=2.0, divergence="jsd", jsd_beta=0.4, logit_chunk_rows=3)
    trainer = DistillTrainer(model=model, args=training_args(tmp_path), kd_args=kd_args, kd_active=kd_active)
    inputs = batch(0)
    labels, teacher = inputs["labels"], TopK(*(inputs[k] for k in TEACHER_KEYS))
    n = count_targets(labels) + 5  # as if another micro-batch of the step held 5 more targets
    loss = trainer.compute_loss(model, dict(inputs), num_items_in_batch=n)

    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    ce = ce_sum(logits, labels)
    if kd_active:
        kd, _ = kd_loss(logits, labels, teacher, "jsd", beta=0.4, temperature=2.0)
        expected = combined_loss(ce, kd, n, alpha=0.3, temperature=2.0)
    else:
        expected = ce / n
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_a_subclass_trains_and_logs_both_parts(tmp_path):
    class CountingTrainer(DistillTrainer):
        calls = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            type(self).calls += 1
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def collate(items):
        return {k: torch.cat([item[k] for item in items]) for k in items[0]}

    model = tiny_lm()
    rows = [batch(seed, rows=1) for seed in range(4)]
    log = tmp_path / "trainer_log.jsonl"
    args = training_args(tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=2, max_steps=2,
                         logging_steps=1, learning_rate=1e-2)
    trainer = CountingTrainer(model=model, args=args, train_dataset=rows, data_collator=collate,
                              kd_args=KDArguments(alpha=0.5), kd_active=True, callbacks=[JsonlLog(log)])
    trainer.train()
    assert CountingTrainer.calls == 4  # 2 steps x 2 accumulated micro-batches
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [e for e in entries if "loss" in e]
    assert [e["step"] for e in steps] == [1, 2]
    for e in steps:
        assert e["ce_loss"] > 0 and e["kd_loss"] > 0
        # the logged loss is the step's token mean of the combined objective
        assert e["loss"] == pytest.approx(0.5 * e["ce_loss"] + 0.5 * e["kd_loss"], abs=1e-3)


def two_turn_batch(seed: int) -> dict:
    """``batch`` whose targets are two assistant turns: a reasoning turn, a prompt gap, then the answer turn."""
    inputs = batch(seed)
    inputs["labels"][:, 6:8] = IGNORE_INDEX  # the user turn between them
    return inputs


def test_target_weights_put_the_answer_weight_on_the_last_turn_only():
    from vlm.kd.losses import target_weights, weighted_count

    labels = two_turn_batch(0)["labels"]
    labels[1, 8:] = IGNORE_INDEX  # row 1: a single turn (the gap removed what followed it)
    weights = target_weights(labels, 4.0)
    assert weights[0].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 4, 4]
    assert weights[1].tolist() == [0, 0, 0, 0, 4, 4, 0, 0, 0, 0]
    assert float(weighted_count(labels, 4.0)) == float(weights[:, 1:].sum())
    assert torch.equal(target_weights(labels, 1.0), (labels != IGNORE_INDEX).float())
    assert not target_weights(torch.full((1, 5), IGNORE_INDEX), 3.0).any()  # no target at all


@pytest.mark.parametrize("kd_active", [True, False])
def test_answer_weight_gives_the_weighted_token_mean(tmp_path, kd_active):
    from vlm.kd.losses import target_weights

    model = tiny_lm()
    kd_args = KDArguments(alpha=0.3, answer_weight=5.0, logit_chunk_rows=3)
    trainer = DistillTrainer(model=model, args=training_args(tmp_path), kd_args=kd_args, kd_active=kd_active)
    inputs = two_turn_batch(1)
    labels, teacher = inputs["labels"], TopK(*(inputs[k] for k in TEACHER_KEYS))
    _, n = trainer.get_batch_samples(iter([dict(inputs)]), 1, torch.device("cpu"))
    loss = trainer.compute_loss(model, dict(inputs), num_items_in_batch=n)

    # reference: per-token full-logit terms, weighted, over the sum of the weights
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    w = target_weights(labels, 5.0)[:, 1:]
    mask = labels[:, 1:] != IGNORE_INDEX
    ce = torch.nn.functional.cross_entropy(logits[:, :-1][mask], labels[:, 1:][mask], reduction="none")
    expected = (ce * w[mask]).sum()
    if kd_active:
        from vlm.kd.losses import topk_divergence

        kd = topk_divergence(logits[:, :-1][mask], *(t[:, 1:][mask] for t in teacher[:3]))
        expected = 0.3 * expected + 0.7 * (kd * w[mask]).sum()
    torch.testing.assert_close(n, w.sum())
    torch.testing.assert_close(loss, expected / w.sum(), atol=1e-5, rtol=1e-5)
    assert w[mask].unique().tolist() == [1.0, 5.0]  # both turns are in the batch


def test_answer_weight_leaves_one_turn_targets_unchanged(tmp_path):
    """Direct (answer-only) targets: every token is the answer, so the weighted mean is the plain mean, also over
    accumulated micro-batches."""
    model = tiny_lm()
    micro = [batch(2), batch(3, rows=1)]
    losses = []
    for weight in (1.0, 7.0):
        trainer = DistillTrainer(model=model, args=training_args(tmp_path), kd_active=True,
                                 kd_args=KDArguments(answer_weight=weight))
        _, n = trainer.get_batch_samples(iter([dict(b) for b in micro]), 2, torch.device("cpu"))
        losses.append(sum(trainer.compute_loss(model, dict(b), num_items_in_batch=n) for b in micro))
    torch.testing.assert_close(losses[0], losses[1])
