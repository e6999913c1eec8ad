"""Logit cache and distillation losses (vlm/kd): small random tensors, seconds in all."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vlm.data.errors import DataError
from vlm.kd import (
    DIVERGENCES,
    CacheWriter,
    LogitCache,
    TopK,
    align_teacher,
    bytes_per_token,
    ce_sum,
    check_alignment,
    combined_loss,
    count_targets,
    full_vocab_kd,
    kd_loss,
    target_rows,
    teacher_topk,
    topk_rows,
)
from vlm.models.base import IGNORE_INDEX

REPO = Path(__file__).resolve().parents[1]
V = 50
IGN = IGNORE_INDEX


def make_batch(seed: int = 0, B: int = 4, L: int = 12, vocab: int = V, scale: float = 3.0):
    """Ragged targets: each row = prompt (-100) + targets + a -100 gap (second turn) + padding (-100)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((B, L), IGN, dtype=torch.long)
    spans = [(2, 6), (3, 11), (1, 4), (5, 9)]
    for b in range(B):
        lo, hi = spans[b % len(spans)]
        labels[b, lo:hi] = torch.randint(0, vocab, (hi - lo,), generator=g)
        if b == 1:
            labels[b, 7] = IGN  # a user turn in the middle
    teacher = torch.randn(B, L, vocab, generator=g) * scale
    student = torch.randn(B, L, vocab, generator=g) * scale
    return student, teacher, labels


def write_cache(path, teacher_logits, labels, k, shard_rows=65536, ids=None):
    ids = ids or [f"s{b}" for b in range(labels.shape[0])]
    with CacheWriter(path, k=k, vocab_size=teacher_logits.shape[-1], meta={"teacher": "test"}, shard_rows=shard_rows) as w:
        for b, sid in enumerate(ids):
            w.add(sid, *target_rows(teacher_logits[b], labels[b]))
    return ids


def cached_batch(path, labels, ids):
    cache = LogitCache(path)
    return align_teacher(labels, [cache.get(s) for s in ids], ids)


