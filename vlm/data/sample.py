"""The one record every stage speaks (docs/DESIGN.md: Contracts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Sample:
    id: str  # stable and unique within a dataset file
    benchmark: str  # a key of vlm.benchmarks.BENCHMARKS
    scene_id: str
    image: str | None  # resolved path inside the images dir, or None (blind / no image)
    question: str
    answers: list[str]  # first is canonical
    question_type: list[str] = field(default_factory=list)  # multi-label, e.g. ["Direction", "Semantic"]
    # context_change, change_type (category word), orientation, scene_description, … benchmark-specific
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return self.answers[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sample":
        return cls(**d)
