"""Shared checks for file-backed sources: a missing file, and every bad row of a file reported at once."""

from __future__ import annotations

from pathlib import Path

from src.errors import DataError

MAX_SHOWN = 20
NAMED_ROWS = 5  # rows a warning names before "and N more"


def require_file(path: Path, key: str) -> None:
    """Fail with the config key to change when ``path`` is not a readable file."""
    if not path.is_file():
        raise DataError(
            f"{key}: file not found: {path} (relative paths are read from {Path.cwd()}). "
            f"Set {key}=<path to the file>."
        )


def where(path: Path | str, lines: list[int]) -> str:
    """``a.csv:3, a.csv:7 and 4 more``: the first :data:`NAMED_ROWS` rows of a finding."""
    named = ", ".join(f"{path}:{line}" for line in lines[:NAMED_ROWS])
    return named + (f" and {len(lines) - NAMED_ROWS} more" if len(lines) > NAMED_ROWS else "")


class RowProblems:
    """Collects the bad rows of one file so that a single run shows the user all of them."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.problems: list[tuple[int, str]] = []

    def add(self, line: int, problem: str) -> None:
        self.problems.append((line, problem))

    def raise_if_any(self, fix: str) -> None:
        """Raise one :class:`DataError` listing the first ``MAX_SHOWN`` problems, then ``fix``."""
        if not self.problems:
            return
        shown = [f"  {self.path}:{line}: {problem}" for line, problem in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            shown.append(f"  ... and {len(self.problems) - MAX_SHOWN} more")
        listing = "\n".join(shown)
        raise DataError(f"{self.path}: {len(self.problems)} bad row(s):\n{listing}\n{fix}")
