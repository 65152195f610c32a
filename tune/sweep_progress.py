"""Progress of a Ray Tune sweep as a console shows it: trials ended of the total, the best so far.

``SweepTally`` is plain (tested without Ray): it takes a ``TrialUpdate`` for every report and end of a
trial and says how far the sweep is, ranking trials as ``tune.trainable.choose_trial`` does.
``sweep_progress_callback(on_update)`` is the thin Ray shell: a Tune ``Callback`` that calls
``on_update`` in the driver for every fold a trial reports and when it ends (pass it to the sweep's
``RunConfig(callbacks=…)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TrialUpdate:
    """One report of a sweep trial.

    ``trial``: the trial's index in creation order (its row in ``run_sweep``'s table); ``folds_done``,
    ``score`` and ``trades`` (validation trades) over the folds done so far; ``ended``: the trial
    reports no more (finished, stopped or failed); ``failed``: it raised.
    """

    trial: int
    folds_done: int
    score: float
    trades: float
    ended: bool = False
    failed: bool = False


def trial_update(
    trial: int, result: Mapping[str, Any] | None, *, ended: bool = False, failed: bool = False
) -> TrialUpdate:
    """The ``TrialUpdate`` of a Tune result of ``walk_forward_trainable`` (``flat_metrics`` keys; an
    empty result, as a trial that failed before its first fold has, is zero folds with no score)."""
    result = result or {}
    return TrialUpdate(
        trial=trial,
        folds_done=int(result.get("folds_done", 0)),
        score=float(result.get("score", math.nan)),
        trades=float(result.get("total_trades", 0.0)),
        ended=ended,
        failed=failed,
    )


@dataclass
class SweepTally:
    """A sweep of ``total`` trials over ``n_folds`` walk-forward folds, from its trials' updates.

    A trial is complete when it ended with all ``n_folds`` folds done, and ranked when it is complete
    with at least ``min_trades`` validation trades (``tune.trainable.choose_trial``'s rule); ``best``
    is the highest score among the ranked trials, else among the complete ones (ties: the earlier).
    """

    total: int
    n_folds: int
    min_trades: int
    latest: dict[int, TrialUpdate] = field(default_factory=dict)

    def update(self, update: TrialUpdate) -> None:
        """Take a trial's newest report (an ended trial stays ended)."""
        before = self.latest.get(update.trial)
        if before is not None and before.ended and not update.ended:
            return
        self.latest[update.trial] = update

    @property
    def ended(self) -> int:
        """Trials that report no more."""
        return sum(u.ended for u in self.latest.values())

    @property
    def failed(self) -> int:
        """Trials that raised."""
        return sum(u.failed for u in self.latest.values())

    @property
    def folds_done(self) -> int:
        """Folds evaluated over all trials (of ``total × n_folds``; an ended trial counts all its folds)."""
        return sum(self.n_folds if u.ended else min(u.folds_done, self.n_folds) for u in self.latest.values())

    def complete(self, update: TrialUpdate) -> bool:
        return update.ended and not update.failed and update.folds_done >= self.n_folds

    def ranked(self, update: TrialUpdate) -> bool:
        return self.complete(update) and update.trades >= self.min_trades

    def best(self) -> TrialUpdate | None:
        """The trial the sweep would hand on if it ended now (None: no trial complete yet)."""
        complete = [u for u in self.latest.values() if self.complete(u)]
        pool = [u for u in complete if self.ranked(u)] or complete
        return min(pool, key=lambda u: (-u.score, u.trial), default=None)

    def running(self) -> list[TrialUpdate]:
        """Trials that started and have not ended, in creation order."""
        return sorted((u for u in self.latest.values() if not u.ended), key=lambda u: u.trial)

    def describe_best(self) -> str:
        """The best trial so far in words, saying when its trades are too few to rank it."""
        best = self.best()
        if best is None:
            return "no trial done yet"
        text = f"best so far: trial {best.trial}, score {best.score:.3g} ({best.trades:.0f} validation trades"
        if not self.ranked(best):
            return f"{text}: fewer than {self.min_trades}, too few to rank)"
        return f"{text})"

    def describe(self) -> str:
        """One line: trials ended of the total, the ones running with their folds, the best so far."""
        parts = [
            f"{self.ended}/{self.total} trials done" + (f" ({self.failed} failed)" if self.failed else "")
        ]
        running = self.running()
        if running:
            parts.append(
                "running: "
                + ", ".join(f"trial {u.trial} fold {u.folds_done}/{self.n_folds}" for u in running)
            )
        parts.append(self.describe_best())
        return "; ".join(parts)


def _ignore(_update: TrialUpdate) -> None:
    return None


def sweep_progress_callback(on_update: Callable[[TrialUpdate], None]) -> Any:
    """A Tune ``Callback`` calling ``on_update`` in the driver for every fold a trial reports and when it
    ends (built here so that importing this module needs no Ray)."""
    from ray.tune import Callback

    class SweepProgress(Callback):
        """Forwards the sweep's trial reports and ends to ``on_update``."""

        def __init__(self, on_update: Callable[[TrialUpdate], None]) -> None:
            self._on_update = on_update

        def on_trial_result(
            self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
        ) -> None:
            self._on_update(trial_update(trials.index(trial), result))

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._on_update(trial_update(trials.index(trial), trial.last_result, ended=True))

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._on_update(trial_update(trials.index(trial), trial.last_result, ended=True, failed=True))

        # Tune pickles its run configuration with the sweep (tuner.pkl); the sink writes to this
        # process's console, which neither pickles nor means anything to a restored sweep.
        def __getstate__(self) -> dict[str, Any]:
            return {}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self._on_update = _ignore

    return SweepProgress(on_update)
