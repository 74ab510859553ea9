"""Rich progress bars and tables on stderr, silent when asked (``--json``, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from robust_mc.run import distributed


class Reporter:
    """Where a run tells the user what it is doing."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        main = distributed.main_process()  # of several processes, rank 0 alone reports
        self.quiet = quiet or not main
        self.console = console or Console(stderr=True, quiet=not main)

    def print(self, *args, **kwargs) -> None:
        if not self.quiet:
            self.console.print(*args, **kwargs)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Step]:
        if self.quiet:
            yield Step(None, None)
            return
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=self.console, transient=False) as progress:
            yield Step(progress, progress.add_task(description, total=total, status=""))


class Step:
    def __init__(self, progress: Progress | None, task_id: TaskID | None) -> None:
        self.progress = progress
        self.task_id = task_id

    def advance(self, amount: int = 1, status: str | None = None) -> None:
        if self.progress is None or self.task_id is None:
            return
        if status is None:
            self.progress.advance(self.task_id, amount)
        else:
            self.progress.update(self.task_id, advance=amount, status=status)
