"""Triple-barrier labels: the numba kernel against a plain-Python reference, edge cases, funding, events."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import LabelSpec
from core.costs import entry_fill_price, exit_fill_price, net_return, slippage_fraction
from core.errors import DataQualityError
from core.labels import (
    ExitReason,
    LabelStatus,
    cumulative_funding,
    cusum_events,
    label_atr,
    label_bars,
    prepare_label_inputs,
    run_label_kernel,
    spike_events,
)
from core.time import HOUR_MS, MINUTE_MS

START = 1_717_200_000_000  # 2024-06-01 00:00 UTC
NO_FUNDING = {"ts": np.zeros(0, np.int64), "funding_rate": np.zeros(0)}
TP, SL, RISK, TIME, NONE = (int(r) for r in (ExitReason.TP, ExitReason.SL, ExitReason.RISK, ExitReason.TIME, ExitReason.NONE))  # fmt: skip


# --- plain-Python reference: the package docstring, literally --------------------------------------


def reference_labels(
    candles, funding, atr, spec: LabelSpec, index=None, mark=None, tick=0.0
) -> dict[str, list]:
    """Label bar by bar, direction by direction, walking the path one bar at a time."""
    ts = [int(t) for t in candles["ts"]]
    o, h, lo, c = ([float(x) for x in candles[k]] for k in ("open", "high", "low", "close"))
    # barrier price: the mark candle of the same minute (close not NaN), else the last-price candle
    bo, bh, bl = list(o), list(h), list(lo)
    if mark is not None and spec.barrier_price == "mark":
        row = {int(t): q for q, t in enumerate(mark["ts"])}
        for q, t in enumerate(ts):
            m = row.get(t)
            if m is not None and not math.isnan(mark["close"][m]):
                bo[q], bh[q], bl[q] = (float(mark[x][m]) for x in ("open", "high", "low"))
    f_ts = [int(t) for t in funding["ts"]]
    f_rate = [float(r) for r in funding["funding_rate"]]
    n, hb = len(ts), spec.h_bars
    out: dict[str, list] = {"status": []}
    for side in ("long", "short"):
        for name in ("y", "ret_net", "mae", "mfe", "time_to_event_min", "exit_reason"):
            out[f"{side}_{name}"] = []
    for i in range(n) if index is None else index:
        i = int(i)
        if i + hb >= n:
            status = 1
        elif not (math.isfinite(atr[i]) and atr[i] > 0):
            status = 2
        elif any(ts[q + 1] - ts[q] != MINUTE_MS for q in range(i, i + hb)):
            status = 3
        elif any(
            not (math.isfinite(x[q]) and x[q] > 0)
            for q in range(i, i + hb + 1)
            for x in (o, h, lo, c, bo, bh, bl)
        ):
            status = 4
        else:
            status = 0
        out["status"].append(status)
        for side, d in (("long", 1), ("short", -1)):
            if status:
                row = (0, math.nan, math.nan, math.nan, -1, NONE)
            else:
                row = _reference_one(i, d, o, c, bo, bh, bl, ts, float(atr[i]), f_ts, f_rate, spec, tick)
            for name, v in zip(
                ("y", "ret_net", "mae", "mfe", "time_to_event_min", "exit_reason"), row, strict=True
            ):
                out[f"{side}_{name}"].append(v)
    return out


def _toward(price, tick, anchor):
    # a level rounded to the tick towards the entry fill (the simulator's trigger rounding)
    if not tick > 0:
        return price
    return math.ceil(price / tick - 1e-9) * tick if price < anchor else math.floor(price / tick + 1e-9) * tick


def _reference_one(i, d, o, c, bo, h, lo, ts, a, f_ts, f_rate, spec, tick=0.0):
    # o, c: last price (entry, time exit, gap fills); bo, h, lo: the barrier price's open, high, low
    s = spec.slippage_k * a / c[i]
    entry = o[i + 1] * (1 + d * s)
    tp = _toward(entry + d * spec.k_tp * a, tick, entry)
    sl = _toward(entry - d * spec.k_sl * a, tick, entry)
    risk = entry - d * spec.risk_mae_atr * a
    worse = min if d > 0 else max  # the worse of two exit prices
    best, worst = -math.inf, math.inf  # max high, min low seen while holding
    for j in range(i + 1, i + spec.h_bars + 1):
        adverse = lo[j] <= sl if d > 0 else h[j] >= sl
        favourable = h[j] >= tp if d > 0 else lo[j] <= tp
        if adverse:
            # a trigger fills at its level, or at the worse of level and last open when the barrier
            # price opened beyond it (a gap)
            gap = bo[j] <= sl if d > 0 else bo[j] >= sl
            y, price = -1, (worse(sl, o[j]) if gap else sl)
            reason = RISK if (lo[j] <= risk if d > 0 else h[j] >= risk) else SL
            if d > 0:
                worst = min(worst, lo[j])
            else:
                best = max(best, h[j])
            break
        if favourable:
            gap = bo[j] >= tp if d > 0 else bo[j] <= tp
            y, price, reason = 1, (worse(tp, o[j]) if gap else tp), TP
            if d > 0:
                best, worst = max(best, tp), min(worst, lo[j])
            else:
                best, worst = max(best, h[j]), min(worst, tp)
            break
        best, worst = max(best, h[j]), min(worst, lo[j])
    else:
        y, price, reason = 0, c[i + spec.h_bars], TIME
    exit_price = price * (1 - d * s)
    entry_time, exit_time = ts[i + 1], ts[j] + MINUTE_MS
    funding = sum(r for t, r in zip(f_ts, f_rate, strict=True) if entry_time < t <= exit_time)
    ret = d * (exit_price - entry) / entry - spec.fee_rate * (entry + exit_price) / entry - d * funding
    up, down = max(0.0, (best - entry) / entry), max(0.0, (entry - worst) / entry)
    mae, mfe = (down, up) if d > 0 else (up, down)
    return y, ret, mae, mfe, (exit_time - entry_time) // MINUTE_MS, reason


def assert_same(labels, ref: dict[str, list]) -> None:
    got = labels.columns()
    np.testing.assert_array_equal(got["status"], ref["status"])
    for side in ("long", "short"):
        for name in ("y", "time_to_event_min", "exit_reason"):
            np.testing.assert_array_equal(
                got[f"{side}_{name}"], ref[f"{side}_{name}"], err_msg=f"{side}_{name}"
            )
        for name in ("ret_net", "mae", "mfe"):
            np.testing.assert_allclose(
                got[f"{side}_{name}"], ref[f"{side}_{name}"], rtol=0, atol=1e-12, err_msg=f"{side}_{name}"
            )


# --- random series ---------------------------------------------------------------------------------


def random_market(seed: int, n: int, gap_share=0.0, jump_share=0.0, nan_share=0.0, tick=0.01, vol=0.002):
    """A tick-rounded random walk with wicks, opening jumps, missing bars and NaN prices."""
    rng = np.random.default_rng(seed)
    ret = rng.standard_normal(n) * vol
    jumps = rng.random(n) < jump_share
    ret[jumps] += rng.choice([-1, 1], jumps.sum()) * rng.uniform(5, 20, jumps.sum()) * vol
    close = 100 * np.exp(np.cumsum(ret))
    open_ = np.concatenate(([100.0], close[:-1]))
    open_[jumps] = close[jumps] * np.exp(-ret[jumps] * rng.uniform(0, 0.3, jumps.sum()))  # gap at the open
    wick = rng.exponential(vol * 100, (2, n))
    cols = {
        "open": np.round(open_ / tick) * tick,
        "close": np.round(close / tick) * tick,
    }
    cols["high"] = np.round((np.maximum(cols["open"], cols["close"]) + wick[0]) / tick) * tick
    cols["low"] = np.round((np.minimum(cols["open"], cols["close"]) - wick[1]) / tick) * tick
    slots = np.arange(n, dtype=np.int64) + np.cumsum(rng.random(n) < gap_share)  # a gap skips a minute
    cols["ts"] = START + slots * MINUTE_MS
    bad = rng.random(n) < nan_share
    cols["high"][bad] = np.nan
    rates = np.round(rng.normal(1e-4, 3e-4, n // 240 + 2), 8)
    f_ts = START + np.sort(rng.choice(np.arange(1, n + n // 10 + 2), len(rates), replace=False)) * MINUTE_MS
    return cols, {"ts": f_ts, "funding_rate": rates}


def random_mark(seed: int, candles, missing_share=0.0, nan_share=0.0, tick=0.01, basis=0.002):
    """Mark candles: the last-price candles moved by a random basis (own open, high, low, close),
    tick-rounded; some minutes missing, some with a NaN close (both: the last-price bar stands in)."""
    rng = np.random.default_rng(seed + 7)
    n = len(candles["ts"])
    b = rng.standard_normal((2, n)) * basis
    mo = candles["open"] * (1 + b[0])
    mc = candles["close"] * (1 + b[1])
    wick = rng.exponential(basis, (2, n))
    mark = {
        "open": mo,
        "close": mc,
        "high": np.maximum(mo, mc) * (1 + wick[0]),
        "low": np.minimum(mo, mc) * (1 - wick[1]),
    }
    mark = {key: np.round(v / tick) * tick for key, v in mark.items()}
    mark["close"][rng.random(n) < nan_share] = np.nan
    keep = rng.random(n) >= missing_share
    return {"ts": candles["ts"][keep], **{key: v[keep] for key, v in mark.items()}}


def random_atr(seed: int, close: np.ndarray, warmup: int, nan_share=0.0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    atr = close * rng.uniform(0.002, 0.02, len(close))
    atr[:warmup] = np.nan
    atr[rng.random(len(close)) < nan_share] = np.nan
    return atr


spec_strategy = st.builds(
    lambda k_tp, k_sl, extra, h, fee, slip: LabelSpec(
        k_tp=k_tp, k_sl=k_sl, risk_mae_atr=k_sl + extra, h_bars=h, fee_rate=fee, slippage_k=slip
    ),
    st.floats(0.2, 6), st.floats(0.2, 6), st.floats(0, 3), st.integers(1, 90),
    st.sampled_from([0.0, 0.0004, 0.001]), st.sampled_from([0.0, 0.15, 0.5, 1.5]),
)  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 260),
    spec=spec_strategy,
    gap_share=st.sampled_from([0.0, 0.0, 0.01, 0.05]),
    jump_share=st.sampled_from([0.0, 0.02, 0.1]),
    nan_share=st.sampled_from([0.0, 0.0, 0.005]),
    warmup=st.integers(0, 30),
)
def test_kernel_equals_reference_on_random_series(seed, n, spec, gap_share, jump_share, nan_share, warmup):
    candles, funding = random_market(seed, n, gap_share, jump_share, nan_share)
    atr = random_atr(seed, candles["close"], warmup, nan_share=0.01)
    labels = label_bars(candles, funding, spec, atr=atr)
    assert_same(labels, reference_labels(candles, funding, atr, spec))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 260),
    spec=spec_strategy,
    jump_share=st.sampled_from([0.0, 0.02, 0.1]),
    missing_share=st.sampled_from([0.0, 0.0, 0.1, 1.0]),
    nan_share=st.sampled_from([0.0, 0.02]),
    tick=st.sampled_from([0.0, 0.0, 0.01, 0.05]),
    barrier_price=st.sampled_from(["mark", "mark", "last"]),
)
def test_kernel_equals_reference_with_mark_barriers_and_tick_rounding(
    seed, n, spec, jump_share, missing_share, nan_share, tick, barrier_price
):
    candles, funding = random_market(seed, n, gap_share=0.01, jump_share=jump_share)
    mark = random_mark(seed, candles, missing_share, nan_share)
    spec = spec.model_copy(update={"barrier_price": barrier_price})
    atr = random_atr(seed, candles["close"], 5)
    labels = label_bars(candles, funding, spec, atr=atr, mark=mark, tick_size=tick)
    assert_same(labels, reference_labels(candles, funding, atr, spec, mark=mark, tick=tick))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    k_tp=st.floats(2, 20),
    k_sl=st.floats(2, 20),
    h_bars=st.integers(60, 900),
    jump_share=st.sampled_from([0.0, 0.002, 0.01]),
)
def test_kernel_equals_reference_on_long_searches(seed, k_tp, k_sl, h_bars, jump_share):
    spec = LabelSpec(k_tp=k_tp, k_sl=k_sl, risk_mae_atr=k_sl * 1.3, h_bars=h_bars, slippage_k=0.15)
    candles, funding = random_market(seed, 1400, gap_share=0.0005, jump_share=jump_share, vol=0.001)
    rng = np.random.default_rng(seed)
    atr = candles["close"] * 0.001 * rng.uniform(0.5, 1.5, 1400)  # barriers 1 … 30 bar sds away
    index = rng.choice(1400, 60, replace=False)
    labels = label_bars(candles, funding, spec, atr=atr, index=index)
    assert_same(labels, reference_labels(candles, funding, atr, spec, index))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_equals_reference_with_wide_barriers_and_long_horizon(seed):
    # Exits hundreds of bars out: the search gallops over spans of blocks and halves back down.
    spec = LabelSpec(k_tp=12.0, k_sl=9.0, risk_mae_atr=14.0, h_bars=1500, slippage_k=0.3)
    candles, funding = random_market(seed, 5000, gap_share=0.0003, jump_share=0.002, vol=0.001)
    atr = random_atr(seed, candles["close"], 20) * 0.2
    index = np.sort(np.random.default_rng(seed).choice(5000, 160, replace=False))
    labels = label_bars(candles, funding, spec, atr=atr, index=index)
    assert_same(labels, reference_labels(candles, funding, atr, spec, index))
    tte = labels.long.time_to_event_min[labels.valid]
    assert tte.max() > 600 and np.median(tte) > 64  # really exercised the long searches
    assert {TP, SL} <= set(labels.long.exit_reason[labels.valid].tolist())


def test_kernel_equals_reference_on_a_synthetic_market_with_real_atr():
    from core.synthetic import generate_market

    market = generate_market(["ETHUSDT"], START, 3000, seed=3)
    candles, funding = market.candles_1m["ETHUSDT"], market.funding["ETHUSDT"]
    mark, tick = market.mark_1m["ETHUSDT"], market.meta["ETHUSDT"].tick_size
    spec = LabelSpec()
    atr = label_atr(candles["ts"], candles["high"], candles["low"], candles["close"], "15m", 14)
    labels = label_bars(candles, funding, spec, mark=mark, tick_size=tick)
    assert_same(labels, reference_labels(candles, funding, atr, spec, mark=mark, tick=tick))
    assert labels.valid.sum() > 2000 and labels.spec_hash == spec.spec_hash()
    last = label_bars(candles, funding, spec.model_copy(update={"barrier_price": "last"}))
    assert_same(
        last, reference_labels(candles, funding, atr, spec.model_copy(update={"barrier_price": "last"}))
    )
    # the mark moves apart from the last price: a third of the exits fall on another bar
    moved = labels.long.time_to_event_min[labels.valid] != last.long.time_to_event_min[labels.valid]
    assert 0.05 < moved.mean() < 0.9


# --- hand-built edge cases -------------------------------------------------------------------------


def flat_candles(n: int, price: float = 100.0) -> dict[str, np.ndarray]:
    return {
        "ts": START + np.arange(n, dtype=np.int64) * MINUTE_MS,
        **{k: np.full(n, price) for k in ("open", "high", "low", "close")},
    }


def spec_for(**kw) -> LabelSpec:
    base = {"k_tp": 2.0, "k_sl": 1.0, "risk_mae_atr": 3.0, "h_bars": 5, "fee_rate": 0.0, "slippage_k": 0.0}
    return LabelSpec(**(base | kw))


def test_barrier_touched_on_the_entry_bar_is_an_event():
    candles = flat_candles(10)
    candles["high"][1] = 102.0  # entry bar 1 of decision bar 0 reaches TP = 100 + 2·1
    labels = label_bars(candles, NO_FUNDING, spec_for(), atr=np.ones(10), index=np.array([0]))
    assert labels.long.exit_reason[0] == TP and labels.long.y[0] == 1
    assert labels.long.time_to_event_min[0] == 1
    assert labels.long.ret_net[0] == pytest.approx(0.02, abs=1e-15)
    assert labels.long.mfe[0] == pytest.approx(0.02, abs=1e-15) and labels.long.mae[0] == 0.0
    assert labels.short.exit_reason[0] == SL and labels.short.ret_net[0] == pytest.approx(-0.01, abs=1e-15)


def test_both_barriers_in_one_bar_is_a_stop_loss():
    candles = flat_candles(10)
    candles["high"][3], candles["low"][3] = 102.5, 98.5  # long: TP 102 and SL 99 both inside bar 3
    labels = label_bars(candles, NO_FUNDING, spec_for(), atr=np.ones(10), index=np.array([0]))
    assert labels.long.exit_reason[0] == SL and labels.long.y[0] == -1
    assert labels.long.ret_net[0] == pytest.approx(-0.01, abs=1e-15)
    assert labels.long.mfe[0] == 0.0  # the favourable side of a stop bar is left out
    assert labels.long.mae[0] == pytest.approx(0.015, abs=1e-15)  # its adverse extreme counts in full
    assert labels.long.time_to_event_min[0] == 3
    # short: SL 101 also inside bar 3 → stop as well
    assert labels.short.exit_reason[0] == SL and labels.short.time_to_event_min[0] == 3


def test_gap_through_the_stop_fills_at_the_open_and_gap_through_tp_fills_at_tp():
    candles = flat_candles(10)
    candles["open"][2], candles["high"][2], candles["low"][2], candles["close"][2] = 97.8, 97.9, 97.5, 97.9
    labels = label_bars(candles, NO_FUNDING, spec_for(), atr=np.ones(10), index=np.array([0]))
    assert labels.long.exit_reason[0] == SL
    assert labels.long.ret_net[0] == pytest.approx(-0.022, abs=1e-15)  # the open 97.8, worse than SL 99
    assert labels.short.exit_reason[0] == TP
    assert labels.short.ret_net[0] == pytest.approx(0.02, abs=1e-15)  # TP 98 although it opened at 97.8


def test_crash_bar_beyond_the_risk_level_counts_as_stop_loss_with_reason_risk():
    candles = flat_candles(10)
    candles["low"][2] = 96.5  # opens at 100, goes through SL 99 and RISK 97
    labels = label_bars(candles, NO_FUNDING, spec_for(), atr=np.ones(10), index=np.array([0]))
    assert labels.long.exit_reason[0] == RISK and labels.long.y[0] == -1
    assert labels.long.ret_net[0] == pytest.approx(-0.01, abs=1e-15)  # the stop at 99 filled on the way
    assert labels.long.mae[0] == pytest.approx(0.035, abs=1e-15)


def test_time_exit_at_the_close_of_the_horizon_bar_with_fees_and_slippage():
    candles = flat_candles(10)
    candles["close"][5] = candles["high"][5] = 100.5
    spec = spec_for(fee_rate=0.0004, slippage_k=0.15)
    labels = label_bars(candles, NO_FUNDING, spec, atr=np.ones(10), index=np.array([0]))
    s = 0.15 * 1.0 / 100.0
    entry, exit_ = 100 * (1 + s), 100.5 * (1 - s)
    expected = (exit_ - entry) / entry - 0.0004 * (entry + exit_) / entry
    assert labels.long.exit_reason[0] == TIME and labels.long.y[0] == 0
    assert labels.long.time_to_event_min[0] == 5
    assert labels.long.ret_net[0] == pytest.approx(expected, abs=1e-15)


def test_last_h_bars_are_incomplete_and_never_labelled():
    spec = spec_for(h_bars=5)
    labels = label_bars(flat_candles(20), NO_FUNDING, spec, atr=np.ones(20))
    assert (labels.status[-5:] == LabelStatus.INCOMPLETE_HORIZON).all()
    assert (labels.status[:-5] == LabelStatus.OK).all()
    for side in (labels.long, labels.short):
        assert np.isnan(side.ret_net[-5:]).all() and (side.exit_reason[-5:] == NONE).all()
        assert (side.time_to_event_min[-5:] == -1).all() and (side.y[-5:] == 0).all()


def test_a_missing_minute_invalidates_every_window_across_it():
    candles = flat_candles(30)
    candles["ts"][12:] += MINUTE_MS  # minute 12 is missing: the step 11 → 12 is 2 minutes
    labels = label_bars(candles, NO_FUNDING, spec_for(h_bars=5), atr=np.ones(30))
    gap = np.flatnonzero(labels.status == LabelStatus.GAP)
    np.testing.assert_array_equal(gap, np.arange(7, 12))  # windows i … i+5 containing the step 11 → 12
    candles["low"][8] = 50.0  # even an exit before the gap does not make the window valid
    assert label_bars(candles, NO_FUNDING, spec_for(h_bars=5), atr=np.ones(30)).status[7] == LabelStatus.GAP


def test_nan_price_marks_bad_price_and_atr_warmup_marks_atr_unavailable():
    candles = flat_candles(40)
    candles["open"][30] = np.nan
    atr = np.ones(40)
    atr[:3] = np.nan
    atr[10] = 0.0
    labels = label_bars(candles, NO_FUNDING, spec_for(h_bars=5), atr=atr)
    assert (labels.status[:3] == LabelStatus.ATR_UNAVAILABLE).all() and labels.status[10] == 2
    np.testing.assert_array_equal(np.flatnonzero(labels.status == LabelStatus.BAD_PRICE), np.arange(25, 31))


def test_15m_atr_warmup_then_labels_from_the_first_complete_atr():
    n = 15 * 20
    candles, funding = random_market(5, n)
    spec = LabelSpec(h_bars=10, atr_period=14)
    labels = label_bars(candles, funding, spec)
    first_ok = int(np.flatnonzero(labels.status == LabelStatus.OK)[0])
    # ATR of 15m bars 0 … 14 (15 bars: TA-Lib needs period + 1) is known at the close of minute 224
    assert first_ok == 15 * 15 - 1
    assert (labels.status[:first_ok] == LabelStatus.ATR_UNAVAILABLE).all()


def test_inputs_prepared_for_one_atr_source_refuse_a_spec_with_another():
    candles, funding = random_market(6, 400)
    inputs = prepare_label_inputs(candles, funding, LabelSpec(atr_timeframe="15m"))
    run_label_kernel(inputs, LabelSpec(atr_timeframe="15m", k_tp=2.0))  # barriers may differ
    with pytest.raises(ValueError, match="ATR"):
        run_label_kernel(inputs, LabelSpec(atr_timeframe="1h"))


def test_empty_and_tiny_series():
    spec = spec_for(h_bars=3)
    empty = label_bars(flat_candles(0), NO_FUNDING, spec, atr=np.ones(0))
    assert len(empty.status) == 0 and empty.long.y.shape == (0,)
    one = label_bars(flat_candles(1), NO_FUNDING, spec, atr=np.ones(1))
    assert one.status.tolist() == [LabelStatus.INCOMPLETE_HORIZON]


# --- mark-price barriers ---------------------------------------------------------------------------


def test_barriers_watch_the_mark_not_the_last_price():
    candles, mark = flat_candles(10), flat_candles(10)
    candles["low"][2] = 98.0  # last price goes through the long's SL 99 …
    mark["low"][2] = 99.5  # … the mark does not: no stop
    mark["high"][4] = 102.0  # the mark reaches the long's TP 102, the last price stays at 100
    labels = label_bars(candles, NO_FUNDING, spec_for(), atr=np.ones(10), index=np.array([0]), mark=mark)
    assert labels.long.exit_reason[0] == TP and labels.long.time_to_event_min[0] == 4
    assert labels.long.ret_net[0] == pytest.approx(0.02, abs=1e-15)  # filled at the TP level
    assert labels.long.mae[0] == pytest.approx(0.005, abs=1e-15)  # excursions on the barrier price
    assert labels.short.exit_reason[0] == SL and labels.short.time_to_event_min[0] == 4
    last = label_bars(candles, NO_FUNDING, spec_for(barrier_price="last"), atr=np.ones(10),
                      index=np.array([0]), mark=mark)  # fmt: skip
    assert last.long.exit_reason[0] == SL and last.long.time_to_event_min[0] == 2  # mark ignored


def test_a_gap_is_judged_on_the_mark_open_and_fills_at_the_worse_of_level_and_last_open():
    spec = spec_for()
    candles, mark = flat_candles(10), flat_candles(10)
    # bar 2: the mark opens through the long's SL 99 (gap), the last price opens at 98.5 → fill 98.5
    mark["open"][2], mark["low"][2] = 98.8, 98.8
    candles["open"][2], candles["low"][2] = 98.5, 98.5
    labels = label_bars(candles, NO_FUNDING, spec, atr=np.ones(10), index=np.array([0]), mark=mark)
    assert labels.long.exit_reason[0] == SL and labels.long.ret_net[0] == pytest.approx(-0.015, abs=1e-15)
    # the last price opens beyond the SL but the mark opens above it and trades down: no gap, fill at 99
    candles, mark = flat_candles(10), flat_candles(10)
    candles["open"][2], candles["low"][2] = 98.5, 98.5
    mark["low"][2] = 98.9
    labels = label_bars(candles, NO_FUNDING, spec, atr=np.ones(10), index=np.array([0]), mark=mark)
    assert labels.long.exit_reason[0] == SL and labels.long.ret_net[0] == pytest.approx(-0.01, abs=1e-15)
    # the mark opens beyond the TP 102 while the last price opens at 101.5: fill at the worse, 101.5
    candles, mark = flat_candles(10), flat_candles(10)
    mark["open"][3] = mark["high"][3] = 102.2
    candles["open"][3] = candles["high"][3] = 101.5
    labels = label_bars(candles, NO_FUNDING, spec, atr=np.ones(10), index=np.array([0]), mark=mark)
    assert labels.long.exit_reason[0] == TP and labels.long.ret_net[0] == pytest.approx(0.015, abs=1e-15)
    # short: the mark opened through its SL 101 → the worse of 101 and the last open 101.5
    assert labels.short.exit_reason[0] == SL and labels.short.ret_net[0] == pytest.approx(-0.015, abs=1e-15)


def test_bars_without_a_mark_candle_use_the_last_price_candle():
    candles, mark = flat_candles(20), flat_candles(20)
    candles["high"][3] = 102.0  # last price reaches the long's TP in bar 3 …
    candles["low"][13] = 98.0  # … and the long's SL in bar 13
    keep = np.ones(20, bool)
    keep[3] = False  # no mark candle in bar 3: the last-price bar stands in
    mark["close"][13] = np.nan  # a mark candle without a close counts as missing, as in the panel
    mark = {key: v[keep] for key, v in mark.items()}
    inputs = prepare_label_inputs(candles, NO_FUNDING, spec_for(), atr=np.ones(20), mark=mark)
    assert inputs.mark_bars == 18 and inputs.barrier_price == "mark"
    labels = run_label_kernel(inputs, spec_for(), np.array([0, 10]))
    assert labels.long.exit_reason.tolist() == [TP, SL]
    assert labels.long.time_to_event_min.tolist() == [3, 3]
    assert prepare_label_inputs(candles, NO_FUNDING, spec_for(), atr=np.ones(20)).mark_bars == 0


def test_tick_size_rounds_the_barriers_towards_the_entry_like_the_simulator():
    candles = flat_candles(10)
    candles["high"][2] = 101.9  # long TP 100 + 1.93 = 101.93 rounds down to 101.9: touched only so
    candles["low"][4] = 98.75  # long SL 100 − 1.29 = 98.71 rounds up to 98.8 (the long is gone by then)
    spec = spec_for(k_tp=1.93, k_sl=1.29, risk_mae_atr=3.0)
    rounded = label_bars(candles, NO_FUNDING, spec, atr=np.ones(10), index=np.array([0]), tick_size=0.1)
    plain = label_bars(candles, NO_FUNDING, spec, atr=np.ones(10), index=np.array([0]))
    assert rounded.long.exit_reason[0] == TP and rounded.long.time_to_event_min[0] == 2
    assert rounded.long.ret_net[0] == pytest.approx(0.019, abs=1e-12)
    assert plain.long.exit_reason[0] == TIME and plain.long.time_to_event_min[0] == 5
    # short SL 101.29 rounds down to 101.2: both stop in bar 2, at their own level
    assert rounded.short.exit_reason[0] == SL and rounded.short.ret_net[0] == pytest.approx(-0.012, abs=1e-12)
    assert plain.short.exit_reason[0] == SL and plain.short.ret_net[0] == pytest.approx(-0.0129, abs=1e-12)
    with pytest.raises(ValueError, match="tick_size"):
        label_bars(candles, NO_FUNDING, spec, atr=np.ones(10), tick_size=-0.1)


def test_inputs_prepared_for_one_barrier_price_refuse_a_spec_with_the_other():
    candles, funding = random_market(6, 400)
    mark = random_mark(6, candles)
    inputs = prepare_label_inputs(candles, funding, LabelSpec(), mark=mark)
    run_label_kernel(inputs, LabelSpec(k_tp=2.0))
    with pytest.raises(ValueError, match="barrier"):
        run_label_kernel(inputs, LabelSpec(barrier_price="last"))
    last = prepare_label_inputs(candles, funding, LabelSpec(barrier_price="last"), mark=mark)
    assert last.mark_bars == 0 and last.barrier_high is last.high  # the mark is ignored


def test_bad_mark_candles_are_rejected_with_a_clear_error():
    candles, mark = flat_candles(10), flat_candles(10)
    with pytest.raises(DataQualityError, match="mark candles: ts not strictly increasing"):
        label_bars(
            candles, NO_FUNDING, spec_for(), atr=np.ones(10), mark=dict(mark, ts=mark["ts"][::-1].copy())
        )
    with pytest.raises(DataQualityError, match="mark candles: ts off the 1m grid"):
        label_bars(candles, NO_FUNDING, spec_for(), atr=np.ones(10), mark=dict(mark, ts=mark["ts"] + 5))
    with pytest.raises(DataQualityError, match="mark candles: missing"):
        label_bars(
            candles,
            NO_FUNDING,
            spec_for(),
            atr=np.ones(10),
            mark={k: v for k, v in mark.items() if k != "high"},
        )
    mark["low"][3] = -1.0  # a non-positive mark price makes every window over it BAD_PRICE
    labels = label_bars(candles, NO_FUNDING, spec_for(h_bars=2), atr=np.ones(10), mark=mark)
    np.testing.assert_array_equal(np.flatnonzero(labels.status == LabelStatus.BAD_PRICE), [1, 2, 3])


# --- funding -------------------------------------------------------------------------------------


def test_funding_accounting_with_8h_then_4h_funding_times():
    # 28 h of flat prices; the symbol funds every 8 h, then every 4 h (Binance switches symbols so).
    n = 28 * 60
    candles = flat_candles(n)
    funding = {
        "ts": START + np.array([0, 8, 12, 16, 20, 24], dtype=np.int64) * HOUR_MS,
        "funding_rate": np.array([0.0003, 0.0001, 0.00025, -0.0002, 0.0005, 0.00015]),
    }
    spec = LabelSpec(k_tp=50, k_sl=50, risk_mae_atr=60, h_bars=16 * 60, fee_rate=0.0004, slippage_k=0.1)
    labels = label_bars(candles, funding, spec, atr=np.full(n, 0.5), index=np.array([0, 478, 479, 480, 719]))
    s = 0.1 * 0.5 / 100.0
    funding_crossed = [
        0.0001 + 0.00025 - 0.0002,  # bar 0: entry 00:01, exit 16:01 → 08, 12, 16 h (not 00 h)
        0.0001 + 0.00025 - 0.0002 + 0.0005,  # bar 478: 07:59 → 23:59 → 08, 12, 16, 20 h
        0.00025 - 0.0002 + 0.0005 + 0.00015,  # bar 479: entry at 08:00 exactly (not paid) → 24:00 (paid)
        0.00025 - 0.0002 + 0.0005 + 0.00015,  # bar 480: 08:01 → 24:01
        -0.0002 + 0.0005 + 0.00015,  # bar 719: entry at 12:00 exactly → 28:00
    ]
    for side, d in ((labels.long, 1), (labels.short, -1)):
        entry, exit_ = 100 * (1 + d * s), 100 * (1 - d * s)
        costs = d * (exit_ - entry) / entry - 0.0004 * (entry + exit_) / entry
        assert (side.exit_reason == TIME).all() and (side.time_to_event_min == 960).all()
        np.testing.assert_allclose(side.ret_net, [costs - d * f for f in funding_crossed], rtol=0, atol=1e-12)


def test_funding_stops_at_the_close_of_the_exit_bar():
    n = 600
    candles = flat_candles(n)
    candles["high"][120] = 103.0  # TP of bar 0 touched in bar 120 [02:00, 02:01)
    funding = {
        "ts": START + np.array([120, 121, 122], dtype=np.int64) * MINUTE_MS,
        "funding_rate": np.array([1e-4, 2e-4, 4e-4]),
    }
    spec = spec_for(h_bars=300)
    labels = label_bars(candles, funding, spec, atr=np.ones(n), index=np.array([0]))
    assert labels.long.exit_reason[0] == TP and labels.long.time_to_event_min[0] == 120
    # held to the close of bar 120 (02:01): pays 02:00 and 02:01, not 02:02
    assert labels.long.ret_net[0] == pytest.approx(0.02 - 3e-4, abs=1e-12)


def test_cumulative_funding_counts_rates_up_to_each_bar_close():
    ts = START + np.arange(5, dtype=np.int64) * MINUTE_MS
    cum = cumulative_funding(ts, START + np.array([1, 3], dtype=np.int64) * MINUTE_MS, np.array([0.1, 0.2]))
    np.testing.assert_allclose(cum, [0.1, 0.1, 0.3, 0.3, 0.3])
    with pytest.raises(DataQualityError):
        cumulative_funding(ts, np.array([START + MINUTE_MS, START]), np.array([0.1, 0.2]))
    with pytest.raises(DataQualityError):
        cumulative_funding(ts, np.array([START]), np.array([np.nan]))


# --- invariants ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), spec=spec_strategy)
def test_label_invariants(seed, spec):
    candles, funding = random_market(seed, 600, jump_share=0.05)
    atr = random_atr(seed, candles["close"], 10)
    labels = label_bars(candles, funding, spec, atr=atr)
    ok = labels.valid
    for side in (labels.long, labels.short):
        assert set(np.unique(side.y[ok])) <= {-1, 0, 1}
        assert ((side.time_to_event_min[ok] >= 1) & (side.time_to_event_min[ok] <= spec.h_bars)).all()
        assert ((side.y[ok] == 0) == (side.exit_reason[ok] == TIME)).all()
        assert ((side.y[ok] == 1) == (side.exit_reason[ok] == TP)).all()
        assert (side.mae[ok] >= 0).all() and (side.mfe[ok] >= 0).all()
        # RISK ⇔ the adverse excursion reached risk_mae_atr·ATR, on stop exits (away from rounding ties)
        stop = ok & np.isin(side.exit_reason, [SL, RISK])
        i = labels.index[stop]
        d = 1 if side is labels.long else -1
        entry = candles["open"][i + 1] * (1 + d * spec.slippage_k * atr[i] / candles["close"][i])
        excursion, limit = side.mae[stop] * entry, spec.risk_mae_atr * atr[i]
        clear = np.abs(excursion - limit) > 1e-9 * entry
        np.testing.assert_array_equal((side.exit_reason[stop] == RISK)[clear], (excursion >= limit)[clear])


def test_label_depends_only_on_bars_up_to_its_horizon():
    candles, funding = random_market(9, 800, jump_share=0.02)
    spec = LabelSpec(k_tp=2, k_sl=1.5, h_bars=60)
    atr = random_atr(9, candles["close"], 5)
    full = label_bars(candles, funding, spec, atr=atr)
    for i in (0, 100, 377, 738):
        cut = {k: v[: i + spec.h_bars + 1] for k, v in candles.items()}
        part = label_bars(cut, funding, spec, atr=atr[: len(cut["ts"])], index=np.array([i]))
        for name, col in part.columns().items():
            np.testing.assert_array_equal(col, full.columns()[name][[i]], err_msg=name)


def test_labelling_an_index_equals_labelling_everything_at_those_bars():
    candles, funding = random_market(4, 700, gap_share=0.01)
    spec = LabelSpec(h_bars=45, k_tp=1.2, k_sl=0.9)
    atr = random_atr(4, candles["close"], 10)
    full = label_bars(candles, funding, spec, atr=atr)
    index = np.array([699, 3, 3, 250, 0])  # any order, repeats allowed
    part = label_bars(candles, funding, spec, atr=atr, index=index)
    for name, col in part.columns().items():
        np.testing.assert_array_equal(col, full.columns()[name][index], err_msg=name)


# --- input checks ------------------------------------------------------------------------------


def test_bad_inputs_are_rejected_with_a_clear_error():
    candles = flat_candles(10)
    spec = spec_for()
    unsorted = dict(candles, ts=candles["ts"][::-1].copy())
    with pytest.raises(DataQualityError, match="strictly increasing"):
        label_bars(unsorted, NO_FUNDING, spec, atr=np.ones(10))
    with pytest.raises(DataQualityError, match="off the 1m grid"):
        label_bars(dict(candles, ts=candles["ts"] + 1), NO_FUNDING, spec, atr=np.ones(10))
    with pytest.raises(DataQualityError, match="missing"):
        label_bars({k: v for k, v in candles.items() if k != "low"}, NO_FUNDING, spec, atr=np.ones(10))
    with pytest.raises(DataQualityError, match="atr"):
        label_bars(candles, NO_FUNDING, spec, atr=np.ones(9))
    with pytest.raises(DataQualityError, match="funding"):
        label_bars(candles, {"ts": np.zeros(0, np.int64)}, spec, atr=np.ones(10))
    with pytest.raises(ValueError, match="index"):
        label_bars(candles, NO_FUNDING, spec, atr=np.ones(10), index=np.array([10]))


# --- ATR source --------------------------------------------------------------------------------


def test_label_atr_uses_only_closed_15m_bars_and_drops_stale_values_after_a_gap():
    candles, _ = random_market(11, 15 * 40)
    ts, h, lo, c = (candles[k] for k in ("ts", "high", "low", "close"))
    atr = label_atr(ts, h, lo, c, "15m", 5)
    for t in (15 * 6 - 1, 15 * 6, 15 * 20 + 7, len(ts) - 1):
        cut = label_atr(ts[: t + 1], h[: t + 1], lo[: t + 1], c[: t + 1], "15m", 5)
        assert cut[t] == atr[t] or (np.isnan(cut[t]) and np.isnan(atr[t]))
    assert np.isnan(atr[15 * 6 - 2]) and np.isfinite(atr[15 * 6 - 1])  # 6 bars (period + 1) closed at 89
    assert atr[15 * 7 - 2] == atr[15 * 6 - 1] != atr[15 * 7 - 1]  # constant until the next 15m close
    # without minute 15·10 + 3, 15m bar 10 is incomplete: while it would be the latest closed 15m bar,
    # the ATR of 15m bar 9 is stale and not used
    keep = np.ones(len(ts), bool)
    keep[15 * 10 + 3] = False
    gapped = label_atr(ts[keep], h[keep], lo[keep], c[keep], "15m", 5)
    at = {int(t): v for t, v in zip(ts[keep], gapped, strict=True)}
    assert np.isfinite(at[int(ts[15 * 11 - 2])])  # latest closed bar is 9: fresh until bar 10 closes
    assert np.isnan(at[int(ts[15 * 11 - 1])])  # bar 10 would have closed: bar 9's ATR is stale
    assert np.isfinite(at[int(ts[15 * 12 - 1])])  # bar 11 closed


def test_label_atr_1m_is_wilder_on_1m_bars():
    from core.ta import atr_wilder

    candles, _ = random_market(12, 100)
    atr = label_atr(candles["ts"], candles["high"], candles["low"], candles["close"], "1m", 14)
    np.testing.assert_array_equal(atr, atr_wilder(candles["high"], candles["low"], candles["close"], 14))


# --- event sampling ----------------------------------------------------------------------------


def _cusum_reference(close, h):
    r = np.diff(np.log(close))
    events, up, down = [], 0.0, 0.0
    for t, x in enumerate(r, start=1):
        up, down = max(0.0, up + x), min(0.0, down + x)
        if down < -h:
            down = 0.0
            events.append(t)
        elif up > h:
            up = 0.0
            events.append(t)
    return events


def test_cusum_events_match_the_afml_filter_and_are_causal():
    close = random_market(21, 3000)[0]["close"]
    events = cusum_events(close, 0.004)
    assert events.tolist() == _cusum_reference(close, 0.004) and len(events) > 50
    assert cusum_events(close[:1700], 0.004).tolist() == [e for e in events.tolist() if e < 1700]
    assert cusum_events(np.array([100.0, 101.0, 100.0, 100.5]), 0.005).tolist() == [1, 2]


def test_cusum_events_with_a_volatility_scaled_threshold():
    close = random_market(22, 3000)[0]["close"]
    r = np.diff(np.log(close))
    alpha, var = 2 / 101, r[0] * r[0]
    h = [math.nan, math.nan]  # threshold of bar t: 3 × EWM sd of the returns of bars 1 … t − 1
    for t in range(2, len(close)):
        x = r[t - 2]
        var = x * x if t == 2 else (1 - alpha) * var + alpha * (x * x)
        h.append(3.0 * math.sqrt(var) if t - 1 >= 100 else math.nan)
    expected, up, down = [], 0.0, 0.0
    for t in range(1, len(close)):
        if not math.isfinite(h[t]):
            continue
        up, down = max(0.0, up + r[t - 1]), min(0.0, down + r[t - 1])
        if down < -h[t]:
            down = 0.0
            expected.append(t)
        elif up > h[t]:
            up = 0.0
            expected.append(t)
    events = cusum_events(close, 3.0, vol_span=100)
    assert events.tolist() == expected and 20 < len(events) < len(close) // 5
    assert cusum_events(close[:2000], 3.0, vol_span=100).tolist() == [e for e in expected if e < 2000]


def test_spike_events_match_a_rolling_reference_and_are_causal():
    rng = np.random.default_rng(5)
    x = rng.lognormal(10, 0.5, 5000)
    x[rng.random(5000) < 0.01] *= 8
    x[1234] = np.nan
    events = spike_events(x, 3.0, window=60)
    s = pd.Series(x)
    prior = s.shift(1).rolling(60)
    fire = (s > prior.mean() + 3.0 * prior.std()) & prior.count().eq(60) & s.notna()
    assert events.tolist() == np.flatnonzero(fire.to_numpy()).tolist() and len(events) > 20
    assert spike_events(x[:3000], 3.0, 60).tolist() == [e for e in events.tolist() if e < 3000]


# --- costs and the spec hash -------------------------------------------------------------------


def test_cost_functions_are_the_documented_formulas():
    s = slippage_fraction(0.15, 2.0, 100.0)
    assert s == pytest.approx(0.003)
    assert entry_fill_price(100.0, 1, s) == pytest.approx(100.3)
    assert entry_fill_price(100.0, -1, s) == pytest.approx(99.7)
    assert exit_fill_price(100.0, 1, s) == pytest.approx(99.7)
    assert net_return(1, 100.0, 101.0, 0.0004, 0.0001) == pytest.approx(0.01 - 0.0004 * 2.01 - 0.0001)
    assert net_return(-1, 100.0, 101.0, 0.0, -0.0001) == pytest.approx(-0.01 - 0.0001)


def test_spec_hash_is_stable_and_sensitive_to_every_field():
    spec = LabelSpec()
    # barrier_price (mark since issue 12) changed the default hash: last-price labels are not reused
    assert spec.spec_hash() == LabelSpec().spec_hash() == "21b3764db0cdf63c"
    assert LabelSpec(k_sl=1.0, k_tp=1.5).spec_hash() == spec.spec_hash()  # field order does not matter
    changed = {
        "k_tp": 1.6, "k_sl": 0.9, "h_bars": 361, "risk_mae_atr": 3.1, "fee_rate": 0.0005,
        "slippage_k": 0.2, "atr_timeframe": "1h", "atr_period": 15, "barrier_price": "last",
    }  # fmt: skip
    assert set(changed) == set(LabelSpec.model_fields)
    hashes = {LabelSpec.model_validate({name: value}).spec_hash() for name, value in changed.items()}
    assert len(hashes) == len(changed) and spec.spec_hash() not in hashes
    assert label_bars(flat_candles(3), NO_FUNDING, spec, atr=np.ones(3)).spec_hash == spec.spec_hash()
