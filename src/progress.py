"""Progress bars for the long steps outside Lightning's loops (encoding embeddings, scoring files, exporting):
rich bars on stderr, so stdout stays clean for piped output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(description: str | None, total: int | None = None, unit: str = "") -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; no bar when ``description`` is None. ``total=None`` counts up without an end."""
    if description is None:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn()]
    columns += [MofNCompleteColumn(), TextColumn(unit), TimeRemainingColumn()] if total else [
        TextColumn("{task.completed:,} " + unit), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
