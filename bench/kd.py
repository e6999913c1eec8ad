"""Distillation from a top-k logit cache: storage, fidelity and step time (prints figures; not a test).

1. Bytes per cached token for k in {8, 32, 64, 128} vs full fp32 logits, for V = 1024 (the zoo's
   tokenizer budget) and V = 151,936 (Qwen2).
2. Relative error of the cached top-k divergence (fp16 storage, written and read back through the real
   CacheWriter / LogitCache) vs the full-vocab divergence on the same tokens: synthetic teacher logits —
   "zipf" (peaked: p ∝ rank^-s, s ~ U(1.1, 2.5) per token, like LM next-token distributions) and "gauss"
   (flatter: N(0, 1) · 3) — with a student = 0.8 · teacher + N(0, 1) noise; and, when --teacher and
   --student zoo models are given, the real logits of both on toy conversations.
3. One optimisation step (forward + backward) of a small model: CE only vs CE + KD (k = 64) read from a
   cache (cache read + alignment included in the KD time).

    python bench/kd.py [--teacher zoo:llava-ov-teacher --student zoo:llava-ov-student] [--tokens 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vlm.kd import CacheWriter, LogitCache, align_teacher, bytes_per_token, ce_sum, combined_loss, kd_loss  # noqa: E402
from vlm.kd.losses import DIVERGENCES, divergence_from_logprobs, topk_divergence  # noqa: E402
from vlm.models.base import IGNORE_INDEX  # noqa: E402
from tables import table  # noqa: E402  (bench/tables.py; this script's folder is on sys.path)

KS = (8, 32, 64, 128)
VOCABS = (1024, 151_936)
TARGETS = {"bytes_k64": 400, "kl_rel_err_k64": 0.02, "step_ratio": 1.25}


# ---------------------------------------------------------------------------------------------- 1. storage
def storage() -> None:
    rows = []
    for V in VOCABS:
        full = 4 * V
        for k in KS:
            b = bytes_per_token(k)
            rows.append([f"{V:,}", k, b, f"{full:,}", f"{full / b:,.0f}x", f"{b * 1e6 / 2**30:.2f}"])
    print("\n## Storage per cached token (ids int32 + logprobs fp16 + log_tail fp32 + target int32)\n")
    print(table(["V", "k", "B/token", "full fp32 B/token", "saving", "GiB per 1M tokens"], rows))
    print(f"target: <= {TARGETS['bytes_k64']} B/token at k=64 -> {bytes_per_token(64)} B "
          "(the zoo tokenizer, trained for 1024, ends at 601 tokens on its small corpus: 2,404 B/token full)")


# ---------------------------------------------------------------------------------------------- 2. fidelity
SYNTHETIC = {  # name -> what it stands for
    "zipf-peaked": "p ~ rank^-s, s ~ U(2, 4): a teacher re-scoring its own greedy transcript",
    "zipf-broad": "p ~ rank^-s, s ~ U(1.1, 2.5): sampled / less certain text",
    "gauss": "N(0, 1) x 3 logits: flat, worst case",
}


def synthetic(kind: str, n: int, V: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if kind.startswith("zipf"):
        lo, hi = (2.0, 4.0) if kind == "zipf-peaked" else (1.1, 2.5)
        s = torch.empty(n, 1).uniform_(lo, hi, generator=g)
        ranks = torch.arange(1, V + 1, dtype=torch.float32)
        perm = torch.randperm(V, generator=g)  # which token has which rank (shared: cheap, and KL does not care)
        teacher = (-s * ranks.log())[:, perm] + 0.3 * torch.randn(n, V, generator=g)
    else:
        teacher = torch.randn(n, V, generator=g) * 3.0
    student = 0.8 * teacher + torch.randn(n, V, generator=g)
    return teacher, student


def cache_vs_full(teacher_rows: torch.Tensor, student_rows: torch.Tensor, tmp: Path, tag: str,
                  chunk: int = 32) -> list[dict]:
    """For each k: write the teacher rows to a real cache, read back, and compare every divergence with
    the full-vocab value on the same tokens. Returns one dict per k."""
    n, V = teacher_rows.shape
    full = {d: 0.0 for d in DIVERGENCES}
    full_grad = []  # d(forward KL)/d(student logits), to compare directions with the cache's
    for lo in range(0, n, chunk):
        t = torch.log_softmax(teacher_rows[lo:lo + chunk].float(), -1)
        x = student_rows[lo:lo + chunk].float().requires_grad_(True)
        s = torch.log_softmax(x, -1)
        for d in DIVERGENCES:
            v = divergence_from_logprobs(t, s, d).sum()
            full[d] += v.item()
            if d == "forward_kl":
                full_grad.append(torch.autograd.grad(v, x, retain_graph=True)[0])
    out = []
    for k in KS:
        path = tmp / f"{tag}-k{k}"
        with CacheWriter(path, k=k, vocab_size=V) as w:
            for lo in range(0, n, chunk):
                w.add(str(lo), teacher_rows[lo:lo + chunk], torch.zeros(min(chunk, n - lo), dtype=torch.long))
        cache = LogitCache(path)
        got = {d: 0.0 for d in DIVERGENCES}
        mass, dot, nc, nf = 0.0, 0.0, 0.0, 0.0
        for i, lo in enumerate(range(0, n, chunk)):
            r = cache.get(str(lo))
            mass += r.logprobs.float().exp().sum().item()
            x = student_rows[lo:lo + chunk].float().requires_grad_(True)
            for d in DIVERGENCES:
                v = topk_divergence(x, r.ids, r.logprobs, r.log_tail, d).sum()
                got[d] += v.item()
                if d == "forward_kl":
                    gc = torch.autograd.grad(v, x)[0]
                    dot += (gc * full_grad[i]).sum().item()
                    nc += gc.square().sum().item()
                    nf += full_grad[i].square().sum().item()
        out.append({"k": k, "mass": mass / n, "full": {d: full[d] / n for d in DIVERGENCES},
                    "err": {d: abs(got[d] - full[d]) / full[d] for d in DIVERGENCES},
                    "grad_cos": dot / max(nc * nf, 1e-30) ** 0.5})
    return out


def fidelity_rows(label: str, V: int, results: list[dict]) -> list[list]:
    return [[label, f"{V:,}", r["k"], f"{r['mass']:.3f}", f"{r['full']['forward_kl']:.3f}",
             *(f"{100 * r['err'][d]:.2f}%" for d in DIVERGENCES), f"{r['grad_cos']:.4f}"] for r in results]


def fidelity(tokens: int, tmp: Path, extra: list[tuple[str, int, list[dict]]]) -> dict[str, float]:
    """Prints the table; returns {regime: worst forward-KL relative error at k=64 over the vocab sizes}."""
    g = torch.Generator().manual_seed(0)
    rows, k64 = [], {}
    results = []
    for kind in SYNTHETIC:
        for V in VOCABS:
            n = tokens if V <= 4096 else max(32, tokens // 2)
            teacher, student = synthetic(kind, n, V, g)
            results.append((f"{kind} ({n} tok)", V, cache_vs_full(teacher, student, tmp, f"{kind}-{V}")))
    for label, V, res in results + extra:
        rows += fidelity_rows(label, V, res)
        key = label.split(" (")[0]
        k64[key] = max(k64.get(key, 0.0), next(r for r in res if r["k"] == 64)["err"]["forward_kl"])
    print("\n## Cache divergence vs full-vocab divergence (same tokens; fp16 cache written and read back)\n")
    for kind, what in SYNTHETIC.items():
        print(f"  {kind:<12} {what}")
    print("  student = 0.8 * teacher logits + N(0, 1) noise on every logit\n")
    print(table(["teacher logits", "V", "k", "top-k mass", "full fwd KL nats/tok",
                 *(f"err {d}" for d in DIVERGENCES), "grad cos (fwd KL)"], rows))
    print("err = |cache - full| / full, summed over tokens. Top-k forward KL <= full forward KL: the tail bucket\n"
          "merges the tail, so the error is (tail mass) x (divergence inside the tail). grad cos: cosine between the\n"
          "student-logit gradients of the cache forward KL and of the full forward KL (exact on the top-k ids).")
    return k64


def zoo_fidelity(teacher_id: str, student_id: str, n_conv: int, tmp: Path) -> list[list]:
    """Real zoo logits: teacher and student on the same toy conversations; rows = the student's targets."""
    try:
        from vlm.models import load_model, zoo
        from vlm.kd import target_rows

        teacher, student = load_model(teacher_id, device="cpu"), load_model(student_id, device="cpu")
        data = zoo.conversations(n_conv, zoo.EVAL_SEED)
        convs, images = [c for c, _ in data], [i for _, i in data]
        t_rows, s_rows = [], []
        with torch.no_grad():
            for adapter, out in ((teacher, t_rows), (student, s_rows)):
                for i in range(len(convs)):  # one at a time: each model's own image-token layout
                    batch = adapter.training_batch(convs[i:i + 1], images[i:i + 1])
                    labels = batch.pop("labels")
                    logits = adapter.model(**batch).logits[0].float()
                    out.append(target_rows(logits, labels[0]))
        for i, ((_, tt), (_, st)) in enumerate(zip(t_rows, s_rows)):
            if not torch.equal(tt, st):
                raise ValueError(f"conversation {i}: teacher and student targets differ (different tokenizers?)")
        T = torch.cat([r for r, _ in t_rows])
        S = torch.cat([r for r, _ in s_rows])
        if T.shape[1] != S.shape[1]:
            raise ValueError(f"vocab sizes differ: {T.shape[1]} vs {S.shape[1]}")
        res = cache_vs_full(T, S, tmp, "zoo")
        return [(f"zoo {teacher_id.split(':')[-1]} -> {student_id.split(':')[-1]} ({T.shape[0]} tok)", T.shape[1], res)]
    except Exception as e:  # optional path: say why and go on
        print(f"(zoo logits skipped: {type(e).__name__}: {e})")
        return []


