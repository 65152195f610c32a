"""The Q05 gate against the label preset: a calibrated model of a market with an edge can enter at the
default presets; a tail heavier than the stop and the costs explain is blocked; presets that contradict
each other are refused.

The "calibrated model" is exact by construction: its predictions are the mean, 5% quantile, mean MAE and
mean hold of the triple-barrier outcomes (the labels' rules, ``core.labels``: barriers from the entry
fill, exit at the barrier or past it on a gap, slippage on both fills, taker fees) of many simulated
paths of a known market.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.config import LabelSpec, PolicyConfig, policy_label_conflicts
from core.costs import entry_fill_price, exit_fill_price, net_return, slippage_fraction
from core.errors import ConfigError
from core.policy import Action, BlockReason, PolicyState, cost_estimate, decide, decide_arrays
from raytrade.settings import load_settings

SPEC = LabelSpec()
CFG = PolicyConfig()
PRICE = 100.0


def _paths(
    atr_frac: float, drift_atr_per_h: float, jump_p: float, jump_atr: tuple[float, float], n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """``n`` paths of ``h_bars`` 1m closes from PRICE: Gaussian steps (σ = ATR/6 per minute, about a
    15m ATR of ``atr_frac``·price) with a drift, plus down-jumps of ``jump_atr`` ATRs with probability
    ``jump_p`` per minute. Returns (closes, jumped, ATR)."""
    rng = np.random.default_rng(seed)
    atr = atr_frac * PRICE
    steps = rng.normal(drift_atr_per_h * atr / 60.0, atr / 6.0, (n, SPEC.h_bars))
    jumped = rng.random((n, SPEC.h_bars)) < jump_p
    steps -= np.where(jumped, rng.uniform(jump_atr[0], jump_atr[1], (n, SPEC.h_bars)) * atr, 0.0)
    return PRICE + np.cumsum(steps, axis=1), jumped, atr


def _outcomes(closes: np.ndarray, jumped: np.ndarray, atr: float, d: int) -> dict[str, np.ndarray]:
    """Triple-barrier outcomes of direction ``d`` entered at PRICE: the labels' rules on close paths
    (a step that jumps through the stop fills at the price after the jump: a gap)."""
    s = slippage_fraction(SPEC.slippage_k, atr, PRICE)
    entry = entry_fill_price(PRICE, d, s)
    tp, sl = entry + d * SPEC.k_tp * atr, entry - d * SPEC.k_sl * atr
    adverse, favourable = (closes - sl) * d <= 0.0, (closes - tp) * d >= 0.0
    touched = adverse | favourable
    last = closes.shape[1] - 1
    exit_bar = np.where(touched.any(axis=1), touched.argmax(axis=1), last)
    row = np.arange(len(closes))
    at_exit = closes[row, exit_bar]
    stopped = adverse[row, exit_bar]
    took_profit = favourable[row, exit_bar] & ~stopped
    gap_fill = np.minimum(at_exit, sl) if d > 0 else np.maximum(at_exit, sl)
    ref = np.where(stopped, np.where(jumped[row, exit_bar], gap_fill, sl), np.where(took_profit, tp, at_exit))
    ret = np.array([net_return(d, entry, exit_fill_price(r, d, s), SPEC.fee_rate, 0.0) for r in ref])
    worst = np.minimum.accumulate(closes, axis=1) if d > 0 else np.maximum.accumulate(closes, axis=1)
    mae = np.maximum(0.0, d * (entry - worst[row, exit_bar]) / entry)
    return {"ret": ret, "mae": mae, "hold": exit_bar + 1.0, "stopped": stopped}


def _calibrated(
    atr_frac: float, drift: float, jump_p: float, jump_atr: tuple[float, float], n: int = 4000, seed: int = 7
) -> tuple[dict[str, float], float, float]:
    """Exact predictions of the market (mean, 5% quantile, mean MAE, mean hold per side), the long
    side's stop-loss probability, and the ATR."""
    closes, jumped, atr = _paths(atr_frac, drift, jump_p, jump_atr, n, seed)
    preds: dict[str, float] = {}
    p_stop = math.nan
    for d, side in ((1, "long"), (-1, "short")):
        o = _outcomes(closes, jumped, atr, d)
        preds[f"er_{side}"] = float(o["ret"].mean())
        preds[f"q05_{side}"] = float(np.quantile(o["ret"], 0.05))
        preds[f"e_mae_{side}"] = float(o["mae"].mean())
        preds[f"e_hold_{side}"] = float(o["hold"].mean())
        if d == 1:
            p_stop = float(o["stopped"].mean())
    return preds, p_stop, atr


def _state(atr: float) -> PolicyState:
    return PolicyState(price=PRICE, atr=atr, btc_regime=1.0, equity=10_000.0)


@pytest.mark.parametrize("atr_frac", [0.003, 0.01, 0.03])
def test_calibrated_model_of_a_market_with_an_edge_enters_at_the_default_preset(atr_frac):
    # Drift 0.8 ATR/h and rare small gaps: about a third of the longs stop out, the mean is positive.
    preds, p_stop, atr = _calibrated(atr_frac, drift=0.8, jump_p=0.0005, jump_atr=(0.0, 0.4))
    assert p_stop >= 0.2 and preds["er_long"] > 0.0
    # The point of the test: this q05 lies below spec §21's old floor of −0.8 ATR, which blocked it.
    assert preds["q05_long"] < -0.8 * atr_frac
    d = decide("X", preds, _state(atr), CFG, SPEC)
    assert d.action is Action.LONG, d.block_reasons
    assert d.reasons == BlockReason(0)


