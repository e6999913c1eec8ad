"""The resumable generation loop of evaluate (``predictions.jsonl``) and generate_cot (``transcripts.jsonl``).

``run_resumable`` runs a recipe over the samples, batch by batch, and appends one JSON record per sample. Every
rank first reads what earlier runs wrote (the main file and any rank parts), takes its contiguous share of the
samples still to do, loads the model only if that share is not empty, and appends to its own part; rank 0 then
merges the parts in sample order (``vlm.distributed.ShardedJsonl``). So a killed run resumes, whatever the number
of ranks of the re-run, and one process writes the main file directly.

Shared by two stages, so not a stage itself: it lives beside ``vlm.distributed`` (ranks, part files), its base.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from vlm.distributed import Ranks, ShardedJsonl
from vlm.io import resume_jsonl

if TYPE_CHECKING:
    from vlm.data import Sample


def sample_image(sample: Sample, blind: bool):
    """The sample's image as RGB, or None in blind mode (no image, no image tokens)."""
    if blind:
        return None
    from PIL import Image

    return Image.open(sample.image).convert("RGB")


def phase_outputs(recipe, sample: Sample, outputs: list[str]) -> list[dict]:
    """The ``phases`` field of a record: each phase the sample ran, with its output."""
    return [{"name": p.name, "output": t} for p, t in zip(recipe.active(sample), outputs)]


def run_resumable(samples: Sequence[Sample], out_file: Path, recipe, load_adapter: Callable[[], Any],
                  make_record: Callable[..., dict], *, ranks: Ranks, blind: bool, batch_size: int, desc: str,
                  stage: str, max_new_tokens: int = 0) -> tuple[Any, dict[str, dict]]:
    """Run ``recipe`` on the samples not yet in ``out_file``; returns (the adapter if this rank loaded one, else None;
    every record of the merged file by id, on every rank).

    ``load_adapter()`` is called only when this rank has work. ``make_record(sample, answer=, phases=, seconds=)``
    builds a sample's JSON record (``seconds``: generation time per sample of its batch). ``desc`` labels the
    progress bar, ``stage`` the resume message; ``max_new_tokens`` > 0 replaces every phase's token budget."""
    from tqdm import tqdm

    from vlm.recipes import run

    out = ShardedJsonl(out_file, ranks)
    done = out.done()
    ranks.barrier()  # every rank has read the same records before any rank writes
    todo = [s for s in samples if s.id not in done]
    if done and ranks.is_main:
        print(f"{stage}: resuming {out_file}: {len(done)} done, {len(todo)} to go")
    mine = ranks.share(todo)
    adapter = None
    if mine:
        adapter = load_adapter()
        bar = tqdm(total=len(mine), desc=f"{desc}{ranks.tag()}", unit="q")
        for start in range(0, len(mine), batch_size):
            batch = mine[start : start + batch_size]
            images = [sample_image(s, blind) for s in batch]
            t0 = time.perf_counter()
            outputs = run(recipe, adapter, batch, images, blind=blind, max_new_tokens=max_new_tokens)
            seconds = round((time.perf_counter() - t0) / len(batch), 4)
            out.append([make_record(s, answer=recipe.answer(o), phases=phase_outputs(recipe, s, o), seconds=seconds)
                        for s, o in zip(batch, outputs)])
            bar.update(len(batch))
        bar.close()
    ranks.barrier()
    if ranks.is_main:
        out.merge([s.id for s in samples])
    ranks.barrier()  # the merged file is complete before any rank reads it
    return adapter, resume_jsonl(out_file)
