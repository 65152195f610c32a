"""Decision policy (spec 001 §12–13, seed 000 §2): model outputs → LONG / SHORT / FLAT with size,
leverage, SL/TP and a reason code for every block.

One numba function, ``decide_bar``, decides one symbol-bar; ``decide`` (realtime, one symbol) and
``decide_arrays`` (backtest, any array shape such as n bars × n symbols) both call it, and the
backtest kernel may call it from its own numba loop with ``policy_params``.

Inputs per side d ∈ {long +1, short −1}: ``er`` (expected net return, fraction of entry notional),
``q05`` (5% quantile of that return, fraction, usually negative), ``e_mae`` (expected maximum
adverse excursion, fraction ≥ 0), ``e_hold`` (expected holding time, minutes); and the market:
decision price (the close of the decision bar), ATR (the 15m ATR available at that close, USDT),
funding rate in force and minutes to the next funding time, BTC regime (``f_15m_btc_regime``: 0
calm, 1 normal, 2 high volatility), equity (USDT).

EV and its parts, per side:

- ``cost_est = 2·fee_rate + 2·s/(1 + d·s) + d·funding_rate·n_funding`` with
  ``s = core.costs.slippage_fraction(slippage_k, ATR, price)``: taker fees on both fills (exit
  notional taken equal to entry notional), slippage of both fills (exact for an exit at the entry
  reference price), and funding. ``n_funding`` counts the funding times inside the expected hold
  ``(now, now + e_hold]`` the way the labels count them: 0 if ``e_hold`` < minutes to the next
  funding, else ``1 + floor((e_hold − minutes_to_funding) / funding_interval_min)``; when the next
  funding time is unknown (NaN) it is pro-rata, ``e_hold / funding_interval_min``. An unknown
  funding rate (NaN, before the first settlement) counts as 0. A long pays positive rates.
- Double counting. The model's ``er`` is trained on the labels' ``ret_net``
  (``core.labels``), which already subtracts taker fees on both fills, slippage of both fills with
  the same ``slippage_fraction`` and the funding actually crossed. So by default
  (``er_is_net=True``) ``EV = er − risk_penalty``: ``cost_est`` is computed and reported (explain,
  dashboard "why"), not subtracted again. A model of gross returns passes ``er_is_net=False`` and
  gets ``EV = er − cost_est − risk_penalty``.
- ``risk_penalty = tail_weight·max(0, −q05) + mae_weight·max(0, e_mae)`` (``RiskPenaltyConfig``):
  the soft half of spec §12.2's "hard/soft mix"; the hard half is the Q05 and MAE gates. With the
  default weights 0.05 an entry must earn 5% of its 5%-tail loss plus 5% of its expected adverse
  excursion on top of costs.

Decision (spec §13.1). The best side is the one with the higher EV (long on a tie, flagged
``AMBIGUOUS_SIDE``); every gate is evaluated on it and every failing gate sets its bit:
``EV_best > ev_min`` and ``EV_best > 0`` (argmax against flat),
``q05_best > q05_min_atr·ATR/price − cost_est_best`` (the Q05 gate, below), ``e_mae_best < mae_max_atr·ATR/price``, the BTC regime filter (``btc_high_vol_action``: "block"
blocks, "size_down" multiplies the size by ``high_vol_size_mult``, "none" ignores it; an unknown
regime — NaN, e.g. during the feature warm-up — is treated as high volatility: safety first), and
the book: ``open_positions < max_positions`` and no position already open in the symbol. Inputs
that cannot be judged (NaN or non-numeric prediction, non-positive or NaN price, ATR or equity)
give FLAT with their own bit and skip the gates. Nothing raises on bad values.

The Q05 gate blocks a downside tail heavier than the stop and the costs explain (spec §13.1, "block
when the downside tail is too heavy"). A trade that hits its stop, filled at the stop with the fill
model's slippage, returns ``−k_sl·ATR/price − cost_est`` to first order in ``s``: the simulator sets the
stop ``k_sl·ATR`` from the decision price and pays ``s`` on the entry and on the stop fill (the labels
measure the stop from the entry fill, one ``s`` less); fees and funding are in ``cost_est`` as well
(a long does at least that well; a short, whose stop fill is the larger notional, loses a further
amount of second order, ``≈ k_sl·(ATR/price)·(2s + fee_rate)``: 4e-5 at the presets with ATR = 1%).
So for any trade whose stop-loss probability is 5% or more, a calibrated q05 is at most that return:
a floor of ``q05_min_atr·ATR/price`` alone, with ``q05_min_atr > −k_sl`` (spec §21's −0.8 against
``k_sl = 1.0``), blocks nearly every bar, and the fees, which are not proportional to ATR, made it open
only when ATR/price jumped. The floor is therefore ``q05_min_atr·ATR/price − cost_est``, and
``q05_min_atr`` (ATR multiples, costs set aside) counts from the decision price past the stop:
``−k_sl`` admits exactly a clean stop-out, and the default ``−1.5 = −(k_sl + 0.5)`` leaves half an ATR
for what the stop does not bound — a gap through the stop (the simulator and the labels fill at a bar
open beyond it), the impact part of the simulator's slippage, funding, and the noise of a quantile
model. A 5% tail beyond that means more than one trade in 20 is expected to lose half an ATR past its
stop: a gap- or crash-prone market, the RISK barrier's territory (``risk_mae_atr``, 3 ATR), and the
gate blocks it. A ``q05_min_atr`` above ``−k_sl`` is refused (``core.config.policy_label_conflicts``,
checked by ``policy_params`` and by the settings); a very negative one turns the gate off.

Entry: ``size_notional = position_notional_pct · equity · regime multiplier``, leverage
``PolicyConfig.leverage`` (≤ ``max_leverage`` by validation), ``SL = price − d·k_sl·ATR``,
``TP = price + d·k_tp·ATR`` (``LabelSpec.k_sl`` / ``k_tp``; seed 000 §2). A long whose stop would be
≤ 0 is blocked (``STOP_INVALID``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import lru_cache
from typing import Any

import numba as nb
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.config import LabelSpec, PolicyConfig, policy_label_conflicts
from core.costs import slippage_fraction
from core.errors import ConfigError
from core.signals import BarSignals

#: Prediction keys the policy reads (model targets, spec §12.1).
PREDICTION_KEYS: tuple[str, ...] = (
    "er_long", "er_short", "q05_long", "q05_short",
    "e_mae_long", "e_mae_short", "e_hold_long", "e_hold_short",
)  # fmt: skip

DEFAULT_FUNDING_INTERVAL_MIN = 480.0


class Action(IntEnum):
    """Direction of a decision."""

    SHORT = -1
    FLAT = 0
    LONG = 1


# Reason bits, as plain ints for numba; BlockReason mirrors them.
_NAN_PREDICTION = 1 << 0
_BAD_PRICE = 1 << 1
_NO_ATR = 1 << 2
_BAD_EQUITY = 1 << 3
_EV_NOT_POSITIVE = 1 << 4
_EV_BELOW_MIN = 1 << 5
_AMBIGUOUS_SIDE = 1 << 6
_Q05_BELOW_MIN = 1 << 7
_MAE_ABOVE_MAX = 1 << 8
_BTC_HIGH_VOL_BLOCK = 1 << 9
_BTC_REGIME_UNKNOWN_BLOCK = 1 << 10
_MAX_POSITIONS_REACHED = 1 << 11
_SYMBOL_POSITION_OPEN = 1 << 12
_STOP_INVALID = 1 << 13
_INPUT_INVALID = _NAN_PREDICTION | _BAD_PRICE | _NO_ATR | _BAD_EQUITY


class BlockReason(IntFlag):
    """Why the policy did not enter; a decision carries every reason that applies (a bit mask)."""

    NAN_PREDICTION = _NAN_PREDICTION  # a prediction is NaN, infinite, missing or not a number
    BAD_PRICE = _BAD_PRICE  # decision price NaN or ≤ 0
    NO_ATR = _NO_ATR  # ATR(15m) NaN (warm-up, stale) or ≤ 0: no stop can be set
    BAD_EQUITY = _BAD_EQUITY  # equity NaN or ≤ 0
    EV_NOT_POSITIVE = _EV_NOT_POSITIVE  # best EV ≤ 0: flat wins the argmax
    EV_BELOW_MIN = _EV_BELOW_MIN  # best EV ≤ ev_min
    AMBIGUOUS_SIDE = _AMBIGUOUS_SIDE  # EV long == EV short: no direction
    Q05_BELOW_MIN = _Q05_BELOW_MIN  # q05 ≤ q05_min_atr·ATR/price − cost_est: tail heavier than the stop
    MAE_ABOVE_MAX = _MAE_ABOVE_MAX  # e_mae ≥ mae_max_atr·ATR/price
    BTC_HIGH_VOL_BLOCK = _BTC_HIGH_VOL_BLOCK  # BTC regime 2 and btc_high_vol_action = "block"
    BTC_REGIME_UNKNOWN_BLOCK = _BTC_REGIME_UNKNOWN_BLOCK  # regime unknown, treated as high-vol, "block"
    MAX_POSITIONS_REACHED = _MAX_POSITIONS_REACHED  # open_positions ≥ max_positions
    SYMBOL_POSITION_OPEN = _SYMBOL_POSITION_OPEN  # the symbol already has an open position
    STOP_INVALID = _STOP_INVALID  # the stop price would be ≤ 0


def reason_names(mask: int) -> tuple[str, ...]:
    """Return the names of the reason bits set in ``mask``, in bit order."""
    return tuple(r.name for r in BlockReason if int(mask) & r.value and r.name is not None)


class RiskPenaltyConfig(BaseModel):
    """Soft risk penalty of the EV (spec §12.2): ``tail_weight·max(0, −q05) + mae_weight·e_mae``.

    Kept here rather than in PolicyConfig, which must not change in this issue; both fields belong
    there (as ``risk_tail_weight`` / ``risk_mae_weight``) when it next does.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tail_weight: float = Field(
        0.05, ge=0, le=10, description="weight of the 5%-quantile loss (dimensionless)"
    )
    mae_weight: float = Field(0.05, ge=0, le=10, description="weight of the expected MAE (dimensionless)")