# ---------------------------------------------------------------------------------------------- (a) exactness
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_with_k_equal_v_is_the_full_vocab_divergence(divergence, temperature):
    student, teacher, labels = make_batch()
    full, n_full = full_vocab_kd(student, teacher, labels, divergence, beta=0.3, temperature=temperature)
    top, n = kd_loss(student, labels, teacher_topk(teacher, labels, V), divergence, beta=0.3, temperature=temperature)
    assert n == n_full == count_targets(labels) > 0
    assert full.item() > 0.1
    torch.testing.assert_close(top, full, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_cached_fp16_path_matches_full_vocab(tmp_path, divergence):
    student, teacher, labels = make_batch(1)
    ids = write_cache(tmp_path / "c", teacher, labels, k=V)
    top, n = kd_loss(student, labels, cached_batch(tmp_path / "c", labels, ids), divergence)
    full, _ = full_vocab_kd(student, teacher, labels, divergence)
    torch.testing.assert_close(top, full, rtol=2e-3, atol=1e-3)


def test_topk_forward_kl_under_estimates_and_jsd_endpoints():
    student, teacher, labels = make_batch(2)
    full, _ = full_vocab_kd(student, teacher, labels, "forward_kl")
    top, _ = kd_loss(student, labels, teacher_topk(teacher, labels, 5), "forward_kl")
    assert 0 < top.item() <= full.item()  # coarse-graining to k+1 events can only lose divergence
    t = teacher_topk(teacher, labels, 5)
    for beta, same in ((0.0, "forward_kl"), (1.0, "reverse_kl")):  # TRL's end points
        torch.testing.assert_close(kd_loss(student, labels, t, "jsd", beta=beta)[0], kd_loss(student, labels, t, same)[0])
    with pytest.raises(ValueError, match="unknown divergence"):
        kd_loss(student, labels, t, "tvd")


def test_normalisation_does_not_change_with_gradient_accumulation():
    student, teacher, labels = make_batch(3)
    t = teacher_topk(teacher, labels, 5)
    counts = [count_targets(labels[i:i + 1]) for i in range(4)]
    assert len(set(counts)) > 1  # ragged

    full = student.clone().requires_grad_(True)
    ce = ce_sum(full, labels)
    kd, n = kd_loss(full, labels, t, "jsd")
    loss_full = combined_loss(ce, kd, n, alpha=0.4, temperature=2.0)
    loss_full.backward()

    acc = student.clone().requires_grad_(True)
    total = count_targets(labels)  # what the Trainer passes as num_items_in_batch
    loss_acc = 0.0
    for sl in (slice(0, 2), slice(2, 4)):
        sub_t = TopK(*(x[sl] for x in t))
        kd_i, _ = kd_loss(acc[sl], labels[sl], sub_t, "jsd")
        loss_i = combined_loss(ce_sum(acc[sl], labels[sl]), kd_i, total, alpha=0.4, temperature=2.0)
        loss_i.backward()
        loss_acc = loss_acc + loss_i.detach()
    torch.testing.assert_close(loss_acc, loss_full.detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(acc.grad, full.grad, atol=1e-7, rtol=1e-6)

    # the per-micro-batch mean (what dividing by each micro-batch's own count gives) is a different loss
    naive = sum(combined_loss(ce_sum(student[sl], labels[sl]), kd_loss(student[sl], labels[sl], TopK(*(x[sl] for x in t)), "jsd")[0],
                              count_targets(labels[sl]), 0.4, 2.0) for sl in (slice(0, 2), slice(2, 4))) / 2
    assert abs(naive.item() - loss_full.item()) > 1e-3


# ---------------------------------------------------------------------------------------------- (b) mixing
def test_combined_loss_t2_scaling_and_alpha():
    ce, kd = torch.tensor(2.0), torch.tensor(3.0)
    assert combined_loss(ce, kd, 4, alpha=0.3, temperature=2.0).item() == pytest.approx((0.3 * 2 + 0.7 * 4 * 3) / 4)
    assert combined_loss(ce, kd, 4, alpha=1.0, temperature=5.0).item() == pytest.approx(0.5)
    assert combined_loss(ce, kd, 4, alpha=0.0, temperature=3.0).item() == pytest.approx(9 * 3 / 4)
    assert combined_loss(ce, kd, torch.tensor(4), alpha=0.0, temperature=1.0).item() == pytest.approx(0.75)
    with pytest.raises(ValueError):
        combined_loss(ce, kd, 4, alpha=1.5)
    # ce_sum is the summed HF next-token CE
    student, _, labels = make_batch(4)
    ref = torch.nn.functional.cross_entropy(student[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), reduction="sum")
    torch.testing.assert_close(ce_sum(student, labels), ref)


# ---------------------------------------------------------------------------------------------- (c) cache
def test_cache_round_trip_across_shards(tmp_path):
    g = torch.Generator().manual_seed(5)
    samples = {"a": 2, "b": 3, "c": 5}
    logits = {s: torch.randn(n, V, generator=g) * 3 for s, n in samples.items()}
    targets = {s: torch.randint(0, V, (n,), generator=g) for s, n in samples.items()}
    with CacheWriter(tmp_path / "c", k=5, vocab_size=V, meta={"teacher": "t"}, shard_rows=5) as w:
        for s in samples:
            w.add(s, logits[s].to(torch.bfloat16 if s == "c" else torch.float32), targets[s])
        with pytest.raises(ValueError, match="duplicate sample id 'a'"):
            w.add("a", logits["a"], targets["a"])
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["format"] == "vlm-topk-v1" and index["rows"] == 10 and index["k"] == 5 and index["meta"] == {"teacher": "t"}
    assert [s["rows"] for s in index["shards"]] == [5, 5]
    assert index["samples"]["b"] == {"shard": 0, "start": 2, "length": 3}
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["index.json", "shard-00000.safetensors", "shard-00001.safetensors"]

    cache = LogitCache(tmp_path / "c")
    assert len(cache) == 3 and "b" in cache and "z" not in cache and cache.ids() == ["a", "b", "c"]
    assert (cache.k, cache.vocab_size, cache.meta) == (5, V, {"teacher": "t"})
    for s, n in samples.items():
        got = cache.get(s)
        src = logits[s].to(torch.bfloat16).float() if s == "c" else logits[s]
        ids, lp, tail = topk_rows(src, 5)
        assert got.ids.dtype == torch.int32 and got.logprobs.dtype == torch.float16 and got.log_tail.dtype == torch.float32
        assert got.ids.shape == (n, 5)
        assert torch.equal(got.ids.long(), ids)
        torch.testing.assert_close(got.logprobs.float(), lp, rtol=1e-3, atol=1e-3)
        ref_tail = torch.log1p(-lp.exp().sum(-1))
        torch.testing.assert_close(got.log_tail, ref_tail, rtol=1e-5, atol=1e-5)
        assert torch.equal(got.target_ids.long(), targets[s])
        assert got.ids.untyped_storage().nbytes() == n * 5 * 4  # a copy of the rows asked for, not the shard
    with pytest.raises(KeyError):
        cache.get("z")


def test_k_larger_than_vocab_is_clamped(tmp_path):
    with CacheWriter(tmp_path / "c", k=500, vocab_size=V) as w:
        w.add("x", torch.randn(3, V), torch.zeros(3, dtype=torch.long))
    cache = LogitCache(tmp_path / "c")
    assert cache.k == V and cache.get("x").ids.shape == (3, V)
    assert torch.all(cache.get("x").log_tail < -80)  # empty tail: floored at log(tiny)
    assert bytes_per_token(64) == 392


def test_writer_crash_leaves_no_index_and_reads_after_the_writer_is_gone(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(REPO)!r})
        from vlm.kd import CacheWriter
        g = torch.Generator().manual_seed(0)
        with CacheWriter({str(tmp_path / 'done')!r}, k=4, vocab_size=20, shard_rows=4) as w:
            for i in range(3):
                w.add(f"s{{i}}", torch.randn(3, 20, generator=g), torch.arange(3) + i)
        with CacheWriter({str(tmp_path / 'big')!r}, k=32, vocab_size=64) as w:  # one 64k-row shard, 13 MB
            for i in range(64):
                w.add(f"s{{i}}", torch.randn(1024, 64, generator=g) * 3, torch.zeros(1024, dtype=torch.long))
        w = CacheWriter({str(tmp_path / 'crash')!r}, k=4, vocab_size=20, shard_rows=4)
        w.add("s0", torch.randn(4, 20), torch.zeros(4, dtype=torch.long))  # full shard: written
        w.add("s1", torch.randn(2, 20), torch.zeros(2, dtype=torch.long))
        os._exit(3)  # killed before close
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr

    assert (tmp_path / "crash" / "shard-00000.safetensors").is_file()
    assert not (tmp_path / "crash" / "index.json").exists()
    with pytest.raises(DataError, match=r"crash/index.json: -: not found"):
        LogitCache(tmp_path / "crash")

    cache = LogitCache(tmp_path / "done")
    assert len(cache) == 3 and [s["rows"] for s in json.loads((tmp_path / "done" / "index.json").read_text())["shards"]] == [3, 3, 3]
    assert torch.equal(cache.get("s2").target_ids, torch.tensor([2, 3, 4], dtype=torch.int32))

    rss = _rss_bytes()  # (the reads above warmed up the code paths)
    big = LogitCache(tmp_path / "big")
    r = big.get("s40")
    big.get("s41")
    assert r.ids.shape == (1024, 32) and r.ids.untyped_storage().nbytes() == 1024 * 32 * 4
    if rss is not None:  # memory-mapped: reading one sample (200 kB) does not load the 13 MB shard into the heap
        shard = (tmp_path / "big" / "shard-00000.safetensors").stat().st_size
        assert shard > 12 * 2**20 and _rss_bytes() - rss < shard / 8


def _rss_bytes():
    """Anonymous resident memory (heap): what loading a shard would grow. Mapped file pages (RssFile) are
    page cache, shared and reclaimable, and the kernel maps them in large folios, so they are not counted."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def test_writer_rejects_bad_input(tmp_path):
    w = CacheWriter(tmp_path / "c", k=2, vocab_size=V)
    bad = torch.randn(2, V)
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="sample 'x': non-finite teacher logits"):
        w.add("x", bad, torch.zeros(2))
    with pytest.raises(ValueError, match=r"logits must be \[n, 50\]"):
        w.add("y", torch.randn(2, V + 1), torch.zeros(2))
    with pytest.raises(ValueError, match="2 logits rows but target_ids of shape"):
        w.add("z", torch.randn(2, V), torch.zeros(3))
    masked = torch.randn(2, V)
    masked[:, 10:] = float("-inf")  # -inf logits (masked vocabulary) are fine
    w.add("m", masked, torch.zeros(2))
    w.close()
    assert LogitCache(tmp_path / "c").ids() == ["m"]


def test_existing_cache_is_not_overwritten(tmp_path):
    with CacheWriter(tmp_path / "c", k=2, vocab_size=V) as w:
        w.add("x", torch.randn(1, V), torch.zeros(1))
    with pytest.raises(FileExistsError):
        CacheWriter(tmp_path / "c", k=2, vocab_size=V)


def test_exception_inside_the_writer_block_leaves_no_index(tmp_path):
    with pytest.raises(RuntimeError):
        with CacheWriter(tmp_path / "c", k=2, vocab_size=V, shard_rows=2) as w:
            w.add("x", torch.randn(2, V), torch.zeros(2))
            raise RuntimeError("teacher crashed")
    assert not (tmp_path / "c" / "index.json").exists()


@pytest.mark.parametrize("mutate, where", [
    (lambda i: "{not json", "index.json: line 1: malformed JSON"),
    (lambda i: {**i, "format": "other"}, "index.json: format: expected 'vlm-topk-v1'"),
    (lambda i: {**i, "k": "five"}, "index.json: k: expected a positive integer"),
    (lambda i: {**i, "samples": {**i["samples"], "x": {"shard": 0, "start": 1, "length": 9}}}, "index.json: samples.x: rows 1..10 outside shard 0"),
    (lambda i: {**i, "shards": [{"file": "shard-00009.safetensors", "rows": 3}]}, "index.json: shards[0].file: shard-00009.safetensors not found"),
])
def test_bad_index_is_a_data_error(tmp_path, mutate, where):
    with CacheWriter(tmp_path / "c", k=2, vocab_size=V) as w:
        w.add("x", torch.randn(3, V), torch.zeros(3))
    f = tmp_path / "c" / "index.json"
    new = mutate(json.loads(f.read_text()))
    f.write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(DataError) as e:
        LogitCache(tmp_path / "c")
    assert where in str(e.value) and str(f) in str(e.value)


def test_alignment_check(tmp_path):
    _, teacher, labels = make_batch(6)
    ids = write_cache(tmp_path / "c", teacher, labels, k=5)
    cache = LogitCache(tmp_path / "c")
    batch = align_teacher(labels, [cache.get(s) for s in ids], ids)
    assert torch.equal(batch.target_ids[:, 1:][labels[:, 1:] != IGN], labels[:, 1:][labels[:, 1:] != IGN])
    exact = teacher_topk(teacher, labels, 5)
    mask = labels != IGN
    assert torch.equal(batch.ids[mask], exact.ids[mask])

    wrong = labels.clone()
    pos = int((wrong[0] != IGN).nonzero()[1])
    wrong[0, pos] = (wrong[0, pos] + 1) % V
    with pytest.raises(ValueError, match="sample 's0': target token 1 is"):
        align_teacher(wrong, [cache.get(s) for s in ids], ids)
    with pytest.raises(ValueError, match="the labels have 4 target tokens but the logit cache has 7 rows"):
        check_alignment("s1", labels[0], cache.get("s1").target_ids)


# ---------------------------------------------------------------------------------------------- (d) training
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_optimising_kd_loss_lowers_the_kl(divergence):
    _, teacher, labels = make_batch(7)
    student = torch.nn.Parameter(torch.zeros(4, 12, V))
    t = teacher_topk(teacher, labels, 5)
    opt = torch.optim.Adam([student], lr=0.1)
    before = full_vocab_kd(student.detach(), teacher, labels)[0].item()
    for _ in range(30):
        opt.zero_grad()
        s, n = kd_loss(student, labels, t, divergence)
        (s / n).backward()
        opt.step()
    after = full_vocab_kd(student.detach(), teacher, labels)[0].item()
    assert after < 0.5 * before


def test_masked_positions_contribute_nothing():
    student, teacher, labels = make_batch(8)
    t = teacher_topk(teacher, labels, 5)
    x = student.clone().requires_grad_(True)
    loss, _ = kd_loss(x, labels, t, "forward_kl")
    loss.backward()
    used = torch.zeros(labels.shape, dtype=torch.bool)
    used[:, :-1] = labels[:, 1:] != IGN
    assert torch.all(x.grad[~used] == 0) and torch.all(x.grad[used].abs().sum(-1) > 0)
    # garbage where labels are -100 (student and teacher) changes nothing
    noisy_s = torch.where(used[..., None], student, torch.randn_like(student) * 100)
    garbage = TopK(torch.where((labels != IGN)[..., None], t.ids, 0), torch.where((labels != IGN)[..., None], t.logprobs, 7.0),
                   torch.where(labels != IGN, t.log_tail, 3.0))
    torch.testing.assert_close(kd_loss(noisy_s, labels, garbage, "forward_kl")[0], loss.detach())


def test_next_token_shift():
    _, target_logits, labels = make_batch(9)  # here: the teacher's distribution FOR label position p
    ids, lp, tail = topk_rows(target_logits, 5)
    label_aligned = TopK(ids, lp, tail)
    shifted = torch.randn_like(target_logits)
    shifted[:, :-1] = target_logits[:, 1:]  # student_logits[:, t] predicts labels[:, t + 1]
    ok, n = kd_loss(shifted, labels, label_aligned, "forward_kl")
    off, _ = kd_loss(target_logits, labels, label_aligned, "forward_kl")
    assert ok.item() / n < 1e-5
    assert off.item() / n > 0.1
    # full_vocab_kd: teacher logits aligned like the student's
    assert full_vocab_kd(target_logits, target_logits, labels)[0].item() < 1e-5


def test_exact_tail_bucket_has_finite_gradients_when_the_student_is_certain():
    _, teacher, labels = make_batch(10)
    t = teacher_topk(teacher, labels, 5)
    x = torch.full((4, 12, V), -200.0)
    x.scatter_(-1, torch.cat([t.ids[:, 1:], t.ids[:, -1:]], 1)[..., :1], 200.0)  # all mass on a top-k token
    x.requires_grad_(True)
    for d in DIVERGENCES:
        loss, _ = kd_loss(x, labels, t, d)
        (g,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    assert math.isfinite(full_vocab_kd(x.detach(), teacher, labels, "reverse_kl")[0].item())
