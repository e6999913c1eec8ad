"""The distillation knobs, checked when they are parsed.

``KDArguments`` is the part of a training config that ``DistillTrainer`` (vlm/kd/trainer.py) reads. Like TRL's
``GKDConfig``, each field carries its ``--help`` text and ``__post_init__`` checks the values, so a bad flag is a
DataError line (``flags: --alpha: …``, exit 2) as soon as ``HfArgumentParser`` builds the config — before any
data or model loads. Kept apart from the trainer: importing ``transformers.Trainer`` costs seconds that
``python -m vlm finetune --help`` should not pay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlm.data.errors import DataError, flags_below
from vlm.kd.losses import DEFAULT_CHUNK_ROWS, DIVERGENCES


@dataclass(kw_only=True)
class KDArguments:
    """loss = alpha * CE + (1 - alpha) * T^2 * D(teacher_T || student_T) over the target tokens."""

    alpha: float = field(default=0.5, metadata={"help": "kd: weight of CE; 1 - alpha weighs the divergence"})
    temperature: float = field(default=1.0, metadata={"help": "kd: softmax temperature T (the divergence is scaled by T^2)"})
    divergence: str = field(default="forward_kl", metadata={"help": f"kd: {' | '.join(DIVERGENCES)}"})
    jsd_beta: float = field(default=0.5, metadata={"help": "kd: beta of the generalised JSD"})
    answer_weight: float = field(default=1.0, metadata={
        "help": "weight of the last assistant turn's tokens (the answer) against the earlier turns' (the reasoning) in a "
                "weighted token mean; 1 = the plain token mean. Direct (one-turn) targets are unaffected"})
    logit_chunk_rows: int = field(default=DEFAULT_CHUNK_ROWS, metadata={
        "help": "target positions per LM-head chunk: the loss never holds more than this many float32 vocabulary rows"})

    def kd_problems(self) -> list[tuple[str, str, str]]:
        """One ``("flags", "--flag", what is wrong)`` per bad value."""
        problems = []
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(("flags", "--alpha", f"must be in [0, 1], got {self.alpha}"))
        if not self.temperature > 0:
            problems.append(("flags", "--temperature", f"must be > 0, got {self.temperature}"))
        if self.divergence not in DIVERGENCES:
            problems.append(("flags", "--divergence",
                             f"unknown divergence '{self.divergence}' (known: {', '.join(DIVERGENCES)})"))
        if not 0.0 <= self.jsd_beta <= 1.0:
            problems.append(("flags", "--jsd_beta", f"must be in [0, 1], got {self.jsd_beta}"))
        if not self.answer_weight > 0:
            problems.append(("flags", "--answer_weight", f"must be > 0, got {self.answer_weight}"))
        problems += flags_below(self, {"logit_chunk_rows": 1})
        return problems

    def __post_init__(self) -> None:
        problems = self.kd_problems()
        DataError.raise_if(problems)