_ACTION_CODE = {"none": 0, "size_down": 1, "block": 2}

# Layout of the parameter vector of decide_bar.
P_EV_MIN, P_Q05_MIN_ATR, P_MAE_MAX_ATR, P_MAX_POSITIONS, P_LEVERAGE, P_SIZE_PCT = 0, 1, 2, 3, 4, 5
P_HIGH_VOL_ACTION, P_HIGH_VOL_MULT, P_K_SL, P_K_TP, P_FEE_RATE, P_SLIPPAGE_K = 6, 7, 8, 9, 10, 11
P_TAIL_WEIGHT, P_MAE_WEIGHT, P_ER_IS_NET = 12, 13, 14
N_PARAMS = 15


@lru_cache(maxsize=64)
def policy_params(
    cfg: PolicyConfig,
    label_spec: LabelSpec,
    penalty: RiskPenaltyConfig | None = None,
    er_is_net: bool = True,
) -> np.ndarray:
    """Return the read-only float64 parameter vector of ``decide_bar`` (layout ``P_*``).

    Raises ConfigError when ``cfg`` contradicts ``label_spec`` (``core.config.policy_label_conflicts``).
    """
    conflicts = policy_label_conflicts(cfg, label_spec)
    if conflicts:
        raise ConfigError("; ".join(conflicts))
    pen = penalty if penalty is not None else RiskPenaltyConfig()
    p = np.empty(N_PARAMS)
    p[P_EV_MIN] = cfg.ev_min
    p[P_Q05_MIN_ATR] = cfg.q05_min_atr
    p[P_MAE_MAX_ATR] = cfg.mae_max_atr
    p[P_MAX_POSITIONS] = cfg.max_positions
    p[P_LEVERAGE] = min(cfg.leverage, cfg.max_leverage)
    p[P_SIZE_PCT] = cfg.position_notional_pct
    p[P_HIGH_VOL_ACTION] = _ACTION_CODE[cfg.btc_high_vol_action]
    p[P_HIGH_VOL_MULT] = cfg.high_vol_size_mult
    p[P_K_SL] = label_spec.k_sl
    p[P_K_TP] = label_spec.k_tp
    p[P_FEE_RATE] = label_spec.fee_rate
    p[P_SLIPPAGE_K] = label_spec.slippage_k
    p[P_TAIL_WEIGHT] = pen.tail_weight
    p[P_MAE_WEIGHT] = pen.mae_weight
    p[P_ER_IS_NET] = 1.0 if er_is_net else 0.0
    p.flags.writeable = False
    return p


