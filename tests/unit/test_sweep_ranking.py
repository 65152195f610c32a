"""A sweep ranks configurations by validation score only when they made enough validation trades
(``tune.trainable.choose_trial``, ``MIN_RANKED_TRADES``); a trial reports its trades per fold."""

from __future__ import annotations

import pandas as pd
import pytest

from core.errors import ConfigError
from tune.trainable import MIN_RANKED_TRADES, choose_trial, flat_metrics


def _table(rows: list[tuple[float, list[int]]], folds: int = 3) -> pd.DataFrame:
    """One row per trial: (score, validation trades of each fold done)."""
    return pd.DataFrame(
        [
            {"trial_index": i, "num_leaves": 15 + i, "score": score, "folds_done": len(trades),
             **{f"fold{k}_trades": float(t) for k, t in enumerate(trades)}, "total_trades": float(sum(trades))}
            for i, (score, trades) in enumerate(rows)
        ]
    )  # fmt: skip


def _chosen(table: pd.DataFrame) -> int:
    (index,) = table.loc[table["chosen"], "trial_index"]
    return int(index)


def test_a_configuration_that_won_on_one_trade_is_not_chosen_over_one_that_traded_enough():
    # the sweep: the top score came from a single validation trade in three folds
    table = choose_trial(
        _table([(0.0, [0, 0, 0]), (8.4, [0, 1, 0]), (0.0, [0, 0, 0]), (1.2, [12, 15, 9])]), 3
    )
    assert _chosen(table) == 3
    assert table["ranked"].tolist() == [False, False, False, True]


def test_the_highest_score_among_ranked_trials_wins_ties_to_the_earlier():
    table = choose_trial(_table([(2.0, [10, 10, 10]), (3.0, [10, 10, 10]), (3.0, [20, 20, 20])]), 3)
    assert _chosen(table) == 1 and table["ranked"].all()


def test_when_no_trial_traded_enough_the_highest_finished_score_is_used_and_nothing_is_ranked():
    table = choose_trial(_table([(0.0, [0, 0, 0]), (5.0, [1, 0, 2]), (9.0, [40, 20])]), 3)
    assert not table["ranked"].any()
    assert _chosen(table) == 1  # trial 2 did not finish its folds: it has trades but cannot be used


def test_minimum_is_a_named_setting_and_a_sweep_with_no_finished_trial_is_refused():
    assert MIN_RANKED_TRADES == 30
    table = _table([(1.0, [5, 5, 5]), (0.5, [10, 10, 10])])
    assert _chosen(choose_trial(table, 3)) == 1
    assert _chosen(choose_trial(table, 3, min_trades=10)) == 0
    with pytest.raises(ConfigError, match="no trial of the sweep finished its 3 folds"):
        choose_trial(_table([(1.0, [5])]), 3)


def test_a_trial_reports_its_trades_per_fold_and_in_total():
    folds = [{"fold": 0.0, "trades": 4.0, "score": 1.0}, {"fold": 1.0, "trades": 0.0, "score": 0.0}]
    result = {"score": 0.5, "folds_done": 2, "mean": {"trades": 2.0, "score": 0.5}, "folds": folds}
    metrics = flat_metrics(result)
    assert (metrics["fold0_trades"], metrics["fold1_trades"], metrics["total_trades"]) == (4.0, 0.0, 4.0)
    assert metrics["mean_trades"] == 2.0 and metrics["fold_trades"] == 0.0  # last fold, as before
