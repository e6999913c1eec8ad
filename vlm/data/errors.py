"""Input-data errors: every problem is one line ``FILE: location: what is wrong``.

Loaders collect all problems of a file before raising, so a user fixes a dataset in one pass
instead of one traceback per run. The CLI prints the lines and exits with code 2.

Warnings are quirks a loader accepts (the file loads, exit 0), e.g. A-OKVQA's empty direct answers: a
loader collects them with ``Problems.warn`` and ``report_warnings`` prints them to stderr in the same
``FILE: location: what`` form, capped like errors, with a count summary per kind; ``note`` adds a
one-line notice about the whole file (``FILE: note: …``), e.g. "no labels".
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MAX_REPORTED = 50  # beyond this the list is cut with a count: a broken file should not flood the terminal
EXIT_CODE = 2


@dataclass
class Problems:
    """Collects ``location: message`` pairs for one file; ``raise_if_any`` turns them into a DataError.
    ``warn`` / ``note`` collect accepted quirks and file notices instead; ``report_warnings`` prints them."""

    file: str | Path
    items: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, location: str, message: str) -> None:
        self.items.append((location, message))

    def warn(self, location: str, message: str) -> None:
        self.warnings.append((location, message))

    def note(self, message: str) -> None:
        self.notes.append(message)

    def warning_lines(self, limit: int = MAX_REPORTED) -> list[str]:
        """``FILE: location: what`` per warning (cut at ``limit``), a count summary per kind, then the notes."""
        f = str(self.file)
        lines = [f"{f}: {loc}: {msg}" for loc, msg in self.warnings[:limit]]
        if len(self.warnings) > limit:
            lines.append(f"... and {len(self.warnings) - limit} more warnings")
        if self.warnings:
            kinds = Counter(msg for _, msg in self.warnings)
            lines.append(f"{f}: {len(self.warnings)} warning(s), accepted: "
                         + ", ".join(f"{n} x {msg}" for msg, n in kinds.most_common()))
        lines.extend(f"{f}: note: {n}" for n in self.notes)
        return lines

    def report_warnings(self, stream=None) -> list[str]:
        """Print ``warning_lines`` to ``stream`` (stderr by default); returns them."""
        lines = self.warning_lines()
        if lines:
            print("\n".join(lines), file=stream or sys.stderr)
        return lines

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        DataError.raise_if([(str(self.file), loc, msg) for loc, msg in self.items])


def flags_below(config, minimums: dict[str, float], where: str = "flags") -> list[tuple[str, str, str]]:
    """One ``flags: --name: must be >= low, got value`` problem per option of ``config`` below its minimum."""
    return [(where, f"--{name}", f"must be >= {low}, got {getattr(config, name)}")
            for name, low in minimums.items() if getattr(config, name) < low]


class DataError(ValueError):
    """Bad input data. ``lines`` are (file, location, message) triples, all of them."""

    def __init__(self, lines: list[tuple[str, str, str]]):
        self.lines = lines
        super().__init__(self.render())

    @classmethod
    def raise_if(cls, lines: list[tuple[str, str, str]]) -> None:
        """Raise one DataError holding every problem found, if any."""
        if lines:
            raise cls(lines)

    @classmethod
    def single(cls, file: str | Path, location: str, message: str) -> "DataError":
        return cls([(str(file), location, message)])

    def render(self, limit: int = MAX_REPORTED) -> str:
        shown = [f"{f}: {loc}: {msg}" for f, loc, msg in self.lines[:limit]]
        if len(self.lines) > limit:
            shown.append(f"... and {len(self.lines) - limit} more problems")
        return "\n".join(shown)
