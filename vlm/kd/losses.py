"""Distillation losses (docs/DESIGN.md: KD loss): ``loss = α·CE + (1−α)·T²·D(teacher_T ‖ student_T)``.

What training runs: ``target_loss_sums`` (called by ``vlm.kd.trainer.DistillTrainer.compute_loss``) applies the
LM head to the target rows only, in chunks (``chunked_sums``), and returns the CE and divergence SUMS, which
``combined_loss`` weighs and divides by the accumulated batch's target count. ``kd_loss`` / ``ce_sum`` /
``full_vocab_kd`` take full [B, L, V] logits: they are the readable reference versions the chunked path is
tested against (and what bench/kd.py measures), not the training path.

Conventions (HF causal LM):

* ``student_logits`` [B, L, V] (model output), ``labels`` [B, L] with IGNORE_INDEX (-100) where there is no target.
  NEXT-TOKEN SHIFT: ``student_logits[:, t]`` predicts ``labels[:, t + 1]``; ``labels[:, 0]`` is never a target
  (``vlm.kd.cache.shifted_rows``, the one selection of target rows, shared with the cache's writer).
* Cached teacher tensors (``TopK``) are aligned to the LABEL positions: ``ids`` / ``logprobs`` [B, L, k],
  ``log_tail`` [B, L]; whatever sits where ``labels == IGNORE_INDEX`` is ignored (``align_teacher`` builds them).
* Full teacher logits (``full_vocab_kd``) are a model output like the student's: aligned like
  ``student_logits`` (position t predicts label t + 1).
* Every function returns SUMS over target tokens (``count_targets`` gives the count): the mean must be taken over the whole
  accumulated batch — the HF Trainer passes ``num_items_in_batch`` (target tokens over all
  gradient-accumulation micro-batches) to ``compute_loss``; divide by that (``combined_loss``). Dividing
  each micro-batch by its own count would weight tokens of short micro-batches more.

Top-k divergence. The teacher distribution is the k cached probabilities plus one tail bucket (the mass
outside the top-k); the student's is its own probabilities at the same k ids plus its own tail bucket
(1 − their sum, computed as a logsumexp over the other logits, so it stays exact when the tail is tiny and
its gradient is bounded). This is the divergence between the two distributions coarse-grained to k+1
events: exact when k = V; for forward KL it can only under-estimate the full-vocab value (data processing
inequality), by the tail mass times the divergence inside the tail (bench/kd.py measures it).

Temperature. The student is exact: log_softmax(student_logits / T). The cache stores the teacher at T = 1
only; at T ≠ 1 the teacher is renormalised from the cached top-k log-probs / T together with the tail bucket
treated as ONE token of log-prob log_tail, i.e. the tail's tempered mass is (tail)^(1/T) instead of
Σ_tail p_j^(1/T). Exact at T = 1 (and for k = V); at T > 1 it under-states the tempered tail (the real
one is spread over many tokens, each of which gains mass), at T < 1 it over-states it. Exact teacher
temperatures other than 1 need full logits (``full_vocab_kd``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from vlm.kd.cache import LOG_TINY, TopK, shifted_rows
from vlm.models.base import IGNORE_INDEX, head_replaced

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


# ---------------------------------------------------------------------------------------------- core
def divergence_from_logprobs(t_logp: torch.Tensor, s_logp: torch.Tensor, divergence: str = "forward_kl",
                             beta: float = 0.5) -> torch.Tensor:
    """Per-row divergence between two normalised log-distributions over the last dim -> [...].

    forward_kl = KL(t ‖ s); reverse_kl = KL(s ‖ t);
    jsd = β·KL(t ‖ m) + (1 − β)·KL(s ‖ m) with m = β·t + (1 − β)·s — the generalised JSD of GKD
    (Agarwal et al. 2024, "On-Policy Distillation of Language Models", arXiv 2306.13649, Eq. 1) exactly as
    huggingface/trl ``GKDTrainer.generalized_jsd_loss`` (trl/trainer/gkd_trainer.py) computes it, including
    its end points: β = 0 is taken as forward KL(t ‖ s) and β = 1 as reverse KL(s ‖ t) (the formula itself
    vanishes there; its gradient direction tends to those KLs)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r} (known: {', '.join(DIVERGENCES)})")
    if divergence == "jsd":
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"jsd beta must be in [0, 1], got {beta}")
        if beta == 0.0:
            divergence = "forward_kl"
        elif beta == 1.0:
            divergence = "reverse_kl"
    if divergence == "forward_kl":
        return (t_logp.exp() * (t_logp - s_logp)).sum(-1)
    if divergence == "reverse_kl":
        return (s_logp.exp() * (s_logp - t_logp)).sum(-1)
    m_logp = torch.logsumexp(torch.stack([t_logp + math.log(beta), s_logp + math.log1p(-beta)]), dim=0)
    kl_t = (t_logp.exp() * (t_logp - m_logp)).sum(-1)
    kl_s = (s_logp.exp() * (s_logp - m_logp)).sum(-1)
    return beta * kl_t + (1.0 - beta) * kl_s


