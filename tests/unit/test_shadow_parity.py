"""``pipelines.shadow_parity.compare_trades``: a shadow session's trades against the backtest's."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.shadow_parity import ENTRY_PRICE_REL_TOL, EXIT_PRICE_REL_TOL, compare_trades

M = 60_000
T0 = 1_736_121_600_000
END = T0 + 120 * M


def backtest(*trades: tuple[str, int, int, int, float, float, str]) -> pd.DataFrame:
    """Trades as ``core.sim`` reports them: entry at the bar's open time, exit at the exit bar's close."""
    cols = ["symbol", "side", "entry_ts", "exit_ts", "entry_price", "exit_price", "exit_reason"]
    return pd.DataFrame(list(trades), columns=cols)


def shadow(*trades: tuple[str, int, int, float, float, float, object]) -> pd.DataFrame:
    """Trades as ``load_shadow_trades`` reads them: fill times in ms, NaN exit of an open position."""
    cols = ["symbol", "side", "entry_ts", "exit_ts", "entry_price", "exit_price", "exit_reason"]
    return pd.DataFrame(list(trades), columns=cols)


def test_identical_trades_with_book_sized_price_differences_agree():
    # shadow: entry filled 5 ms into bar 10, SL by a mark tick inside bar 30; backtest: bar 10's open,
    # SL by the bar rule at bar 30's close; TP at a bar close in both
    bt = backtest(("ETHUSDT", 1, T0 + 10 * M, T0 + 31 * M, 100.0, 99.0, "SL"),
                  ("SOLUSDT", -1, T0 + 12 * M, T0 + 20 * M, 50.0, 49.0, "TP"))  # fmt: skip
    sh = shadow(("ETHUSDT", 1, T0 + 10 * M + 5, T0 + 30 * M + 31_999, 100.01, 98.95, "SL"),
                ("SOLUSDT", -1, T0 + 12 * M + 3, T0 + 20 * M, 49.995, 49.0, "TP"))  # fmt: skip
    parity = compare_trades(sh, bt, END)
    assert parity.ok, parity.problems
    assert (parity.shadow_trades, parity.backtest_trades, parity.matched) == (2, 2, 2)
    assert list(parity.table["verdict"]) == ["same", "same"]
    assert parity.max_entry_diff_bps == pytest.approx(1.0)
    assert parity.max_exit_diff_bps == pytest.approx(abs(98.95 - 99.0) / 99.0 * 1e4)
    assert parity.verdict.startswith("identical entries and exits (shadow 2 trades, backtest 2")


def test_no_trades_on_either_side_is_identical_and_says_so():
    parity = compare_trades(shadow(), backtest(), END)
    assert parity.ok and parity.matched == 0
    assert "no trades on either side" in parity.verdict


def test_an_entry_filled_after_the_window_is_left_out():
    sh = shadow(("ETHUSDT", 1, END + 7, END + 60_007, 100.0, 100.0, "END"))
    assert compare_trades(sh, backtest(), END).ok


def test_a_trade_on_one_side_only_is_a_difference():
    bt = backtest(("ETHUSDT", 1, T0 + 10 * M, T0 + 31 * M, 100.0, 99.0, "SL"))
    parity = compare_trades(shadow(), bt, END)
    assert not parity.ok and parity.verdict.startswith("DIFFERENT")
    assert parity.problems == ("ETHUSDT LONG entered 2025-01-06 00:10: backtest only",)
    sh = shadow(("ETHUSDT", -1, T0 + 10 * M + 5, T0 + 31 * M, 100.0, 99.0, "TP"))  # the other side
    assert {p.split(": ")[1] for p in compare_trades(sh, bt, END).problems} == {
        "backtest only",
        "shadow only",
    }


def test_another_exit_kind_or_exit_bar_is_a_difference():
    bt = backtest(("ETHUSDT", 1, T0 + 10 * M, T0 + 31 * M, 100.0, 99.0, "SL"))
    kind = shadow(("ETHUSDT", 1, T0 + 10 * M + 5, T0 + 31 * M, 100.0, 99.0, "TIME"))
    assert compare_trades(kind, bt, END).problems == (
        "ETHUSDT LONG entered 2025-01-06 00:10: exit TIME in shadow, SL in the backtest",
    )
    late = shadow(("ETHUSDT", 1, T0 + 10 * M + 5, T0 + 31 * M + 1, 100.0, 99.0, "SL"))  # a tick in bar 31
    assert compare_trades(late, bt, END).problems == (
        "ETHUSDT LONG entered 2025-01-06 00:10: exit in another bar",
    )


def test_prices_outside_the_book_model_are_a_difference():
    bt = backtest(("ETHUSDT", 1, T0 + 10 * M, T0 + 31 * M, 100.0, 99.0, "SL"))
    entry = 100.0 * (1 + 1.5 * ENTRY_PRICE_REL_TOL)
    exit_ = 99.0 * (1 - 1.5 * EXIT_PRICE_REL_TOL)
    sh = shadow(("ETHUSDT", 1, T0 + 10 * M + 5, T0 + 31 * M, entry, exit_, "SL"))
    assert [p.split(": ")[1] for p in compare_trades(sh, bt, END).problems] == [
        "entry price outside the book model",
        "exit price outside the book model",
    ]


def test_a_shadow_position_that_never_closed_is_a_difference():
    bt = backtest(("ETHUSDT", 1, T0 + 10 * M, T0 + 31 * M, 100.0, 99.0, "END"))
    sh = shadow(("ETHUSDT", 1, T0 + 10 * M + 5, float("nan"), 100.0, float("nan"), None))
    parity = compare_trades(sh, bt, END)
    assert parity.problems == ("ETHUSDT LONG entered 2025-01-06 00:10: the shadow position never closed",)
    assert parity.table.loc[0, "shadow exit"] == "open"
