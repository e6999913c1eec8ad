"""Generation throughput: batched, left-padded, KV-cached generate vs the seed's per-sample loop.

The predecessor answered one question at a time with beam search (num_beams=2). This bench runs the same
zoo model on the same toy-world prompts both ways and prints samples/s, generated tokens/s and the ratio.

    python bench/generation.py [--model zoo:llava-ov-student] [--n 64] [--batch-size 16] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vlm.models import load_model  # noqa: E402
from vlm.models import zoo  # noqa: E402


def prompts(n: int):
    rows = []
    for conv, image in zoo.conversations(n, zoo.EVAL_SEED):
        text = next(c["text"] for c in conv[0]["content"] if c["type"] == "text")
        rows.append(([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}], image))
    return rows[:n]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def count_tokens(adapter, texts):
    return sum(len(adapter.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="zoo:llava-ov-student")
    p.add_argument("--n", type=int, default=64, help="prompts")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    torch.manual_seed(0)
    adapter = load_model(a.model, device=a.device)
    rows = prompts(a.n)
    cfg = {"max_new_tokens": a.max_new_tokens, "min_new_tokens": a.max_new_tokens}  # equal work per sample both ways
    adapter.generate([rows[0][0]], [rows[0][1]], {"max_new_tokens": 2})  # warm-up

    def batched():
        out = []
        for s in range(0, len(rows), a.batch_size):
            chunk = rows[s:s + a.batch_size]
            out += adapter.generate([c for c, _ in chunk], [i for _, i in chunk], cfg)
        return out

    def per_sample():
        return [adapter.generate([c], [i], {**cfg, "num_beams": 2})[0] for c, i in rows]

    fast, t_fast = timed(batched)
    slow, t_slow = timed(per_sample)
    tok_fast, tok_slow = count_tokens(adapter, fast), count_tokens(adapter, slow)
    print(f"model {a.model} on {adapter.device}, {len(rows)} prompts, {a.max_new_tokens} new tokens each")
    print(f"{'mode':<34}{'seconds':>9}{'samples/s':>11}{'tokens/s':>10}")
    print(f"{'per-sample loop, beam 2 (seed)':<34}{t_slow:>9.2f}{len(rows) / t_slow:>11.2f}{tok_slow / t_slow:>10.1f}")
    print(f"{f'batched x{a.batch_size}, greedy, KV cache':<34}{t_fast:>9.2f}{len(rows) / t_fast:>11.2f}{tok_fast / t_fast:>10.1f}")
    print(f"speed-up (samples/s): {t_slow / t_fast:.1f}x")


if __name__ == "__main__":
    main()