def student_buckets(student_rows: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0,
                    lse: torch.Tensor | None = None) -> torch.Tensor:
    """Student log-probs at temperature T, gathered at the teacher ids, plus the student's tail bucket:
    [N, V] logits, [N, k] ids -> [N, k + 1] (float32, floored at log(tiny)). ``lse``: logsumexp of the rows at
    this temperature [N, 1], when the caller already has it (one vocabulary-wide pass fewer)."""
    x = student_rows.float()
    if temperature != 1.0:
        x = x / temperature
    ids = ids.long()
    if lse is None:
        lse = torch.logsumexp(x, dim=-1, keepdim=True)
    gathered = x.gather(-1, ids) - lse
    if ids.shape[-1] >= x.shape[-1]:  # k = V: nothing outside the top-k
        tail = torch.full_like(lse, LOG_TINY)
    else:
        # log(1 - sum p_topk) = logsumexp over the other logits - lse. A finite fill (not -inf) keeps the
        # backward free of NaNs even when every logit is masked.
        rest = x.scatter(-1, ids, torch.finfo(x.dtype).min)
        tail = torch.logsumexp(rest, dim=-1, keepdim=True) - lse
    return torch.cat([gathered, tail], dim=-1).clamp_min(LOG_TINY)


def teacher_buckets(logprobs: torch.Tensor, log_tail: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cached teacher top-k log-probs [N, k] + tail [N] -> normalised [N, k + 1] log-distribution at T
    (approximate for T != 1, see the module docstring)."""
    lp = torch.cat([logprobs.float(), log_tail.float().unsqueeze(-1)], dim=-1).clamp_min(LOG_TINY)
    return torch.log_softmax(lp / temperature, dim=-1).clamp_min(LOG_TINY)


def topk_divergence(student_rows: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor, log_tail: torch.Tensor,
                    divergence: str = "forward_kl", beta: float = 0.5, temperature: float = 1.0,
                    lse: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token divergence [N] from student logits rows [N, V] and the teacher's cached rows (``lse``: see
    ``student_buckets``)."""
    _check_temperature(temperature)
    with torch.no_grad():
        t = teacher_buckets(logprobs, log_tail, temperature)
    s = student_buckets(student_rows, ids, temperature, lse=lse)
    return divergence_from_logprobs(t, s, divergence, beta)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


# ---------------------------------------------------------------------------------------------- losses
def kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher: TopK, divergence: str = "forward_kl",
            beta: float = 0.5, temperature: float = 1.0) -> tuple[torch.Tensor, int]:
    """Top-k distillation: (sum over target tokens of D(teacher_T ‖ student_T), number of target tokens).

    ``teacher`` is TopK-like (``.ids``, ``.logprobs`` [B, L, k], ``.log_tail`` [B, L]) aligned to LABEL
    positions. The sum is WITHOUT the T² factor; ``combined_loss`` applies it."""
    rows, _, mask = shifted_rows(student_logits, labels)
    if teacher.ids.shape[:2] != labels.shape or teacher.log_tail.shape != labels.shape:
        raise ValueError(f"teacher tensors must be aligned to labels {tuple(labels.shape)}: got ids "
                         f"{tuple(teacher.ids.shape)}, log_tail {tuple(teacher.log_tail.shape)}")
    ids = teacher.ids[:, 1:][mask]
    lp = teacher.logprobs[:, 1:][mask]
    tail = teacher.log_tail[:, 1:][mask]
    n = int(rows.shape[0])
    if n == 0:
        return student_logits.sum() * 0.0, 0
    return topk_divergence(rows, ids, lp, tail, divergence, beta, temperature).sum(), n


