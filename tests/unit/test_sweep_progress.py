"""The sweep's progress as the console shows it (``tune.sweep_progress``) and the training display's lines."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from rich.console import Console

from raytrade.training_progress import training_display
from tune.sweep_progress import SweepTally, TrialUpdate, trial_update
from tune.trainable import choose_trial


def _ended(trial: int, score: float, trades: float, folds: int = 3, failed: bool = False) -> TrialUpdate:
    return TrialUpdate(trial, folds, score, trades, ended=True, failed=failed)


@pytest.mark.parametrize(
    "ended",
    [
        [_ended(0, 1.5, 10), _ended(1, 0.5, 40), _ended(2, 0.9, 35)],  # the high score has too few trades
        [_ended(0, 1.5, 10), _ended(1, 0.5, 12)],  # none ranked: the best finished one
        [
            _ended(0, 0.7, 50),
            _ended(1, 0.7, 60),
            _ended(2, 2.0, 90, folds=2),
        ],  # tie: the earlier; 2 folds: out
        [_ended(0, -1.0, 0), _ended(1, 3.0, 80, failed=True), _ended(2, -0.5, 31)],
    ],
)
def test_best_so_far_is_the_trial_choose_trial_would_hand_on(ended):
    tally = SweepTally(total=len(ended), n_folds=3, min_trades=30)
    for update in ended:
        tally.update(update)
    table = pd.DataFrame(
        [{"trial_index": u.trial, "score": u.score, "folds_done": 0 if u.failed else u.folds_done,
          "total_trades": u.trades} for u in ended]
    )  # fmt: skip
    chosen = choose_trial(table, n_folds=3, min_trades=30)
    best = tally.best()
    assert best is not None and best.trial == int(chosen.loc[chosen["chosen"], "trial_index"].iloc[0])


def test_tally_counts_trials_and_folds_and_an_ended_trial_stays_ended():
    tally = SweepTally(total=4, n_folds=3, min_trades=30)
    tally.update(TrialUpdate(0, 1, 0.2, 5.0))
    tally.update(TrialUpdate(1, 2, 0.1, 9.0))
    assert (tally.ended, tally.folds_done, tally.best()) == (0, 3, None)
    assert (
        tally.describe() == "0/4 trials done; running: trial 0 fold 1/3, trial 1 fold 2/3; no trial done yet"
    )
    tally.update(_ended(0, 0.4, 12))
    tally.update(TrialUpdate(0, 3, 0.4, 12.0))  # a result arriving after the end changes nothing
    tally.update(_ended(1, math.nan, 0, folds=2, failed=True))
    assert (tally.ended, tally.failed, tally.folds_done) == (2, 1, 6)
    assert tally.describe() == (
        "2/4 trials done (1 failed); best so far: trial 0, score 0.4 "
        "(12 validation trades: fewer than 30, too few to rank)"
    )


def test_trial_update_reads_the_trainables_report_and_an_empty_one():
    result = {"folds_done": 2.0, "score": 0.25, "total_trades": 31.0, "fold0_trades": 11.0}
    assert trial_update(3, result) == TrialUpdate(3, 2, 0.25, 31.0)
    empty = trial_update(1, None, ended=True, failed=True)
    assert (empty.folds_done, math.isnan(empty.score), empty.trades, empty.failed) == (0, True, 0.0, True)


def test_without_bars_every_stage_trial_and_fold_is_a_line_naming_what_runs():
    console = Console(record=True, width=200)
    stages = ("features", "labels", "sweep", "fold backtests")
    with training_display(console, False, stages, num_samples=2) as display:
        display.step("features")
        display.step("labels")
        assert display.bar.tasks[0].description == "training: sweep"  # not "labels done" through the sweep
        display.loaded(1234, 3)
        display.trial(TrialUpdate(0, 1, 0.1, 4.0))
        display.trial(TrialUpdate(0, 3, 0.6, 45.0, ended=True))
        display.trial(TrialUpdate(1, 3, 0.2, 8.0, ended=True))
        display.step("sweep")
        for k in range(3):
            display.fold(k, 3)
        display.step("fold backtests")
        assert display.bar.tasks[0].description == "training: done"
    lines = console.export_text().splitlines()
    assert lines == [
        "stage done: features",
        "stage done: labels",
        "training set: 1,234 rows, 3 walk-forward folds",
        "sweep: trial 0 done (1/2): score 0.6, 45 validation trades over 3 folds; "
        "best so far: trial 0, score 0.6 (45 validation trades)",
        "sweep: trial 1 done (2/2): score 0.2, 8 validation trades over 3 folds; "
        "best so far: trial 0, score 0.6 (45 validation trades)",
        "stage done: sweep",
        "chosen configuration: fold 1 of 3 backtested on its test window",
        "chosen configuration: fold 2 of 3 backtested on its test window",
        "chosen configuration: fold 3 of 3 backtested on its test window",
        "stage done: fold backtests",
    ]