@pytest.mark.parametrize("atr_frac", [0.003, 0.01, 0.03])
def test_calibrated_model_of_a_crash_prone_market_is_blocked_by_q05_alone(atr_frac):
    # Same kind of market with a larger edge but 1.5–3 ATR gaps: its 5% tail lies well past the stop.
    preds, p_stop, atr = _calibrated(atr_frac, drift=1.5, jump_p=0.002, jump_atr=(1.5, 3.0))
    assert p_stop >= 0.05 and preds["er_long"] > 0.0
    d = decide("X", preds, _state(atr), CFG, SPEC)
    assert d.action is Action.FLAT and d.candidate is Action.LONG
    assert d.reasons == BlockReason.Q05_BELOW_MIN


def test_tail_past_the_stop_allowance_is_blocked_and_within_it_enters():
    preds, _, atr = _calibrated(0.01, drift=0.8, jump_p=0.0005, jump_atr=(0.0, 0.4))
    cost = decide("X", preds, _state(atr), CFG, SPEC).cost_long
    a = atr / PRICE
    allowance = -CFG.q05_min_atr - SPEC.k_sl  # 0.5 ATR past the stop
    past = {**preds, "q05_long": -(SPEC.k_sl + allowance + 0.1) * a - cost}
    within = {**preds, "q05_long": -(SPEC.k_sl + allowance - 0.1) * a - cost}
    assert decide("X", past, _state(atr), CFG, SPEC).reasons == BlockReason.Q05_BELOW_MIN
    assert decide("X", within, _state(atr), CFG, SPEC).action is Action.LONG


@settings(max_examples=200, deadline=None)
@given(
    atr_frac=st.floats(1e-4, 0.05),
    k_sl=st.floats(0.3, 3.0),
    slippage_k=st.floats(0.0, 1.0),
    fee_rate=st.floats(0.0, 0.002),
    d=st.sampled_from([1, -1]),
)
def test_a_clean_stop_out_returns_at_least_minus_k_sl_atr_minus_the_cost_estimate(
    atr_frac, k_sl, slippage_k, fee_rate, d
):
    # The derivation of the floor: a clean stop-out returns −k_sl·ATR/price − cost_est to first order in
    # the slippage s, under the simulator's rule (stop from the decision price) and the labels' (from the
    # fill); only a short loses a little more, of second order: its stop fill is the larger notional
    # (≈ 4e-5 at the presets with ATR = 1% of price).
    atr = atr_frac * PRICE
    s = slippage_fraction(slippage_k, atr, PRICE)
    cost = cost_estimate(d, PRICE, atr, 0.0, 60.0, math.nan, 480.0, fee_rate, slippage_k)
    floor = -k_sl * atr_frac - cost
    entry = entry_fill_price(PRICE, d, s)
    for stop in (PRICE - d * k_sl * atr, entry - d * k_sl * atr):
        ret = net_return(d, entry, exit_fill_price(stop, d, s), fee_rate, 0.0)
        second_order = 0.0
        if d < 0:
            second_order = (
                (k_sl * atr_frac + fee_rate) * 2.0 * s + fee_rate * k_sl * atr_frac * (1.0 + s)
            ) / (1.0 - s)
        assert ret >= floor - second_order - 1e-12


def test_default_presets_are_consistent():
    assert policy_label_conflicts(PolicyConfig(), LabelSpec()) == []
    assert CFG.q05_min_atr == -1.5 and CFG.q05_min_atr < -SPEC.k_sl


def test_q05_floor_above_the_stop_is_refused():
    strict = PolicyConfig(q05_min_atr=-0.8)
    (problem,) = policy_label_conflicts(strict, SPEC)
    assert "q05_min_atr (-0.8)" in problem and "k_sl" in problem and "never enter" in problem
    assert policy_label_conflicts(strict, LabelSpec(k_sl=0.5)) == []
    assert policy_label_conflicts(PolicyConfig(q05_min_atr=-1.0), SPEC) == []  # exactly the stop: allowed
    preds, _, atr = _calibrated(0.01, drift=0.8, jump_p=0.0005, jump_atr=(0.0, 0.4), n=500)
    with pytest.raises(ConfigError, match="q05_min_atr"):
        decide("X", preds, _state(atr), strict, SPEC)
    with pytest.raises(ConfigError, match="q05_min_atr"):
        decide_arrays({k: np.array([v]) for k, v in preds.items()}, PRICE, atr, 1.0, strict, SPEC)


def test_settings_refuse_a_q05_floor_above_the_stop(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("RAYTRADE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("RAYTRADE_POLICY__Q05_MIN_ATR", "-0.8")
    with pytest.raises((ValidationError, ConfigError), match="q05_min_atr"):
        load_settings()
    monkeypatch.setenv("RAYTRADE_LABEL__K_SL", "0.7")
    assert load_settings().policy.q05_min_atr == -0.8
