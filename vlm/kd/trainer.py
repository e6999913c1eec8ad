"""The distillation Trainer, importable and subclassable (like TRL's module-level ``GKDTrainer``).

``DistillTrainer`` is a ``transformers.Trainer`` whose ``compute_loss`` is CE — or, when the batch carries the
teacher's cached top-k (``TEACHER_KEYS``, built by the finetune Collator) and KD is active,
``alpha * CE + (1 - alpha) * T^2 * KD`` — summed over the target tokens and divided by ``num_items_in_batch``:
the target count of the whole accumulated batch on every device, so neither gradient accumulation nor the
number of devices changes the objective (vlm/kd/losses.py states the conventions). With ``answer_weight`` != 1
every term and the count carry ``target_weights`` (the answer turn weighed against the reasoning turns): a
weighted token mean, still over the whole accumulated batch. ``JsonlLog`` appends the
Trainer's log, with the ``ce_loss`` / ``kd_loss`` parts, to a JSONL file.

    trainer = DistillTrainer(model=model, args=training_args, train_dataset=rows, data_collator=collator,
                             kd_args=KDArguments(alpha=0.5), kd_active=True, callbacks=[JsonlLog(path)])
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import Trainer, TrainerCallback

from vlm.kd.args import KDArguments
from vlm.kd.cache import TopK
from vlm.kd.losses import combined_loss, target_loss_sums, weighted_count

TEACHER_KEYS = ("teacher_ids", "teacher_logprobs", "teacher_log_tail")  # batch keys of the teacher's TopK, in field order


class DistillTrainer(Trainer):
    """compute_loss = (alpha*CE + (1-alpha)*T^2*KD) summed over target tokens / num_items_in_batch (the target
    count of the whole accumulated batch; weighted, with an answer weight), so the loss is already scaled for
    gradient accumulation."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args, kd_args: KDArguments, kd_active: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.kd_args, self.kd_active = kd_args, kd_active
        self.model_accepts_loss_kwargs = True  # make the Trainer count num_items_in_batch for us
        self._parts: dict[str, list[float]] = {"ce_loss": [], "kd_loss": []}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher = {k: inputs.pop(k) for k in TEACHER_KEYS if k in inputs}
        labels = inputs.pop("labels")
        kd_args = self.kd_args
        n = num_items_in_batch if num_items_in_batch is not None else weighted_count(labels, kd_args.answer_weight)
        topk = TopK(*(teacher[k] for k in TEACHER_KEYS)) if teacher and self.kd_active else None
        # the LM head runs inside the forward on the target rows only, in chunks: no [batch, sequence, vocabulary] logits
        ce, kd, outputs = target_loss_sums(model, inputs, labels, topk, divergence=kd_args.divergence, beta=kd_args.jsd_beta,
                                           temperature=kd_args.temperature, chunk_rows=kd_args.logit_chunk_rows,
                                           answer_weight=kd_args.answer_weight)
        if kd is not None:
            loss = combined_loss(ce, kd, n, kd_args.alpha, kd_args.temperature)
            self._parts["kd_loss"].append(float(kd.detach() / n))
        else:
            loss = ce / n
        self._parts["ce_loss"].append(float(ce.detach() / n))
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.args.world_size  # DDP averages gradients over ranks; n is the global count
        return (loss, outputs) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's micro-batches and target count; with an answer weight the count is the weighted one (the
        denominator of the weighted token mean), summed over the accumulation micro-batches and the devices."""
        batches, n = super().get_batch_samples(epoch_iterator, num_batches, device)
        weight = self.kd_args.answer_weight
        if weight != 1.0 and n is not None and batches and "labels" in batches[0]:
            n = sum(weighted_count(b["labels"], weight) for b in batches).to(device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                n = self.accelerator.gather(n).sum()
        return batches, n

    def log(self, logs, *args, **kwargs):
        for key, values in self._parts.items():
            if values and "loss" in logs:
                # per-step token-mean parts, summed over the accumulation micro-batches of each step
                logs[key] = round(sum(values) / max(1, len(values)) * self.args.gradient_accumulation_steps, 4)
                values.clear()
        super().log(logs, *args, **kwargs)


class JsonlLog(TrainerCallback):
    """Appends every Trainer log entry as one line ``{"step": …, **logs}`` to ``path`` (main process only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")
