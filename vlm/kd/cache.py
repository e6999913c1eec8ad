"""The teacher logit cache (docs/DESIGN.md: Logit cache).

The teacher's CoT transcripts are re-scored teacher-forced; for every assistant (target) token we keep
the top-k of ``log_softmax(raw logits)`` at T = 1 and the log of the probability mass outside the top-k:

    ids         int32   [rows, k]   top-k token ids, most probable first
    logprobs    float16 [rows, k]   their log-probabilities
    log_tail    float32 [rows]      log(max(1 - sum(exp(logprobs)), tiny)): the mass outside the top-k
    target_ids  int32   [rows]      the token the student is trained to predict at that row (alignment check)

On disk: ``shard-00000.safetensors``, ... (at most ``shard_rows`` rows each; one sample never spans two
shards, so a single sample longer than ``shard_rows`` gets a shard of its own) and ``index.json``::

    {"format": "vlm-topk-v1", "k", "vocab_size", "rows", "meta": {...},
     "shards": [{"file", "rows"}], "samples": {sample_id: {"shard", "start", "length"}}}

``index.json`` is written last, atomically: a cache whose writer died has no index and is refused.
Readers memory-map the shards (safetensors ``safe_open``) and copy only the rows asked for, so RAM does not
grow with the size of the cache.

Rows are the target positions of a sample in order, under the causal-LM shift: the teacher's logits at
position t-1 predict ``labels[t]``. ``shifted_rows`` is that selection, the only one: the re-scoring that
writes the cache (``target_topk``, what ``VLMAdapter.score`` runs) and the training losses that read it
(``vlm.kd.losses``) both go through it, so they agree by construction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import torch

from vlm.data.errors import DataError, Problems
from vlm.io import atomic_write_bytes, atomic_write_text, dumps_json
from vlm.models.base import IGNORE_INDEX, head_replaced

FORMAT = "vlm-topk-v1"
INDEX = "index.json"
TINY = torch.finfo(torch.float32).tiny
LOG_TINY = math.log(TINY)  # ~ -87.3: floor of every stored / compared log-probability
TENSORS = ("ids", "logprobs", "log_tail", "target_ids")


class TopK(NamedTuple):
    """Teacher top-k for some rows (a sample: [n, k] / [n]) or a batch aligned to label positions
    ([B, L, k] / [B, L])."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    log_tail: torch.Tensor
    target_ids: torch.Tensor | None = None


def bytes_per_token(k: int) -> int:
    """On-disk bytes per cached row: ids int32 + logprobs fp16 + log_tail fp32 + target_ids int32."""
    return 4 * k + 2 * k + 4 + 4


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


