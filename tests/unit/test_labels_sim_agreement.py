"""Labels and the fill simulator agree: every labelled entry of a synthetic market, replayed as a trade.

The label kernel (``core.labels``) and the simulator (``core.sim``) are separate code. For each
labelled decision bar and direction, the simulator opens the trade the label describes — a market
entry at the next bar's open with the labels' slippage (``impact_k = 0``), SL/TP at the label's
barrier distances ``k_sl·ATR`` / ``k_tp·ATR`` from the fill, the label horizon as ``max_hold_bars``,
the policy's default leverage 3 — and runs it bar by bar through the symbol's last-price candles,
mark candles and funding (``MarketPanel``) until it exits. Its exit bar (``bars_held``) and exit
kind (TP / SL, the labels' RISK counted as SL / TIME) are compared with the label's.

Measured (4 symbols × 7 days, seed 11, preset ``LabelSpec()``; 75,968 events = 9,496 labelled bars ×
4 symbols × 2 directions):

- mark barriers, no tick filter (the research backtest: ``SymbolRules()``): 75,968 of 75,968 agree.
- mark barriers, the symbols' ticks (the paper venue's filters; labels given the same ``tick_size``):
  75,968 of 75,968 agree. Without ``tick_size`` the labels' unrounded barriers sit up to one tick
  further out than the simulator's triggers and 7.5% of the events differ (SOLUSDT 17%).
- last-price barriers (the rule before): 50,805 of 75,968 agree (66.9%): the simulator triggers on
  the mark, which differs from the last price by the premium basis.

Possible causes of a remaining difference, none of which occurs here: a liquidation before the stop
(the simulator's isolated-margin liquidation; the labels have none — at leverage 3 the liquidation
price is ~30% away, far beyond any stop of the preset); a bar with a non-finite price (the simulator
skips it; the labels mark the window BAD_PRICE and never label it). Funding changes only the margin,
so only the liquidation price, never a trigger. The test allows liquidations as the one documented
cause and fails on any other difference.
"""

from __future__ import annotations

import dataclasses

import numba as nb
import numpy as np
import pytest

from core.config import LabelSpec, PolicyConfig
from core.labels import ExitReason, cumulative_funding, label_bars
from core.labels import kernel as label_kernel
from core.signals import empty_signals
from core.sim import SimConfig, SymbolRules, panel_from_market, run_backtest
from core.sim import kernel as k
from core.sim.config import risk_vector
from core.sim.rules import SymbolFilters, pack_rules
from core.synthetic import generate_market

START = 1_717_200_000_000  # 2024-06-01 00:00 UTC
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
DAYS = 7
NOTIONAL_USDT = 1_000.0
TARGET = 0.999
# label exit reason → the simulator's
SIM_REASON = {int(ExitReason.TP): k.REASON_TP, int(ExitReason.SL): k.REASON_SL,
              int(ExitReason.RISK): k.REASON_SL, int(ExitReason.TIME): k.REASON_TIME}  # fmt: skip
# columns of _simulate_entries' output
O_REASON, O_BARS, O_EXIT_REF, O_ENTRY, O_SL, O_TP, O_MASK, O_PNL, O_FUNDING, O_QTY, O_LEN = range(11)


@nb.njit(cache=True)
def _simulate_entries(decision, side, ts, last_open, last_close, mark_open, mark_high, mark_low, mark_close,
                      funding_rate, atr, sl_distance, tp_distance, notional, leverage, sym, brackets, cfg,
                      lim, acct0, pos0, out):  # fmt: skip
    # One single-trade book per (decision bar, side): try_entry at the next open, then symbol_bar per
    # bar until the position closes — the two kernel steps portfolio_bar runs for every backtest bar.
    n = len(ts)
    for r in range(len(decision)):
        i = decision[r]
        acct = acct0.copy()
        pos = pos0.copy()
        trades = np.full((4, k.TRADE_LEN), np.nan)
        fills = np.full((8, k.FILL_LEN), np.nan)
        events = np.full((4, k.EVENT_LEN), np.nan)
        req = np.empty(k.REQ_LEN)
        mask = k.try_entry(acct, pos, sym, brackets, cfg, lim, fills, events, req, 0, side[r], ts[i + 1],
                           last_open[i + 1], mark_open[i + 1], last_close[i], atr[i], notional, sl_distance[r],
                           tp_distance[r], leverage, np.nan, False)  # fmt: skip
        out[r, O_MASK] = mask
        if mask != 0:
            continue
        out[r, O_ENTRY] = pos[0, k.P_ENTRY_PRICE]
        out[r, O_SL] = pos[0, k.P_SL]
        out[r, O_TP] = pos[0, k.P_TP]
        out[r, O_QTY] = pos[0, k.P_QTY]
        reason = 0
        j = i + 1
        while reason == 0 and j < n:
            reason = k.symbol_bar(acct, pos, sym, cfg, trades, fills, 0, ts[j], last_open[j], last_close[j],
                                  mark_open[j], mark_high[j], mark_low[j], mark_close[j], np.nan,
                                  funding_rate[j])  # fmt: skip
            j += 1
        out[r, O_REASON] = reason
        if reason != 0:
            out[r, O_BARS] = trades[0, k.T_BARS_HELD]
            out[r, O_EXIT_REF] = trades[0, k.T_EXIT_REF]
            out[r, O_PNL] = trades[0, k.T_PNL]
            out[r, O_FUNDING] = trades[0, k.T_FUNDING]