def full_vocab_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  divergence: str = "forward_kl", beta: float = 0.5,
                  temperature: float = 1.0) -> tuple[torch.Tensor, int]:
    """The exact divergence from full teacher logits [B, L, V] (aligned like the student's): (sum, count)."""
    _check_temperature(temperature)
    rows, _, mask = shifted_rows(student_logits, labels)
    if teacher_logits.shape[:2] != student_logits.shape[:2]:
        raise ValueError(f"teacher_logits {tuple(teacher_logits.shape)} vs student_logits {tuple(student_logits.shape)}")
    n = int(rows.shape[0])
    if n == 0:
        return student_logits.sum() * 0.0, 0
    with torch.no_grad():
        t = torch.log_softmax(teacher_logits[:, :-1][mask].float() / temperature, dim=-1)
    s = torch.log_softmax(rows.float() / temperature, dim=-1)
    return divergence_from_logprobs(t, s, divergence, beta).sum(), n


def ce_sum(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over target tokens (normalise with the same count as the KD sum)."""
    rows, targets, _ = shifted_rows(student_logits, labels)
    if rows.shape[0] == 0:
        return student_logits.sum() * 0.0
    return F.cross_entropy(rows.float(), targets, reduction="sum")


def count_targets(labels: torch.Tensor) -> int:
    """Target tokens under the shift (what ``kd_loss`` / ``ce_sum`` sum over)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def turn_index(labels: torch.Tensor) -> torch.Tensor:
    """[B, L] labels -> [B, L] long: 1, 2, … on the targets of each row's first, second, … assistant turn (an
    unbroken run of targets), 0 where there is no target."""
    on = labels != IGNORE_INDEX
    starts = on & ~F.pad(on[:, :-1], (1, 0))  # first token of each turn
    return torch.cumsum(starts.long(), dim=1) * on


def target_weights(labels: torch.Tensor, answer_weight: float) -> torch.Tensor:
    """Per-token loss weights at label positions [B, L] (float32): ``answer_weight`` on the targets of each row's
    LAST assistant turn (its answer), 1 on the earlier turns (the reasoning), 0 where there is no target. A row
    with one assistant turn is all answer, so its weighted mean is its plain mean."""
    turn = turn_index(labels)
    weights = (turn > 0).float()
    weights[(turn > 0) & (turn == turn.amax(-1, keepdim=True))] = float(answer_weight)
    return weights


def weighted_count(labels: torch.Tensor, answer_weight: float) -> torch.Tensor:
    """Σ of ``target_weights`` under the shift: the denominator of the weighted token mean (= ``count_targets``
    at weight 1)."""
    return target_weights(labels, answer_weight)[:, 1:].sum()


def combined_loss(ce_sum: torch.Tensor, kd_sum: torch.Tensor, n_tokens: int | torch.Tensor, alpha: float,
                  temperature: float = 1.0) -> torch.Tensor:
    """(α·CE_sum + (1 − α)·T²·KD_sum) / n_tokens. ``n_tokens``: target tokens of the WHOLE accumulated batch
    (the Trainer's ``num_items_in_batch``), so micro-batches add up to the full-batch mean."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if isinstance(n_tokens, torch.Tensor):
        n_tokens = n_tokens.to(ce_sum.device).clamp_min(1)
    else:
        n_tokens = max(int(n_tokens), 1)
    return (alpha * ce_sum + (1.0 - alpha) * temperature ** 2 * kd_sum) / n_tokens


# ---------------------------------------------------------------------------------------------- at real size
# float32 [32, 151,936] = 19 MB per copy; a chunk's backward holds ~7 such copies (logits, exp/logsumexp temporaries,
# the tail's scatter copy, their gradients). On 2 CPU cores 32 rows were faster than 64 or 256 (bench/memory.py);
# on a GPU each chunk re-reads the head (1.1 GB in bf16 for a 7B model): ~30 chunk passes a step at batch 8, small
# beside the step itself.
DEFAULT_CHUNK_ROWS = 32


def _chunk_sums(rows, head, targets, weights, t_ids, t_logprobs, t_tail, divergence, beta, temperature):
    # CE as logsumexp - target logit, sharing the logsumexp with the KD buckets at T = 1: every [rows, V] copy
    # autograd keeps is one more vocabulary-wide block per chunk
    logits = head(rows).float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    ce = lse.squeeze(-1) - logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    weigh = (lambda x: x.sum()) if weights is None else (lambda x: (x * weights).sum())  # noqa: E731
    if t_ids is None:
        return weigh(ce), ce.new_zeros(())
    kd = topk_divergence(logits, t_ids, t_logprobs, t_tail, divergence, beta, temperature,
                         lse=lse if temperature == 1.0 else None)
    return weigh(ce), weigh(kd)


def chunked_sums(rows: torch.Tensor, head, targets: torch.Tensor, teacher: TopK | None = None, *,
                 divergence: str = "forward_kl", beta: float = 0.5, temperature: float = 1.0,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(CE sum, KD sum or None) over target rows, with the LM ``head`` applied ``chunk_rows`` rows at a time.

    The same sums as ``ce_sum`` / ``kd_loss`` on full logits, without ever holding more than one float32
    [chunk_rows, V] block: each chunk runs under activation checkpointing, so only its hidden rows are kept
    for backward and its logits are recomputed there. ``head``: rows [n, H] -> logits [n, V] (the LM head
    module or its forward); ``teacher``: rows aligned with ``rows`` (ids / logprobs [N, k], log_tail [N]);
    ``weights``: a weight per row [N] (``target_weights``), or None for plain sums."""
    from torch.utils.checkpoint import checkpoint

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if teacher is not None:
        _check_temperature(temperature)
    ce = kd = rows.new_zeros((), dtype=torch.float32)
    if rows.shape[0] == 0:  # keep the graph connected to the head (DDP expects every step to touch it)
        zero = head(rows[:0]).float().sum() * 0.0
        return ce + zero, (kd + zero if teacher is not None else None)
    grad = torch.is_grad_enabled()
    for lo in range(0, rows.shape[0], chunk_rows):
        hi = lo + chunk_rows
        t = (None, None, None) if teacher is None else (teacher.ids[lo:hi].long(), teacher.logprobs[lo:hi].float(),
                                                        teacher.log_tail[lo:hi].float())
        w = None if weights is None else weights[lo:hi].float()
        args = (rows[lo:hi], head, targets[lo:hi], w, *t, divergence, beta, temperature)
        c, k = checkpoint(_chunk_sums, *args, use_reentrant=False) if grad else _chunk_sums(*args)
        ce, kd = ce + c, kd + k
    return ce, (kd if teacher is not None else None)


def target_loss_sums(model, inputs: dict, labels: torch.Tensor, teacher: TopK | None = None, *,
                     divergence: str = "forward_kl", beta: float = 0.5, temperature: float = 1.0,
                     chunk_rows: int = DEFAULT_CHUNK_ROWS, answer_weight: float = 1.0):
    """One training forward: (CE sum, KD sum or None, model output) over the target tokens of ``labels``, with the
    LM head applied inside the forward to the target rows only (``head_replaced`` + ``chunked_sums``).
    ``teacher``: cached top-k aligned to label positions ([B, L, k] / [B, L], ``align_teacher``).
    ``answer_weight`` != 1: each token's terms weighted by ``target_weights`` (sums to divide by ``weighted_count``)."""
    weights = None if answer_weight == 1.0 else target_weights(labels, answer_weight)

    def sums(head_forward, hidden):
        rows, targets, mask = shifted_rows(hidden, labels)
        rows_teacher = None if teacher is None else TopK(*(t[:, 1:][mask] for t in teacher[:3]))
        ce, kd = chunked_sums(rows, head_forward, targets, rows_teacher, divergence=divergence, beta=beta,
                              temperature=temperature, chunk_rows=chunk_rows,
                              weights=None if weights is None else weights[:, 1:][mask])
        return torch.stack([ce, ce.new_zeros(()) if kd is None else kd])

    with head_replaced(model, sums):
        outputs = model(**inputs)
    ce, kd = outputs.logits.float().unbind()
    return ce, (kd if teacher is not None else None), outputs


# ---------------------------------------------------------------------------------------------- alignment
def check_alignment(sample_id: str, labels: torch.Tensor, target_ids: torch.Tensor) -> None:
    """The targets of one label row [L] (under the shift) must be exactly the cached ``target_ids`` [n]: the
    student trains on the teacher's own tokens. Raises ValueError naming the sample and the first mismatch."""
    nxt = labels[1:]
    targets = nxt[nxt != IGNORE_INDEX].to(torch.long).cpu()
    cached = torch.as_tensor(target_ids).to(torch.long).cpu()
    if targets.numel() != cached.numel():
        raise ValueError(f"sample {sample_id!r}: the labels have {targets.numel()} target tokens but the logit cache "
                         f"has {cached.numel()} rows (different transcript, chat template or tokenizer?)")
    bad = (targets != cached).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"sample {sample_id!r}: target token {i} is {int(targets[i])} in the labels but "
                         f"{int(cached[i])} in the logit cache ({bad.numel()} of {cached.numel()} differ; the student "
                         "must be trained on the teacher's tokens: same tokenizer, same transcript)")


