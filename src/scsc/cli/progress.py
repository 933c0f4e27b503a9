"""Rich progress bars for the training stages, showing the current loss terms."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

SHOWN = ("rec_x", "rec_graph", "zinb", "clu")


class RichReporter:
    """A :class:`~scsc.train.Reporter` that draws one bar per stage."""

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.progress = Progress(
            TextColumn("[bold]{task.description:<26}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.enabled = enabled

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, stage: str, total: int) -> None:
        self.tasks[stage] = self.progress.add_task(stage, total=total, terms="")

    def note(self, message: str) -> None:
        """Print one line above the bars (shown even when the bars are off, unless --quiet)."""
        if self.enabled:
            self.progress.console.print(message)

    def advance(self, stage: str, terms: dict[str, float]) -> None:
        shown = " ".join(f"{k}={v:.3g}" for k, v in terms.items() if k in SHOWN)
        self.progress.update(self.tasks[stage], advance=1, terms=shown)

    def stop(self, stage: str) -> None:
        pass
