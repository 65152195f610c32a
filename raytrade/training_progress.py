"""The console while the training half of ``raytrade research`` and ``raytrade demo`` runs.

A bar for the stages that names the one running, a bar for the Tune sweep (folds evaluated over all
trials; trials done of the total and the best so far in its description), a bar for the walk-forward
of the chosen configuration, and a line whenever a trial ends. Without bars (``--no-progress``) every
stage, trial and fold is a line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tune.sweep_progress import SweepTally, TrialUpdate
from tune.trainable import MIN_RANKED_TRADES

if TYPE_CHECKING:
    from tune.flow import TrainingProgress


def progress_bar(console: Console, enabled: bool) -> Progress:
    """The progress display of the demo and research commands (disabled: stays silent)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


class TrainingDisplay:
    """Shows the training half: its ``stages`` in order, a sweep of ``num_samples`` trials, the chosen
    configuration's walk-forward folds. ``flow_progress()`` gives the callbacks of ``tune.flow``."""

    def __init__(
        self, console: Console, bar: Progress, stages: Sequence[str], num_samples: int, *, lines: bool
    ) -> None:
        self.console = console
        self.bar = bar
        self.stages = tuple(stages)
        self.lines = lines
        self.sweep = SweepTally(total=num_samples, n_folds=0, min_trades=MIN_RANKED_TRADES)
        self._stage_task = bar.add_task(self._running(None), total=len(self.stages))
        self._sweep_task: TaskID | None = None
        self._fold_task: TaskID | None = None

    def _running(self, done: str | None) -> str:
        at = self.stages.index(done) + 1 if done in self.stages else 0
        return f"training: {self.stages[at]}" if at < len(self.stages) else "training: done"

    def step(self, name: str) -> None:
        """Stage ``name`` is done."""
        self.bar.update(self._stage_task, advance=1, description=self._running(name))
        if self.lines:
            self.console.print(f"stage done: {name}")

    def loaded(self, rows: int, folds: int) -> None:
        """The training set is loaded: ``rows`` samples cut into ``folds`` walk-forward folds."""
        self.sweep.n_folds = folds
        self.console.print(f"training set: {rows:,} rows, {folds} walk-forward folds")

    def trial(self, update: TrialUpdate) -> None:
        """A sweep trial reported a fold or ended."""
        self.sweep.update(update)
        total_folds = self.sweep.total * max(self.sweep.n_folds, 1)
        if self._sweep_task is None:
            self._sweep_task = self.bar.add_task("sweep", total=total_folds)
        described = f"sweep: {self.sweep.ended}/{self.sweep.total} trials done"
        self.bar.update(self._sweep_task, completed=self.sweep.folds_done, description=described)
        if update.ended:
            how = "failed" if update.failed else "done"
            self.console.print(
                f"sweep: trial {update.trial} {how} ({self.sweep.ended}/{self.sweep.total}): score {update.score:.3g}, "
                f"{update.trades:.0f} validation trades over {update.folds_done} folds; {self.sweep.describe_best()}",
                highlight=False,
            )

    def fold(self, k: int, n: int) -> None:
        """Fold ``k`` (0-based) of ``n`` of the chosen configuration was refitted and backtested."""
        if self._fold_task is None:
            self._fold_task = self.bar.add_task("chosen configuration: walk-forward folds", total=n)
        self.bar.update(self._fold_task, completed=k + 1)
        if self.lines:
            self.console.print(f"chosen configuration: fold {k + 1} of {n} backtested on its test window")

    def flow_progress(self) -> TrainingProgress:
        """The callbacks of ``tune.flow.train_evaluate_register`` that drive this display."""
        from tune.flow import TrainingProgress

        return TrainingProgress(loaded=self.loaded, trial=self.trial, fold=self.fold, stage=self.step)


@contextmanager
def training_display(
    console: Console, progress: bool, stages: Sequence[str], num_samples: int
) -> Iterator[TrainingDisplay]:
    """A ``TrainingDisplay`` with bars (``progress``) or lines, for the duration of the training half."""
    with progress_bar(console, progress) as bar:
        yield TrainingDisplay(console, bar, stages, num_samples, lines=not progress)