@nb.njit(cache=True)
def funding_events(hold_min: float, minutes_to_funding: float, funding_interval_min: float) -> float:
    """Return the number of funding times in ``(now, now + hold_min]``; pro-rata when the next one is unknown.

    ``minutes_to_funding`` ≤ 0 means a funding time right now, which a position entered now does not
    pay: the next one is a full interval away.
    """
    if not (funding_interval_min > 0.0) or not (hold_min > 0.0):
        return 0.0
    if math.isnan(minutes_to_funding):
        return hold_min / funding_interval_min
    first = minutes_to_funding if minutes_to_funding > 0.0 else funding_interval_min
    if hold_min < first:
        return 0.0
    return 1.0 + math.floor((hold_min - first) / funding_interval_min)


@nb.njit(cache=True)
def cost_estimate(
    direction: int,
    price: float,
    atr: float,
    funding_rate: float,
    hold_min: float,
    minutes_to_funding: float,
    funding_interval_min: float,
    fee_rate: float,
    slippage_k: float,
) -> float:
    """Return the expected round-trip cost of one side, as a fraction of entry notional (see module doc)."""
    s = slippage_fraction(slippage_k, atr, price)
    rate = 0.0 if math.isnan(funding_rate) else funding_rate
    n = funding_events(hold_min, minutes_to_funding, funding_interval_min)
    return 2.0 * fee_rate + 2.0 * s / (1.0 + direction * s) + direction * rate * n