def align_teacher(labels: torch.Tensor, rows: Sequence[TopK], sample_ids: Sequence[str] | None = None,
                  check: bool = True) -> TopK:
    """Per-sample cached rows (``LogitCache.get``) -> a batch aligned to label positions: ids / logprobs
    [B, L, k], log_tail [B, L], target_ids [B, L] (IGNORE_INDEX / zeros where there is no target). Checks alignment
    first (``check_alignment``)."""
    B, L = labels.shape
    if len(rows) != B:
        raise ValueError(f"{B} label rows but {len(rows)} cached samples")
    k = rows[0].ids.shape[-1] if rows else 0
    dev = labels.device
    ids = torch.zeros(B, L, k, dtype=torch.long, device=dev)
    lp = torch.zeros(B, L, k, dtype=rows[0].logprobs.dtype if rows else torch.float32, device=dev)
    tail = torch.zeros(B, L, dtype=torch.float32, device=dev)
    tgt = torch.full((B, L), IGNORE_INDEX, dtype=torch.long, device=dev)
    for b, r in enumerate(rows):
        sid = sample_ids[b] if sample_ids is not None else str(b)
        if check:
            if r.target_ids is None:
                raise ValueError(f"sample {sid!r}: no cached target_ids to check the alignment against")
            check_alignment(sid, labels[b], r.target_ids)
        pos = (labels[b, 1:] != IGNORE_INDEX).nonzero().squeeze(-1) + 1
        if pos.numel() != r.ids.shape[0]:
            raise ValueError(f"sample {sid!r}: {pos.numel()} target tokens but {r.ids.shape[0]} cached rows")
        ids[b, pos] = r.ids.to(dev, torch.long)
        lp[b, pos] = r.logprobs.to(dev)
        tail[b, pos] = r.log_tail.to(dev, torch.float32)
        if r.target_ids is not None:
            tgt[b, pos] = r.target_ids.to(dev, torch.long)
    return TopK(ids, lp, tail, tgt)


def teacher_topk(teacher_logits: torch.Tensor, labels: torch.Tensor, k: int) -> TopK:
    """The exact float32 top-k of full teacher logits [B, L, V] (model-output alignment), shifted to label
    positions like a cache batch — the cache's content without the fp16 rounding (tests, bench)."""
    from vlm.kd.cache import topk_rows

    ids, lp, tail = topk_rows(teacher_logits[:, :-1], k)
    pad = lambda t: torch.cat([torch.zeros_like(t[:, :1]), t], dim=1)  # noqa: E731 - label position 0 has no row
    return TopK(pad(ids), pad(lp), pad(tail), labels.clone())