# ---------------------------------------------------------------------------------------------- 3. step time
class TinyLM(torch.nn.Module):
    """A small causal transformer LM (V = 1024) standing in for the student when no zoo model is given."""

    def __init__(self, V: int = 1024, d: int = 256, layers: int = 2):
        super().__init__()
        self.emb = torch.nn.Embedding(V, d)
        layer = torch.nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.body = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d, V, bias=False)

    def forward(self, input_ids, **_):
        L = input_ids.shape[1]
        mask = torch.nn.Transformer.generate_square_subsequent_mask(L)
        return self.head(self.body(self.emb(input_ids), mask=mask, is_causal=True))


def step_time(student_id: str | None, tmp: Path, steps: int = 8, k: int = 64) -> tuple[str, float, float, float]:
    g = torch.Generator().manual_seed(1)
    if student_id:
        from vlm.models import load_model, zoo

        adapter = load_model(student_id, device="cpu")
        model = adapter.model
        model.train()
        data = zoo.conversations(8, zoo.EVAL_SEED)
        batch = dict(adapter.training_batch([c for c, _ in data], [i for _, i in data]))
        labels = batch.pop("labels")
        V = model.get_output_embeddings().weight.shape[0]
        forward = lambda: model(**batch).logits  # noqa: E731
        name = f"{student_id} (B={labels.shape[0]}, L={labels.shape[1]})"
    else:
        V, B, L = 1024, 8, 256
        model = TinyLM(V)
        input_ids = torch.randint(0, V, (B, L), generator=g)
        labels = input_ids.clone()
        for b in range(B):  # a prompt, then the assistant's tokens, then padding
            labels[b, : 32 + 8 * b] = IGNORE_INDEX
            labels[b, L - 4 * b:] = IGNORE_INDEX
        forward = lambda: model(input_ids)  # noqa: E731
        name = f"TinyLM d=256 x2 layers, V={V} (B={B}, L={L})"
    sample_ids = [f"s{b}" for b in range(labels.shape[0])]
    with CacheWriter(tmp / "step-cache", k=k, vocab_size=V) as w:  # teacher rows for the student's targets
        for b, sid in enumerate(sample_ids):
            tgt = labels[b, 1:][labels[b, 1:] != IGNORE_INDEX]
            w.add(sid, torch.randn(tgt.numel(), V, generator=g) * 3, tgt)
    cache = LogitCache(tmp / "step-cache")
    params = [p for p in model.parameters() if p.requires_grad]

    def ce_step():
        logits = forward()
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        loss = ce_sum(logits, labels) / n
        loss.backward()

    def kd_step():
        teacher = align_teacher(labels, [cache.get(s) for s in sample_ids], sample_ids)
        logits = forward()
        kd, n = kd_loss(logits, labels, teacher, "forward_kl")
        loss = combined_loss(ce_sum(logits, labels), kd, n, alpha=0.5, temperature=1.0)
        loss.backward()

    def timed(fn):
        out = []
        for i in range(steps + 2):
            for p in params:
                p.grad = None
            t = time.perf_counter()
            fn()
            if i >= 2:  # warm-up
                out.append(time.perf_counter() - t)
        return statistics.median(out)

    ce_t, kd_t = [], []
    for _ in range(2):  # interleave, so drift hits both
        ce_t.append(timed(ce_step))
        kd_t.append(timed(kd_step))
    ce, kd = min(ce_t), min(kd_t)
    return name, ce, kd, kd / ce


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", help="zoo:NAME (optional, with --student): real logits for the fidelity table")
    p.add_argument("--student", help="zoo:NAME (optional): also the model timed in the step-time table")
    p.add_argument("--tokens", type=int, default=256, help="synthetic tokens per vocab size (half for V=151,936)")
    p.add_argument("--conversations", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    storage()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        extra = zoo_fidelity(a.teacher, a.student, a.conversations, tmp) if a.teacher and a.student else []
        err64 = fidelity(a.tokens, tmp, extra)
        rows = []
        models = [None] + ([a.student] if a.student else [])
        for m in models:
            try:
                name, ce, kd, ratio = step_time(m, tmp / f"t{len(rows)}", a.steps)
                rows.append([name, f"{1e3 * ce:.1f}", f"{1e3 * kd:.1f}", f"{ratio:.2f}x"])
            except Exception as e:
                print(f"(step time for {m} skipped: {type(e).__name__}: {e})")
        print("\n## Step time (forward + backward, median): CE only vs CE + KD from a k=64 cache (read + align included)\n")
        print(table(["model", "CE step ms", "CE+KD step ms", "ratio"], rows))
    ratio = float(rows[0][3].rstrip("x")) if rows else float("nan")
    print("\n## Targets\n")
    rows = [["bytes per cached token, k=64", f"<= {TARGETS['bytes_k64']}", bytes_per_token(64),
             "met" if bytes_per_token(64) <= TARGETS["bytes_k64"] else "MISSED"]]
    for regime, err in err64.items():
        rows.append([f"cache fwd KL rel. error, k=64, {regime} (worst V)", f"<= {100 * TARGETS['kl_rel_err_k64']:.0f}%",
                     f"{100 * err:.2f}%", "met" if err <= TARGETS["kl_rel_err_k64"] else "MISSED"])
    rows.append(["KD step / CE step (TinyLM)", f"<= {TARGETS['step_ratio']}x", f"{ratio:.2f}x",
                 "met" if ratio <= TARGETS["step_ratio"] else "MISSED"])
    print(table(["figure", "target", "measured", ""], rows))


if __name__ == "__main__":
    main()