def symbol_rules(market, symbol: str, tick: bool) -> SymbolRules:
    meta = market.meta[symbol]
    return SymbolRules(SymbolFilters(tick_size=meta.tick_size if tick else 0.0, step_size=meta.quantity_step))


def sim_config(spec: LabelSpec) -> SimConfig:
    return SimConfig.from_label_spec(spec, impact_k=0.0, sizing="notional_usdt", protection="entry_distance",
                                     default_leverage=PolicyConfig().leverage)  # fmt: skip


def compare(market, spec: LabelSpec, *, tick: bool) -> dict[str, dict[str, np.ndarray]]:
    """Label every symbol (mark candles given; ``tick``: the symbols' ticks to labels and simulator
    alike), run the simulator on every labelled entry, return per symbol the arrays to compare."""
    panel = panel_from_market(market, atr_timeframe=spec.atr_timeframe, atr_period=spec.atr_period)
    cfg = sim_config(spec)
    out = {}
    for col, symbol in enumerate(panel.symbols):
        candles, funding = market.candles_1m[symbol], market.funding[symbol]
        assert np.array_equal(candles["ts"], panel.ts)  # one bar per panel row: positions coincide
        rules = symbol_rules(market, symbol, tick)
        labels = label_bars(
            candles, funding, spec, mark=market.mark_1m[symbol], tick_size=rules.filters.tick_size
        )
        ok = np.flatnonzero(labels.valid)
        decision = np.concatenate([labels.index[ok], labels.index[ok]]).astype(np.int64)
        side = np.repeat([1.0, -1.0], len(ok))
        atr = np.ascontiguousarray(panel.atr[:, col])
        sym, brackets = pack_rules((symbol,), {symbol: rules})
        res = np.full((len(decision), O_LEN), np.nan)
        columns = [np.ascontiguousarray(getattr(panel, name)[:, col]) for name in
                   ("open", "close", "mark_open", "mark_high", "mark_low", "mark_close", "funding_rate")]  # fmt: skip
        _simulate_entries(decision, side, panel.ts, *columns, atr, spec.k_sl * atr[decision],
                          spec.k_tp * atr[decision], NOTIONAL_USDT, float(PolicyConfig().leverage), sym,
                          brackets, cfg.vector(), risk_vector(None), k.new_account(1e9), k.new_positions(1),
                          res)  # fmt: skip
        reason = np.concatenate([labels.long.exit_reason[ok], labels.short.exit_reason[ok]])
        tte = np.concatenate([labels.long.time_to_event_min[ok], labels.short.time_to_event_min[ok]])
        ret_net = np.concatenate([labels.long.ret_net[ok], labels.short.ret_net[ok]])
        cum = cumulative_funding(candles["ts"], funding["ts"], funding["funding_rate"])
        out[symbol] = {
            "side": side, "sim_reason": res[:, O_REASON], "sim_bars": res[:, O_BARS], "mask": res[:, O_MASK],
            "label_reason": np.array([SIM_REASON[int(x)] for x in reason]), "label_bars": tte,
            # the labels' return before funding; the simulator's PnL before funding per entry notional
            "label_return": ret_net + side * (cum[decision + tte] - cum[decision]),
            "sim_return": (res[:, O_PNL] + res[:, O_FUNDING]) / (res[:, O_QTY] * res[:, O_ENTRY]),
            "sim_exit_ref": res[:, O_EXIT_REF],
        }  # fmt: skip
    return out


def agreement(results) -> tuple[int, int, int]:
    """(events, agreeing events, differing events with the documented cause: a liquidation)."""
    events = agree = explained = 0
    for r in results.values():
        same = (r["sim_reason"] == r["label_reason"]) & (r["sim_bars"] == r["label_bars"])
        events += len(same)
        agree += int(same.sum())
        explained += int((~same & (r["sim_reason"] == k.REASON_LIQUIDATION)).sum())
    return events, agree, explained


