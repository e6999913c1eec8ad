"""Input-data errors: every problem is one line ``FILE: location: what is wrong``.

Loaders collect all problems of a file before raising, so a user fixes a dataset in one pass
instead of one traceback per run. The CLI prints the lines and exits with code 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MAX_REPORTED = 50  # beyond this the list is cut with a count: a broken file should not flood the terminal
EXIT_CODE = 2


@dataclass
class Problems:
    """Collects ``location: message`` pairs for one file; ``raise_if_any`` turns them into a DataError."""

    file: str | Path
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, location: str, message: str) -> None:
        self.items.append((location, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise DataError([(str(self.file), loc, msg) for loc, msg in self.items])


class DataError(ValueError):
    """Bad input data. ``lines`` are (file, location, message) triples, all of them."""

    def __init__(self, lines: list[tuple[str, str, str]]):
        self.lines = lines
        super().__init__(self.render())

    @classmethod
    def single(cls, file: str | Path, location: str, message: str) -> "DataError":
        return cls([(str(file), location, message)])

    def render(self, limit: int = MAX_REPORTED) -> str:
        shown = [f"{f}: {loc}: {msg}" for f, loc, msg in self.lines[:limit]]
        if len(self.lines) > limit:
            shown.append(f"... and {len(self.lines) - limit} more problems")
        return "\n".join(shown)
