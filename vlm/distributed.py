"""Data-parallel inference for evaluate and generate_cot: ``torchrun --nproc-per-node N -m vlm <stage> …``
(their shared loop: vlm/generation.py).

accelerate's ``PartialState`` joins the process group torchrun set up (NCCL on GPUs, gloo on CPUs); each rank
takes a contiguous share of the samples still to do, appends its records to its own part file
(``predictions.rank1.jsonl``…) and rank 0 folds the parts into the one file a single process writes, in
sample order. A killed run resumes: every rank reads the main file and every part before the work is shared
out again, so nothing is lost or done twice, whatever the number of ranks of the re-run. One process
(``python -m vlm …``) takes the same path with a world of one and writes the main file directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

from vlm.io import append_jsonl, atomic_write_text, resume_jsonl


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Ranks:
    """This process's place among the ranks, and the few collective steps the inference stages need."""

    rank: int = 0
    world: int = 1
    state: Any = None  # accelerate.PartialState when world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def share(self, items: Sequence) -> list:
        """This rank's contiguous share (accelerate's split_between_processes: sizes differ by at most one)."""
        if self.state is None:
            return list(items)
        with self.state.split_between_processes(list(items)) as part:
            return list(part)

    def tag(self) -> str:
        return f" [rank {self.rank}/{self.world}]" if self.world > 1 else ""


def ranks() -> Ranks:
    if world_size() <= 1:
        return Ranks()
    import torch
    from accelerate import PartialState

    on_gpu = torch.cuda.is_available()
    # ranks wait at the merge barrier for the slowest share (generation lengths vary): well past the 30-min default
    state = PartialState(cpu=not on_gpu, backend=None if on_gpu else "gloo", timeout=timedelta(hours=6))
    return Ranks(rank=state.process_index, world=state.num_processes, state=state)


class ShardedJsonl:
    """One JSONL output (records keyed by ``id``) written by every rank. Rank r > 0, or any rank of a
    multi-rank run, appends to ``{stem}.rank{r}.jsonl``; ``merge`` (rank 0) folds the parts into ``path``."""

    def __init__(self, path: Path, ranks: Ranks):
        self.path, self.ranks = Path(path), ranks
        self.own = self.path if ranks.world == 1 else self.part(ranks.rank)

    def part(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.stem}.rank{rank}{self.path.suffix}")

    def parts(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}.rank*{self.path.suffix}"))

    def done(self) -> dict[str, dict]:
        """Every record written so far, by any rank of any earlier run (main file first, then the parts)."""
        records = resume_jsonl(self.path)
        for part in self.parts():
            records.update({k: v for k, v in resume_jsonl(part).items() if k not in records})
        return records

    def append(self, records: list[dict]) -> None:
        append_jsonl(self.own, records)

    def merge(self, order: Sequence[str]) -> None:
        """Rank 0, after a barrier: the main file rewritten in ``order`` (ids of earlier runs not in ``order``
        keep their place at the end), atomically, then the parts removed. No parts: nothing to do."""
        parts = self.parts()
        if not parts:
            return
        import json

        records = self.done()
        ordered = [records.pop(i) for i in order if i in records] + list(records.values())
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
        for part in parts:
            part.unlink()