@pytest.fixture(scope="module")
def market():
    return generate_market(SYMBOLS, START, DAYS * 1440, seed=11)


@pytest.mark.parametrize("tick", [False, True], ids=["backtest-no-tick-filter", "venue-symbol-ticks"])
def test_every_labelled_entry_exits_in_the_simulator_on_the_label_bar_for_the_label_reason(market, tick):
    results = compare(market, LabelSpec(), tick=tick)
    events, agree, explained = agreement(results)
    print(f"\nlabels vs simulator ({'symbol ticks' if tick else 'no tick filter'}): {agree:,} of {events:,} "
          f"events agree on exit bar and kind ({agree / events:.4%}); {explained} differ by a liquidation")  # fmt: skip
    assert events > 70_000
    for r in results.values():
        assert (r["mask"] == 0).all()  # every entry passed the always-on venue checks
    assert agree / events >= TARGET
    assert agree + explained == events  # no difference without a documented cause
    # where they agree the fills agree too: the labels' return before funding is the trade's PnL before
    # funding per entry notional (same entry fill, trigger, gap rule, slippage and fees)
    for r in results.values():
        same = (r["sim_reason"] == r["label_reason"]) & (r["sim_bars"] == r["label_bars"])
        np.testing.assert_allclose(r["sim_return"][same], r["label_return"][same], rtol=0, atol=1e-12)
    kinds = np.concatenate([r["label_reason"] for r in results.values()])
    assert {k.REASON_TP, k.REASON_SL, k.REASON_TIME} <= set(kinds.tolist())


def test_last_price_barriers_disagree_with_the_mark_triggered_simulator(market):
    # The rule before this one: the comparison is sharp enough to see it.
    events, agree, _ = agreement(compare(market, LabelSpec(barrier_price="last"), tick=False))
    print(f"\nlast-price barriers vs simulator: {agree:,} of {events:,} agree ({agree / events:.4%})")
    assert agree / events < 0.9


def test_untick_labels_differ_from_tick_rounded_triggers(market):
    # Without the symbol's tick the labels' barriers sit up to a tick further out than the triggers.
    spec = LabelSpec()
    symbol = "SOLUSDT"
    rules = symbol_rules(market, symbol, tick=True)
    candles, funding, mark = market.candles_1m[symbol], market.funding[symbol], market.mark_1m[symbol]
    rounded = label_bars(candles, funding, spec, mark=mark, tick_size=rules.filters.tick_size)
    plain = label_bars(candles, funding, spec, mark=mark)
    ok = rounded.valid
    differs = rounded.long.time_to_event_min[ok] != plain.long.time_to_event_min[ok]
    assert 0.01 < differs.mean() < 0.5


def test_the_harness_is_the_backtest_on_a_sample_of_entries(market):
    # _simulate_entries calls the kernel steps directly; a one-trade run_backtest gives the same trade.
    spec = LabelSpec()
    symbol = "ETHUSDT"
    rules = symbol_rules(market, symbol, tick=True)
    single = dataclasses.replace(market, symbols=(symbol,))
    results = compare(single, spec, tick=True)[symbol]
    panel = panel_from_market(single)
    labels = label_bars(single.candles_1m[symbol], single.funding[symbol], spec, mark=single.mark_1m[symbol],
                        tick_size=rules.filters.tick_size)  # fmt: skip
    ok = np.flatnonzero(labels.valid)
    pick = np.random.default_rng(0).choice(2 * len(ok), 24, replace=False)
    for r in pick:
        i, side = int(ok[r % len(ok)]), (1 if r < len(ok) else -1)
        sig = empty_signals(panel.shape)
        sig.direction[i, 0] = side
        sig.size_fraction[i, 0] = NOTIONAL_USDT
        sig.leverage[i, 0] = PolicyConfig().leverage
        sig.sl_price[i, 0] = spec.k_sl * panel.atr[i, 0]
        sig.tp_price[i, 0] = spec.k_tp * panel.atr[i, 0]
        trades = run_backtest(panel, sig, sim_config(spec), rules={symbol: rules}).trades
        assert len(trades) == 1
        t = trades.iloc[0]
        assert k.REASON_NAMES.index(t["exit_reason"]) == results["sim_reason"][r]
        assert t["bars_held"] == results["sim_bars"][r]
        assert t["exit_reference_price"] == results["sim_exit_ref"][r]


def test_label_rounding_is_the_simulators_trigger_rounding():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        tick = float(rng.choice([0.1, 0.01, 0.001, 1e-5, 0.5, 0.0]))
        price = float(rng.uniform(0.001, 70_000))
        anchor = price * float(rng.uniform(0.9, 1.1))
        assert label_kernel.round_toward(price, tick, anchor) == k.round_toward(price, tick, anchor)
