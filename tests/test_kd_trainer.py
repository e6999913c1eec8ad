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