@nb.njit(cache=True)
def _bad(x: float) -> bool:
    return not math.isfinite(x)


@nb.njit(cache=True)
def decide_bar(
    er_long: float,
    er_short: float,
    q05_long: float,
    q05_short: float,
    e_mae_long: float,
    e_mae_short: float,
    e_hold_long: float,
    e_hold_short: float,
    price: float,
    atr: float,
    funding_rate: float,
    minutes_to_funding: float,
    funding_interval_min: float,
    btc_regime: float,
    equity: float,
    open_positions: int,
    has_position: bool,
    params: np.ndarray,
) -> tuple[int, int, float, float, int, float, float, float, float, float, float, float, float, int]:
    """Decide one symbol-bar. Returns (direction, candidate, size_fraction, size_notional, leverage,
    sl_price, tp_price, ev_long, ev_short, cost_long, cost_short, risk_penalty_long,
    risk_penalty_short, reasons); FLAT has size 0, leverage 0 and NaN SL/TP. Never raises."""
    reasons = 0
    if (
        _bad(er_long) or _bad(er_short) or _bad(q05_long) or _bad(q05_short) or _bad(e_mae_long)
        or _bad(e_mae_short) or _bad(e_hold_long) or _bad(e_hold_short)
    ):  # fmt: skip
        reasons |= _NAN_PREDICTION
    if not (price > 0.0) or _bad(price):
        reasons |= _BAD_PRICE
    if not (atr > 0.0) or _bad(atr):
        reasons |= _NO_ATR
    if not (equity > 0.0) or _bad(equity):
        reasons |= _BAD_EQUITY
    nan = np.nan
    cost_l = cost_s = pen_l = pen_s = ev_l = ev_s = nan
    if (reasons & (_BAD_PRICE | _NO_ATR)) == 0:
        fee, slip_k = params[P_FEE_RATE], params[P_SLIPPAGE_K]
        hold_l = max(e_hold_long, 0.0)
        hold_s = max(e_hold_short, 0.0)
        cost_l = cost_estimate(1, price, atr, funding_rate, hold_l, minutes_to_funding, funding_interval_min, fee, slip_k)  # fmt: skip
        cost_s = cost_estimate(-1, price, atr, funding_rate, hold_s, minutes_to_funding, funding_interval_min, fee, slip_k)  # fmt: skip
    tw, mw = params[P_TAIL_WEIGHT], params[P_MAE_WEIGHT]
    pen_l = tw * max(0.0, -q05_long) + mw * max(0.0, e_mae_long)
    pen_s = tw * max(0.0, -q05_short) + mw * max(0.0, e_mae_short)
    if params[P_ER_IS_NET] != 0.0:
        ev_l = er_long - pen_l
        ev_s = er_short - pen_s
    else:
        ev_l = er_long - cost_l - pen_l
        ev_s = er_short - cost_s - pen_s
    if reasons & _INPUT_INVALID:
        return 0, 0, 0.0, 0.0, 0, nan, nan, ev_l, ev_s, cost_l, cost_s, pen_l, pen_s, reasons

    d = 1 if ev_l >= ev_s else -1
    ev = ev_l if d == 1 else ev_s
    q05 = q05_long if d == 1 else q05_short
    mae = e_mae_long if d == 1 else e_mae_short
    q05_floor = params[P_Q05_MIN_ATR] * atr / price - (cost_l if d == 1 else cost_s)
    atr_frac = atr / price
    if ev_l == ev_s:
        reasons |= _AMBIGUOUS_SIDE
    if not (ev > 0.0):
        reasons |= _EV_NOT_POSITIVE
    if not (ev > params[P_EV_MIN]):
        reasons |= _EV_BELOW_MIN
    if not (q05 > q05_floor) or _bad(q05_floor):
        reasons |= _Q05_BELOW_MIN
    if not (mae < params[P_MAE_MAX_ATR] * atr_frac):
        reasons |= _MAE_ABOVE_MAX
    mult = 1.0
    action = params[P_HIGH_VOL_ACTION]
    known = btc_regime == 0.0 or btc_regime == 1.0 or btc_regime == 2.0
    if not known or btc_regime == 2.0:
        if action == 2.0:
            reasons |= _BTC_HIGH_VOL_BLOCK if known else _BTC_REGIME_UNKNOWN_BLOCK
        elif action == 1.0:
            mult = params[P_HIGH_VOL_MULT]
    if open_positions >= params[P_MAX_POSITIONS]:
        reasons |= _MAX_POSITIONS_REACHED
    if has_position:
        reasons |= _SYMBOL_POSITION_OPEN
    sl = price - d * params[P_K_SL] * atr
    tp = price + d * params[P_K_TP] * atr
    if not (sl > 0.0):
        reasons |= _STOP_INVALID
    if reasons:
        return 0, d, 0.0, 0.0, 0, nan, nan, ev_l, ev_s, cost_l, cost_s, pen_l, pen_s, reasons
    size_fraction = params[P_SIZE_PCT] * mult
    leverage = int(params[P_LEVERAGE])
    return (
        d, d, size_fraction, size_fraction * equity, leverage, sl, tp,
        ev_l, ev_s, cost_l, cost_s, pen_l, pen_s, 0,
    )  # fmt: skip