@torch.no_grad()
def topk_rows(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of log_softmax(logits) over the last dim, in float32, and the log of the mass outside it.

    Returns (ids int64 [..., k], logprobs float32 [..., k], log_tail float32 [...]). The tail is computed
    as logsumexp over the non-top-k logits minus logsumexp over all of them, which equals
    log(1 - sum(exp(top-k logprobs))) but keeps full precision when the tail is tiny; it is floored at
    log(tiny) (k == V: the tail is empty)."""
    x = logits.float()
    V = x.shape[-1]
    k = min(k, V)
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    top, ids = torch.topk(x, k, dim=-1)
    logprobs = top - lse
    if k >= V:
        log_tail = torch.full(x.shape[:-1], LOG_TINY, dtype=torch.float32, device=x.device)
    else:
        rest = x.scatter(-1, ids, float("-inf"))
        log_tail = (torch.logsumexp(rest, dim=-1, keepdim=True) - lse).squeeze(-1)
    return ids, logprobs, log_tail.nan_to_num(nan=LOG_TINY).clamp_min(LOG_TINY)


def shifted_rows(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-position tensors [B, L, ...] aligned like a model output (final hidden states, logits) + labels [B, L]
    -> (rows [N, ...] that predict a target, their targets [N], mask [B, L - 1]), sample by sample, in order:
    position t predicts label t + 1."""
    if x.ndim < 3 or labels.shape != x.shape[:2]:
        raise ValueError(f"expected [B, L, ...] rows and labels [B, L], got {tuple(x.shape)} and {tuple(labels.shape)}")
    mask = labels[:, 1:] != IGNORE_INDEX
    return x[:, :-1][mask], labels[:, 1:][mask], mask


def target_rows(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``shifted_rows`` of one sequence: logits [L, V] and labels [L] -> (logits rows [n, V], target ids [n]), what
    ``CacheWriter.add`` takes for that sample (the full-logit path of tests and benches)."""
    if logits.ndim != 2 or labels.ndim != 1:
        raise ValueError(f"expected logits [L, V] and labels [L], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    rows, targets, _ = shifted_rows(logits[None], labels[None])
    return rows, targets


@torch.no_grad()
def head_topk(rows: torch.Tensor, head, k: int, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``topk_rows`` of ``head(rows)`` (hidden states [n, H] at target rows -> RAW logits), ``chunk_rows`` rows at
    a time: the teacher's re-scoring never holds more than one float32 [chunk_rows, V] block."""
    parts = [topk_rows(head(rows[lo:lo + chunk_rows]).float(), k) for lo in range(0, rows.shape[0], chunk_rows)]
    if not parts:
        return (torch.zeros(0, k, dtype=torch.long, device=rows.device), torch.zeros(0, k, device=rows.device),
                torch.zeros(0, device=rows.device))
    return tuple(torch.cat(t) for t in zip(*parts))  # type: ignore[return-value]


@torch.inference_mode()
def target_topk(model, inputs: dict, labels: torch.Tensor, k: int, chunk_rows: int) -> list[TopK]:
    """Per sample of a teacher-forced batch, ``head_topk`` at its target rows (with their targets): the rows a
    cache stores. The LM head runs inside the forward on those rows only (``head_replaced``), as in training's
    ``vlm.kd.losses.target_loss_sums``; no vocabulary-wide logits leave it."""
    found = []

    def topk_of_targets(head_forward, hidden):
        rows, targets, mask = shifted_rows(hidden, labels)
        found.append((*head_topk(rows, head_forward, k, chunk_rows), targets, mask.sum(1).tolist()))
        return hidden[..., :0, :]

    with head_replaced(model, topk_of_targets):
        model(**inputs)
    *tensors, counts = found[-1]
    return [TopK(*sample) for sample in zip(*(t.split(counts) for t in tensors))]


class CacheWriter:
    """Writes a logit cache; ``add`` per sample, ``close`` (or leaving the ``with`` block) to finish."""

    def __init__(self, path: str | Path, k: int, vocab_size: int, meta: dict[str, Any] | None = None,
                 shard_rows: int = 65536):
        if k < 1 or vocab_size < 1 or shard_rows < 1:
            raise ValueError(f"k, vocab_size and shard_rows must be >= 1 (got {k}, {vocab_size}, {shard_rows})")
        self.path = Path(path)
        if (self.path / INDEX).exists():
            raise FileExistsError(f"{self.path / INDEX}: a finished cache is already there; remove it or pick another folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self.k = min(k, vocab_size)
        self.vocab_size = vocab_size
        self.meta = dict(meta or {})
        self.shard_rows = shard_rows
        self.shards: list[dict[str, Any]] = []
        self.samples: dict[str, dict[str, int]] = {}
        self.rows = 0
        self._buf: list[tuple[torch.Tensor, ...]] = []
        self._buf_rows = 0
        self._closed = False

    def add(self, sample_id: str, logits: torch.Tensor, target_ids: torch.Tensor) -> None:
        """``logits``: RAW teacher logits [n, V] (any float dtype) at the n target rows of the sample (see
        ``target_rows``); ``target_ids``: [n] the tokens those rows predict."""
        if logits.ndim != 2 or logits.shape[1] != self.vocab_size:
            raise ValueError(f"sample {sample_id!r}: logits must be [n, {self.vocab_size}], got {tuple(logits.shape)}")
        if not logits.is_floating_point():
            raise ValueError(f"sample {sample_id!r}: logits must be floating point, got {logits.dtype}")
        target_ids = torch.as_tensor(target_ids)
        if target_ids.shape != (logits.shape[0],):
            raise ValueError(f"sample {sample_id!r}: {logits.shape[0]} logits rows but target_ids of shape {tuple(target_ids.shape)}")
        self.add_topk(sample_id, TopK(*topk_rows(logits, self.k), target_ids))

    def add_topk(self, sample_id: str, rows: "TopK") -> None:
        """A sample's rows already reduced to the top-k (``head_topk``, or another cache's ``get``): ids [n, k],
        logprobs [n, k], log_tail [n], target_ids [n]. Stored exactly as ``add`` stores them."""
        if self._closed:
            raise ValueError("CacheWriter is closed")
        sample_id = str(sample_id)
        if sample_id in self.samples:
            raise ValueError(f"duplicate sample id {sample_id!r} in the logit cache")
        ids, logprobs, log_tail, target_ids = rows
        n = ids.shape[0]
        if ids.shape != (n, self.k) or logprobs.shape != (n, self.k) or log_tail.shape != (n,) or target_ids.shape != (n,):
            raise ValueError(f"sample {sample_id!r}: expected top-{self.k} rows, got ids {tuple(ids.shape)}, logprobs "
                             f"{tuple(logprobs.shape)}, log_tail {tuple(log_tail.shape)}, target_ids {tuple(target_ids.shape)}")
        if self._buf_rows and self._buf_rows + n > self.shard_rows:
            self._flush()  # a sample never spans shards
        if not bool(torch.isfinite(logprobs[..., 0].float()).all()):  # NaN / inf logits: the top-1 is NaN or +-inf
            raise ValueError(f"sample {sample_id!r}: non-finite teacher logits (NaN or inf) in some rows")
        self._buf.append((ids.to(torch.int32).cpu(), logprobs.to(torch.float16).cpu(), log_tail.to(torch.float32).cpu(),
                          target_ids.to(torch.int32).cpu()))
        self.samples[sample_id] = {"shard": len(self.shards), "start": self._buf_rows, "length": n}
        self._buf_rows += n
        self.rows += n
        if self._buf_rows >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        from safetensors.torch import save

        tensors = {name: torch.cat([b[i] for b in self._buf]).contiguous() for i, name in enumerate(TENSORS)}
        name = shard_name(len(self.shards))
        atomic_write_bytes(self.path / name, save(tensors, metadata={"format": FORMAT}))
        self.shards.append({"file": name, "rows": self._buf_rows})
        self._buf, self._buf_rows = [], 0

    def close(self) -> None:
        """Flush the last shard, then write index.json (atomically, last)."""
        if self._closed:
            return
        self._flush()
        index = {"format": FORMAT, "k": self.k, "vocab_size": self.vocab_size, "rows": self.rows, "meta": self.meta,
                 "shards": self.shards, "samples": self.samples}
        atomic_write_text(self.path / INDEX, dumps_json(index))
        self._closed = True

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # no index: the half-written cache stays unreadable
            self._buf, self._buf_rows, self._closed = [], 0, True


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read_index(path: Path) -> dict:
    file = path / INDEX
    if not file.is_file():
        raise DataError.single(file, "-", "not found: not a logit cache, or its writer did not finish (index.json is written last)")
    try:
        index = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "-"
        raise DataError.single(file, where, f"malformed JSON: {getattr(e, 'msg', e)}") from None
    p = Problems(file)
    if not isinstance(index, dict):
        p.add("-", "expected a JSON object")
        p.raise_if_any()
    if index.get("format") != FORMAT:
        p.add("format", f"expected {FORMAT!r}, got {index.get('format')!r}")
    for key in ("k", "vocab_size", "rows"):
        if not _is_int(index.get(key)) or index[key] < (0 if key == "rows" else 1):
            p.add(key, f"expected a positive integer, got {index.get(key)!r}")
    if not isinstance(index.get("meta", {}), dict):
        p.add("meta", "expected an object")
    shards = index.get("shards")
    if not isinstance(shards, list):
        p.add("shards", "expected a list")
        shards = []
    for i, s in enumerate(shards):
        if not isinstance(s, dict) or not isinstance(s.get("file"), str) or not _is_int(s.get("rows")) or s["rows"] < 0:
            p.add(f"shards[{i}]", "expected {\"file\": str, \"rows\": int}")
        elif "/" in s["file"] or "\\" in s["file"] or s["file"].startswith("."):
            p.add(f"shards[{i}].file", f"{s['file']!r} must be a file name inside the cache folder")
        elif not (path / s["file"]).is_file():
            p.add(f"shards[{i}].file", f"{s['file']} not found")
    if p:
        p.raise_if_any()
    if sum(s["rows"] for s in shards) != index["rows"]:
        p.add("rows", f"{index['rows']} but the shards hold {sum(s['rows'] for s in shards)}")
    samples = index.get("samples")
    if not isinstance(samples, dict):
        p.add("samples", "expected an object {sample_id: {shard, start, length}}")
        samples = {}
    for sid, e in samples.items():
        if not isinstance(e, dict) or not all(_is_int(e.get(f)) for f in ("shard", "start", "length")):
            p.add(f"samples.{sid}", "expected {\"shard\": int, \"start\": int, \"length\": int}")
        elif not 0 <= e["shard"] < len(shards):
            p.add(f"samples.{sid}.shard", f"{e['shard']} is not a shard (there are {len(shards)})")
        elif e["start"] < 0 or e["length"] < 0 or e["start"] + e["length"] > shards[e["shard"]]["rows"]:
            p.add(f"samples.{sid}", f"rows {e['start']}..{e['start'] + e['length']} outside shard {e['shard']} "
                                    f"({shards[e['shard']]['rows']} rows)")
    p.raise_if_any()
    return index


class LogitCache:
    """Read side: ``cache.get(sample_id) -> TopK`` of that sample's rows (ids int32 [n, k], logprobs fp16
    [n, k], log_tail fp32 [n], target_ids int32 [n]). Shards are memory-mapped; handles stay open (one per
    shard touched) until ``close``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index = _read_index(self.path)
        self.k: int = index["k"]
        self.vocab_size: int = index["vocab_size"]
        self.rows: int = index["rows"]
        self.meta: dict = index.get("meta", {})
        self._shards: list[dict] = index["shards"]
        self._samples: dict[str, dict] = index["samples"]
        self._handles: dict[int, Any] = {}

    def __contains__(self, sample_id: object) -> bool:
        return str(sample_id) in self._samples

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[str]:
        return iter(self._samples)

    def ids(self) -> list[str]:
        return list(self._samples)

    def _handle(self, shard: int):
        h = self._handles.get(shard)
        if h is None:
            from safetensors import safe_open

            file = self.path / self._shards[shard]["file"]
            try:
                h = safe_open(str(file), framework="pt")
            except Exception as e:  # truncated / not safetensors: one line
                raise DataError.single(file, "-", f"cannot open as safetensors ({type(e).__name__}: {e})") from None
            missing = [n for n in TENSORS if n not in h.keys()]
            if missing:
                raise DataError.single(file, "-", f"missing tensors {missing}")
            self._handles[shard] = h
        return h

    def get(self, sample_id: str) -> TopK:
        sample_id = str(sample_id)
        if sample_id not in self._samples:
            raise KeyError(f"sample {sample_id!r} is not in the logit cache {self.path}")
        e = self._samples[sample_id]
        h = self._handle(e["shard"])
        lo, hi = e["start"], e["start"] + e["length"]
        # safetensors slices are views into the memory-mapped file; clone so a sample owns just its rows (a view
        # would pin and, through a DataLoader worker's pickling, copy the whole shard's storage).
        return TopK(*(h.get_slice(name)[lo:hi].clone() for name in TENSORS))

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> "LogitCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