@nb.njit(cache=True)
def _decide_many(
    er_l, er_s, q_l, q_s, m_l, m_s, h_l, h_s, price, atr, f_rate, f_min, f_int, regime, equity,
    open_pos, has_pos, params, direction, candidate, size_fraction, size_notional, leverage, sl, tp,
    ev_l, ev_s, cost_l, cost_s, pen_l, pen_s, reasons,
):  # fmt: skip
    for i in range(len(er_l)):
        r = decide_bar(
            er_l[i], er_s[i], q_l[i], q_s[i], m_l[i], m_s[i], h_l[i], h_s[i], price[i], atr[i],
            f_rate[i], f_min[i], f_int[i], regime[i], equity[i], open_pos[i], has_pos[i], params,
        )  # fmt: skip
        direction[i], candidate[i], size_fraction[i], size_notional[i] = r[0], r[1], r[2], r[3]
        leverage[i], sl[i], tp[i], ev_l[i], ev_s[i] = r[4], r[5], r[6], r[7], r[8]
        cost_l[i], cost_s[i], pen_l[i], pen_s[i], reasons[i] = r[9], r[10], r[11], r[12], r[13]


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Market and book state of one symbol at the decision bar's close.

    ``price``: decision price (USDT; the bar's close or mark). ``atr``: 15m ATR available at that
    close (USDT). ``btc_regime``: 0 calm, 1 normal, 2 high-vol, NaN unknown. ``equity`` in USDT.
    ``funding_rate``: rate in force (fraction per interval, NaN unknown); ``minutes_to_funding``:
    minutes from the decision to the next funding time (NaN unknown: funding is pro-rata);
    ``funding_interval_min``: the symbol's funding interval. ``open_positions``: positions open in
    the book; ``has_position``: one of them is in this symbol.
    """

    price: float
    atr: float
    btc_regime: float
    equity: float
    funding_rate: float = math.nan
    minutes_to_funding: float = math.nan
    funding_interval_min: float = DEFAULT_FUNDING_INTERVAL_MIN
    open_positions: int = 0
    has_position: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for one symbol-bar (spec §13). FLAT has size 0, leverage 0, no SL/TP."""

    symbol: str
    action: Action
    candidate: Action  # the better side before the gates (FLAT if the inputs could not be judged)
    size_notional: float  # USDT
    leverage: int
    sl_price: float | None
    tp_price: float | None
    ev_long: float
    ev_short: float
    cost_long: float
    cost_short: float
    risk_penalty_long: float
    risk_penalty_short: float
    reasons: BlockReason

    @property
    def is_entry(self) -> bool:
        return self.action != Action.FLAT

    @property
    def block_reasons(self) -> tuple[str, ...]:
        """Names of the reasons this decision is FLAT (empty for an entry)."""
        return reason_names(int(self.reasons))

    def explain(self) -> dict[str, Any]:
        """Return the numbers behind the decision, for logs and the dashboard's "why" panel."""
        return {
            "candidate": self.candidate.name,
            "ev_long": self.ev_long,
            "ev_short": self.ev_short,
            "cost_long": self.cost_long,
            "cost_short": self.cost_short,
            "risk_penalty_long": self.risk_penalty_long,
            "risk_penalty_short": self.risk_penalty_short,
            "block_reasons": list(self.block_reasons),
        }


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def decide(
    symbol: str,
    preds: Mapping[str, Any],
    state: PolicyState,
    cfg: PolicyConfig,
    label_spec: LabelSpec,
    *,
    penalty: RiskPenaltyConfig | None = None,
    er_is_net: bool = True,
) -> Decision:
    """Decide one symbol at one bar close from the model's predictions (keys ``PREDICTION_KEYS``).

    Missing, NaN or non-numeric predictions give FLAT with NAN_PREDICTION; nothing raises on bad
    values. Uses only the inputs given (data up to the decision bar's close).
    """
    if not isinstance(preds, Mapping):
        preds = {}
    p = [_as_float(preds.get(k)) for k in PREDICTION_KEYS]
    open_positions = _as_int(state.open_positions)
    r = decide_bar(
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
        _as_float(state.price), _as_float(state.atr), _as_float(state.funding_rate),
        _as_float(state.minutes_to_funding), _as_float(state.funding_interval_min),
        _as_float(state.btc_regime), _as_float(state.equity), open_positions, bool(state.has_position),
        policy_params(cfg, label_spec, penalty, er_is_net),
    )  # fmt: skip
    action = Action(int(r[0]))
    return Decision(
        symbol=symbol,
        action=action,
        candidate=Action(int(r[1])),
        size_notional=float(r[3]),
        leverage=int(r[4]),
        sl_price=float(r[5]) if action != Action.FLAT else None,
        tp_price=float(r[6]) if action != Action.FLAT else None,
        ev_long=float(r[7]),
        ev_short=float(r[8]),
        cost_long=float(r[9]),
        cost_short=float(r[10]),
        risk_penalty_long=float(r[11]),
        risk_penalty_short=float(r[12]),
        reasons=BlockReason(int(r[13])),
    )


@dataclass(frozen=True, slots=True)
class PolicyArrays:
    """``decide_bar`` over arrays: every field has the broadcast shape of the inputs."""

    direction: np.ndarray  # int8
    candidate: np.ndarray  # int8
    size_fraction: np.ndarray  # float64, of equity
    size_notional: np.ndarray  # float64, USDT (= size_fraction · equity)
    leverage: np.ndarray  # int16
    sl_price: np.ndarray
    tp_price: np.ndarray
    ev_long: np.ndarray
    ev_short: np.ndarray
    cost_long: np.ndarray
    cost_short: np.ndarray
    risk_penalty_long: np.ndarray
    risk_penalty_short: np.ndarray
    reasons: np.ndarray  # int64 BlockReason bits

    def signals(self) -> BarSignals:
        """Return the entries in the form the backtester runs (no discretionary exits)."""
        no_exit = np.zeros(self.direction.shape, np.bool_)
        return BarSignals(
            direction=self.direction,
            size_fraction=self.size_fraction,
            leverage=self.leverage,
            sl_price=self.sl_price,
            tp_price=self.tp_price,
            exit_long=no_exit,
            exit_short=no_exit.copy(),
            reasons=self.reasons,
        )


def decide_arrays(
    preds: Mapping[str, Any],
    price: Any,
    atr: Any,
    btc_regime: Any,
    cfg: PolicyConfig,
    label_spec: LabelSpec,
    *,
    equity: Any = 1.0,
    funding_rate: Any = math.nan,
    minutes_to_funding: Any = math.nan,
    funding_interval_min: Any = DEFAULT_FUNDING_INTERVAL_MIN,
    open_positions: Any = 0,
    has_position: Any = False,
    penalty: RiskPenaltyConfig | None = None,
    er_is_net: bool = True,
) -> PolicyArrays:
    """Decide every element of broadcastable arrays (e.g. n bars × n symbols) with ``decide_bar``.

    ``preds`` maps each of ``PREDICTION_KEYS`` to an array; the market inputs are arrays or scalars
    (``btc_regime`` of shape (n, 1) broadcasts one BTC regime over the symbols). With the default
    ``equity = 1`` the sizes are fractions of equity. The book inputs (``open_positions``,
    ``has_position``) default to an empty book: a backtester that tracks them calls ``decide_bar``
    itself. Raises ValueError only for missing keys or shapes that do not broadcast.
    """
    missing = [k for k in PREDICTION_KEYS if k not in preds]
    if missing:
        raise ValueError(f"policy: predictions lack {', '.join(missing)}")
    inputs = [np.asarray(preds[k], np.float64) for k in PREDICTION_KEYS]
    inputs += [np.asarray(x, np.float64) for x in (price, atr, funding_rate, minutes_to_funding,
                                                   funding_interval_min, btc_regime, equity)]  # fmt: skip
    inputs.append(np.asarray(open_positions, np.int64))
    inputs.append(np.asarray(has_position, np.bool_))
    try:
        b = np.broadcast_arrays(*inputs)
    except ValueError as e:
        raise ValueError(f"policy: input shapes do not broadcast: {[x.shape for x in inputs]}") from e
    shape = b[0].shape
    flat = [np.ascontiguousarray(x).ravel() for x in b]
    n = flat[0].size
    out: list[np.ndarray] = [np.empty(n, np.int8), np.empty(n, np.int8), np.empty(n), np.empty(n)]
    out.append(np.empty(n, np.int16))
    out += [np.empty(n) for _ in range(8)]
    out.append(np.empty(n, np.int64))
    args = [*flat, policy_params(cfg, label_spec, penalty, er_is_net), *out]
    _decide_many(*args)
    return PolicyArrays(*(a.reshape(shape) for a in out))
