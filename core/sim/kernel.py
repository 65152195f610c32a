"""Numba kernel of the fill simulator and of the risk guard. Semantics: ``core.sim`` (package docstring).

State is flat float64 arrays with the layouts below (module globals, frozen into the compiled code):
``acct`` (the account, ``A_*``), ``pos`` [symbol, ``P_*``] (one-way: at most one position per symbol),
``sym`` [symbol, ``S_*``] (filters, BTC beta), ``brackets`` [symbol, bracket, ``B_*``], ``cfg`` (fill
model, ``C_*``), ``lim`` (risk limits, ``L_*``), and append-only logs ``trades`` [row, ``T_*``],
``fills`` [row, ``F_*``], ``events`` [row, ``E_*``] whose row counts live in ``acct``. Times are epoch
ms (int64 arguments, stored exactly in float64).

Step functions mutate the state in place: ``try_entry`` (risk check, then the entry fill),
``market_exit``, ``symbol_bar`` (one symbol, one 1m bar: funding, then mark-triggered exits and
liquidation, then the time limit), ``symbol_mark`` (one realtime mark tick), ``apply_funding``,
``revalue`` (unrealized PnL and exposures at the last marks), ``roll_day`` and ``check_daily``.
``portfolio_bar`` runs one bar for every symbol (exits and entries at the open, then ``symbol_bar``
per symbol, then revaluation and the daily loss check); ``run_portfolio`` loops it over a panel.
The backtester (``run_portfolio``) and ``FillSimulator`` (shadow executor, RL environment, one event
at a time) call these same functions, so both produce the same fills.

``risk_mask`` is the one implementation of the hard risk guard (spec 001 §14, seed 003 §4): it
returns a bitmask of ``RISK_*`` codes and never raises; ``core.risk`` decodes it.

All numba code of the simulator and of the risk rules lives in this one file on purpose: numba
invalidates a cached function when its own source file changes, not when a callee in another file
does, so a split would let a stale compiled guard survive an edit.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from core.costs import entry_fill_price, exit_fill_price, slippage_fraction

DAY_MS = 86_400_000

# Exit reasons (fills of an entry carry REASON_ENTRY). TP, SL and TIME have the labels' codes.
REASON_ENTRY = 0
REASON_TP = 1
REASON_SL = 2
REASON_LIQUIDATION = 3
REASON_TIME = 4
REASON_SIGNAL = 5
REASON_FLATTEN = 6
REASON_END = 7
REASON_NAMES: tuple[str, ...] = ("ENTRY", "TP", "SL", "LIQUIDATION", "TIME", "SIGNAL", "FLATTEN", "END")

# Risk reason codes: bit k of a mask. Order = RISK_NAMES.
RISK_NAMES: tuple[str, ...] = (
    "INVALID_ORDER", "KILL_SWITCH", "TRADING_DISABLED", "DAILY_LOSS_LIMIT", "POSITION_OPEN",
    "MAX_POSITIONS", "MAX_USED_MARGIN", "INSUFFICIENT_MARGIN", "MAX_TOTAL_NOTIONAL",
    "MAX_DIRECTIONAL_NOTIONAL", "MAX_SYMBOL_NOTIONAL", "MAX_BTC_BETA_NOTIONAL", "ORDER_RATE_SECOND",
    "ORDER_RATE_DAY", "MAX_SLIPPAGE", "FILTER_MIN_NOTIONAL", "FILTER_MARKET_LOT_SIZE", "FILTER_PRICE",
    "LEVERAGE_BRACKET", "NO_PROTECTION",
)  # fmt: skip
(RISK_INVALID_ORDER, RISK_KILL_SWITCH, RISK_TRADING_DISABLED, RISK_DAILY_LOSS_LIMIT, RISK_POSITION_OPEN,
 RISK_MAX_POSITIONS, RISK_MAX_USED_MARGIN, RISK_INSUFFICIENT_MARGIN, RISK_MAX_TOTAL_NOTIONAL,
 RISK_MAX_DIRECTIONAL_NOTIONAL, RISK_MAX_SYMBOL_NOTIONAL, RISK_MAX_BTC_BETA_NOTIONAL,
 RISK_ORDER_RATE_SECOND, RISK_ORDER_RATE_DAY, RISK_MAX_SLIPPAGE, RISK_FILTER_MIN_NOTIONAL,
 RISK_FILTER_MARKET_LOT_SIZE, RISK_FILTER_PRICE, RISK_LEVERAGE_BRACKET,
 RISK_NO_PROTECTION) = (1 << b for b in range(len(RISK_NAMES)))  # fmt: skip
#: Checks that hold with or without a RiskConfig: the venue's rules and the state of the book.
RISK_ALWAYS_ON = (RISK_INVALID_ORDER | RISK_KILL_SWITCH | RISK_POSITION_OPEN | RISK_INSUFFICIENT_MARGIN
                  | RISK_FILTER_MIN_NOTIONAL | RISK_FILTER_MARKET_LOT_SIZE | RISK_FILTER_PRICE
                  | RISK_LEVERAGE_BRACKET | RISK_NO_PROTECTION)  # fmt: skip
RISK_ALL = (1 << len(RISK_NAMES)) - 1

# Account.
(A_WALLET, A_UNREALIZED, A_EQUITY, A_USED_MARGIN, A_OPEN_POSITIONS, A_TOTAL_NOTIONAL, A_LONG_NOTIONAL,
 A_SHORT_NOTIONAL, A_NET_BETA_NOTIONAL, A_DAY, A_DAY_START_EQUITY, A_TRADING_ENABLED, A_KILL_SWITCH,
 A_FLATTEN_REQUESTED, A_CONSECUTIVE_LOSSES, A_ORDER_SECOND, A_ORDERS_IN_SECOND, A_ORDERS_TODAY,
 A_N_OPENED, A_N_TRADES, A_N_FILLS, A_N_EVENTS, A_FEES, A_SLIPPAGE, A_FUNDING, A_REALIZED,
 A_LIQUIDATIONS, A_INITIAL_EQUITY) = range(28)  # fmt: skip
ACCT_LEN = 28
# Position (one row per symbol; P_SIDE == 0: flat).
(P_SIDE, P_QTY, P_ENTRY_PRICE, P_ENTRY_REF, P_ENTRY_TS, P_SL, P_TP, P_LIQ, P_MARGIN, P_INITIAL_MARGIN,
 P_LEVERAGE, P_MMR, P_CUM, P_SLIP_BASE, P_ENTRY_FEE, P_ENTRY_SLIPPAGE, P_FUNDING, P_MARK, P_BARS_HELD,
 P_ID) = range(20)  # fmt: skip
POS_LEN = 20
# Symbol rules.
(S_BETA, S_TICK, S_MIN_PRICE, S_MAX_PRICE, S_STEP, S_MIN_QTY, S_MAX_QTY, S_MIN_NOTIONAL,
 S_N_BRACKETS) = range(9)  # fmt: skip
S_LEN = 9
B_FLOOR, B_CAP, B_MMR, B_CUM, B_MAX_LEVERAGE = range(5)
B_LEN = 5
# Fill model.
(C_FEE_RATE, C_SLIPPAGE_K, C_IMPACT_K, C_MAX_HOLD_BARS, C_BAR_MS, C_SIZE_MODE, C_PROTECTION_MODE,
 C_DEFAULT_LEVERAGE) = range(8)  # fmt: skip
CFG_LEN = 8
SIZE_NOTIONAL_USDT, SIZE_EQUITY_FRACTION = 0, 1
PROTECTION_PRICE, PROTECTION_ENTRY_DISTANCE = 0, 1
# Risk limits.
(L_ENABLED, L_MAX_USED_MARGIN_PCT, L_DAILY_LOSS_PCT, L_MAX_POSITIONS, L_MAX_TOTAL_PCT,
 L_MAX_DIRECTIONAL_PCT, L_MAX_SYMBOL_PCT, L_MAX_BETA_PCT, L_MAX_ORDERS_PER_S, L_MAX_ORDERS_PER_DAY,
 L_MAX_SLIPPAGE_PCT) = range(11)  # fmt: skip
LIM_LEN = 11
# Entry request seen by the risk guard.
(R_SIDE, R_QTY, R_PRICE, R_REFERENCE_PRICE, R_MARK_PRICE, R_LEVERAGE, R_MAX_LEVERAGE, R_SL, R_TP, R_TS,
 R_BETA, R_SYMBOL_NOTIONAL, R_HAS_POSITION, R_FEE_RATE, R_MIN_PRICE, R_MAX_PRICE, R_MIN_QTY, R_MAX_QTY,
 R_MIN_NOTIONAL) = range(19)  # fmt: skip
REQ_LEN = 19
# Trade log (one row per closed position).
(T_ID, T_SYMBOL, T_SIDE, T_ENTRY_TS, T_EXIT_TS, T_ENTRY_PRICE, T_EXIT_PRICE, T_ENTRY_REF, T_EXIT_REF,
 T_QTY, T_NOTIONAL, T_LEVERAGE, T_INITIAL_MARGIN, T_LIQ, T_SL, T_TP, T_REASON, T_FEES, T_SLIPPAGE,
 T_FUNDING, T_GROSS, T_PNL, T_BARS_HELD) = range(23)  # fmt: skip
TRADE_LEN = 23
# Fill log. F_SIDE: +1 buy, −1 sell.
F_ID, F_SYMBOL, F_TS, F_SIDE, F_QTY, F_PRICE, F_REF, F_FEE, F_REASON = range(9)
FILL_LEN = 9
# Risk event log: blocked entries (symbol ≥ 0) and account events (symbol −1).
E_TS, E_SYMBOL, E_SIDE, E_MASK = range(4)
EVENT_LEN = 4
# Equity curve row, written at each bar close.
(K_TS, K_EQUITY, K_WALLET, K_UNREALIZED, K_USED_MARGIN, K_OPEN_POSITIONS, K_TOTAL_NOTIONAL,
 K_LONG_NOTIONAL, K_SHORT_NOTIONAL, K_DAILY_PNL, K_TRADING_ENABLED, K_CONSECUTIVE_LOSSES) = range(12)  # fmt: skip
CURVE_LEN = 12

_LOT_EPS = 1e-9  # quantities within 1e-9 step of a step multiple count as that multiple


def new_account(initial_equity_usdt: float) -> np.ndarray:
    """Return the state vector of a fresh account holding ``initial_equity_usdt`` and no position."""
    a = np.zeros(ACCT_LEN)
    a[A_WALLET] = a[A_EQUITY] = a[A_DAY_START_EQUITY] = a[A_INITIAL_EQUITY] = initial_equity_usdt
    a[A_DAY] = -1.0
    a[A_ORDER_SECOND] = -1.0
    a[A_TRADING_ENABLED] = 1.0
    return a


def new_positions(n_symbols: int) -> np.ndarray:
    """Return the position table of ``n_symbols`` flat symbols."""
    p = np.full((n_symbols, POS_LEN), np.nan)
    p[:, P_SIDE] = 0.0
    return p


# --- pure pieces -----------------------------------------------------------------------------------


@nb.njit(cache=True)
def fill_slippage(slip_base: float, impact_k: float, notional: float, quote_volume: float) -> float:
    """Return the slippage fraction of one fill: ``slip_base + impact_k · sqrt(min(1, N / V))``.

    ``slip_base`` is ``core.costs.slippage_fraction`` (``slippage_k · ATR / price``, fixed at entry),
    N the fill's notional and V the quote volume (USDT) of the bar it is measured against; an unknown
    or zero volume counts as participation 1. With ``impact_k = 0`` this is ``slip_base``, the labels'.
    """
    if impact_k <= 0.0:
        return slip_base
    participation = 1.0
    if quote_volume > 0.0 and math.isfinite(quote_volume):
        participation = min(1.0, notional / quote_volume)
    return slip_base + impact_k * math.sqrt(max(participation, 0.0))


@nb.njit(cache=True)
def liquidation_price(
    side: float, qty: float, entry_price: float, margin: float, mmr: float, cum: float
) -> float:
    """Return the isolated one-way liquidation price (Binance's formula with TMM = UPNL = 0).

    ``(margin + cum − side·qty·entry) / (qty·MMR − side·qty)``: the mark at which the isolated
    margin plus the unrealized PnL equals the maintenance margin ``qty · mark · MMR − cum``.
    """
    return (margin + cum - side * qty * entry_price) / (qty * mmr - side * qty)


@nb.njit(cache=True)
def bracket_index(brackets: np.ndarray, k: int, n_brackets: int, notional: float) -> int:
    """Return the bracket of ``notional`` in symbol ``k``'s table (floor ≤ N < cap), −1 beyond it."""
    for b in range(n_brackets):
        if notional < brackets[k, b, B_CAP]:
            return b
    return -1


@nb.njit(cache=True)
def floor_to_step(qty: float, step: float) -> float:
    """Return ``qty`` floored to a multiple of ``step`` (unchanged when ``step`` ≤ 0)."""
    if step > 0.0:
        return math.floor(qty / step + _LOT_EPS) * step
    return qty


@nb.njit(cache=True)
def round_toward(price: float, tick: float, anchor: float) -> float:
    """Return ``price`` rounded to ``tick`` towards ``anchor`` (unchanged when ``tick`` ≤ 0 or NaN)."""
    if not (tick > 0.0) or not math.isfinite(price):
        return price
    if price < anchor:
        return math.ceil(price / tick - _LOT_EPS) * tick
    return math.floor(price / tick + _LOT_EPS) * tick


@nb.njit(cache=True)
def _worse_exit(trigger: float, price: float, side: float) -> float:
    # the worse of two prices for closing a position: lower for a long, higher for a short
    if side > 0:
        return min(trigger, price)
    return max(trigger, price)


# --- risk guard ------------------------------------------------------------------------------------


@nb.njit(cache=True)
def risk_mask(lim: np.ndarray, acct: np.ndarray, req: np.ndarray) -> int:
    """Return the bitmask of risk codes that block the entry ``req`` given ``acct``; 0 = allowed.

    Notional ``N = qty · price`` (expected fill), margin ``N / leverage``, fee ``fee_rate · N``.
    Limits in fractions of equity compare after the entry: used margin + margin, total, same-side
    and symbol notional + N; the BTC-beta limit blocks only an entry that raises ``|Σ side·β·N|``
    above its cap. Rate limits count orders in the request's second and UTC day. Only the checks
    enabled in ``lim[L_ENABLED]`` (plus ``RISK_ALWAYS_ON``) are reported. Never raises.
    """
    enabled = np.int64(lim[L_ENABLED]) | RISK_ALWAYS_ON
    side = req[R_SIDE]
    qty = req[R_QTY]
    price = req[R_PRICE]
    leverage = req[R_LEVERAGE]
    if not (side == 1.0 or side == -1.0) or not (price > 0.0 and math.isfinite(price)):
        return RISK_INVALID_ORDER
    if not (leverage >= 1.0 and math.isfinite(leverage)) or not (qty >= 0.0 and math.isfinite(qty)):
        return RISK_INVALID_ORDER
    mask = 0
    notional = qty * price
    margin = notional / leverage
    fee = req[R_FEE_RATE] * notional
    equity = acct[A_EQUITY]
    ts = np.int64(req[R_TS])
    same_day = float(ts // DAY_MS) == acct[A_DAY]
    if acct[A_KILL_SWITCH] != 0.0:
        mask |= RISK_KILL_SWITCH
    if same_day and acct[A_TRADING_ENABLED] == 0.0:
        mask |= RISK_TRADING_DISABLED
    day_start = acct[A_DAY_START_EQUITY]
    if same_day and day_start > 0.0 and equity - day_start <= -lim[L_DAILY_LOSS_PCT] * day_start:
        mask |= RISK_DAILY_LOSS_LIMIT
    if req[R_HAS_POSITION] != 0.0:
        mask |= RISK_POSITION_OPEN
    if acct[A_OPEN_POSITIONS] + 1.0 > lim[L_MAX_POSITIONS]:
        mask |= RISK_MAX_POSITIONS
    if equity <= 0.0 or acct[A_USED_MARGIN] + margin > lim[L_MAX_USED_MARGIN_PCT] * equity:
        mask |= RISK_MAX_USED_MARGIN
    if margin + fee > acct[A_WALLET] - acct[A_USED_MARGIN]:
        mask |= RISK_INSUFFICIENT_MARGIN
    if equity <= 0.0 or acct[A_TOTAL_NOTIONAL] + notional > lim[L_MAX_TOTAL_PCT] * equity:
        mask |= RISK_MAX_TOTAL_NOTIONAL
    same_side = acct[A_LONG_NOTIONAL] if side > 0 else acct[A_SHORT_NOTIONAL]
    if equity <= 0.0 or same_side + notional > lim[L_MAX_DIRECTIONAL_PCT] * equity:
        mask |= RISK_MAX_DIRECTIONAL_NOTIONAL
    if equity <= 0.0 or req[R_SYMBOL_NOTIONAL] + notional > lim[L_MAX_SYMBOL_PCT] * equity:
        mask |= RISK_MAX_SYMBOL_NOTIONAL
    net = acct[A_NET_BETA_NOTIONAL]
    new_net = net + side * req[R_BETA] * notional
    if abs(new_net) > abs(net) and (equity <= 0.0 or abs(new_net) > lim[L_MAX_BETA_PCT] * equity):
        mask |= RISK_MAX_BTC_BETA_NOTIONAL
    in_second = acct[A_ORDERS_IN_SECOND] if float(ts // 1000) == acct[A_ORDER_SECOND] else 0.0
    if in_second + 1.0 > lim[L_MAX_ORDERS_PER_S]:
        mask |= RISK_ORDER_RATE_SECOND
    today = acct[A_ORDERS_TODAY] if same_day else 0.0
    if today + 1.0 > lim[L_MAX_ORDERS_PER_DAY]:
        mask |= RISK_ORDER_RATE_DAY
    ref = req[R_REFERENCE_PRICE]
    if ref > 0.0 and math.isfinite(ref) and abs(price - ref) > lim[L_MAX_SLIPPAGE_PCT] * ref:
        mask |= RISK_MAX_SLIPPAGE
    mark = req[R_MARK_PRICE]
    if not (mark > 0.0 and math.isfinite(mark)):
        mark = price
    if qty * mark < req[R_MIN_NOTIONAL]:
        mask |= RISK_FILTER_MIN_NOTIONAL
    if qty <= 0.0 or qty < req[R_MIN_QTY] * (1.0 - _LOT_EPS) or qty > req[R_MAX_QTY]:
        mask |= RISK_FILTER_MARKET_LOT_SIZE
    for trigger in (req[R_SL], req[R_TP]):
        if math.isfinite(trigger) and (
            trigger <= 0.0 or trigger < req[R_MIN_PRICE] or trigger > req[R_MAX_PRICE]
        ):
            mask |= RISK_FILTER_PRICE
    max_leverage = req[R_MAX_LEVERAGE]
    if not math.isfinite(max_leverage) or leverage > max_leverage:
        mask |= RISK_LEVERAGE_BRACKET
    # Never a naked position: a stop on the losing side of the fill is required for every entry.
    stop = req[R_SL]
    if not (math.isfinite(stop) and stop > 0.0 and (stop - price) * side < 0.0):
        mask |= RISK_NO_PROTECTION
    return int(mask & enabled)


# --- account bookkeeping ---------------------------------------------------------------------------


@nb.njit(cache=True)
def revalue(acct: np.ndarray, pos: np.ndarray, sym: np.ndarray) -> None:
    """Recompute unrealized PnL (at each position's last mark), used margin, exposures and equity."""
    unrealized = 0.0
    used = 0.0
    total = 0.0
    long_n = 0.0
    short_n = 0.0
    beta_n = 0.0
    count = 0
    for k in range(pos.shape[0]):
        side = pos[k, P_SIDE]
        if side == 0.0:
            continue
        qty = pos[k, P_QTY]
        mark = pos[k, P_MARK]
        notional = qty * mark
        unrealized += side * qty * (mark - pos[k, P_ENTRY_PRICE])
        used += pos[k, P_MARGIN]
        total += notional
        if side > 0:
            long_n += notional
        else:
            short_n += notional
        beta_n += side * sym[k, S_BETA] * notional
        count += 1
    acct[A_UNREALIZED] = unrealized
    acct[A_USED_MARGIN] = used
    acct[A_TOTAL_NOTIONAL] = total
    acct[A_LONG_NOTIONAL] = long_n
    acct[A_SHORT_NOTIONAL] = short_n
    acct[A_NET_BETA_NOTIONAL] = beta_n
    acct[A_OPEN_POSITIONS] = count
    acct[A_EQUITY] = acct[A_WALLET] + unrealized


@nb.njit(cache=True)
def roll_day(acct: np.ndarray, ts: int) -> None:
    """Start a new UTC day at ``ts`` if it is one: day-start equity, trading re-enabled, order count 0."""
    day = float(ts // DAY_MS)
    if day != acct[A_DAY]:
        acct[A_DAY] = day
        acct[A_DAY_START_EQUITY] = acct[A_EQUITY]
        acct[A_TRADING_ENABLED] = 1.0
        acct[A_ORDERS_TODAY] = 0.0


@nb.njit(cache=True)
def _count_order(acct: np.ndarray, ts: int) -> None:
    second = float(ts // 1000)
    if second != acct[A_ORDER_SECOND]:
        acct[A_ORDER_SECOND] = second
        acct[A_ORDERS_IN_SECOND] = 0.0
    acct[A_ORDERS_IN_SECOND] += 1.0
    acct[A_ORDERS_TODAY] += 1.0


@nb.njit(cache=True)
def _log_event(events: np.ndarray, acct: np.ndarray, ts: int, k: int, side: float, mask: int) -> None:
    r = int(acct[A_N_EVENTS])
    events[r, E_TS] = ts
    events[r, E_SYMBOL] = k
    events[r, E_SIDE] = side
    events[r, E_MASK] = mask
    acct[A_N_EVENTS] = r + 1


@nb.njit(cache=True)
def _log_fill(fills, acct, pid, k, ts, side, qty, price, ref, fee, reason):
    r = int(acct[A_N_FILLS])
    fills[r, F_ID] = pid
    fills[r, F_SYMBOL] = k
    fills[r, F_TS] = ts
    fills[r, F_SIDE] = side
    fills[r, F_QTY] = qty
    fills[r, F_PRICE] = price
    fills[r, F_REF] = ref
    fills[r, F_FEE] = fee
    fills[r, F_REASON] = reason
    acct[A_N_FILLS] = r + 1


@nb.njit(cache=True)
def check_daily(acct: np.ndarray, lim: np.ndarray, events: np.ndarray, ts: int) -> bool:
    """Apply the daily loss limit at ``ts``: when equity fell ``daily_loss_pct`` of the day's starting
    equity, disable entries until the next UTC day and request flattening. Return True when it fired."""
    if not (np.int64(lim[L_ENABLED]) & RISK_DAILY_LOSS_LIMIT) or acct[A_TRADING_ENABLED] == 0.0:
        return False
    start = acct[A_DAY_START_EQUITY]
    if start > 0.0 and acct[A_EQUITY] - start <= -lim[L_DAILY_LOSS_PCT] * start:
        acct[A_TRADING_ENABLED] = 0.0
        acct[A_FLATTEN_REQUESTED] = 1.0
        _log_event(events, acct, ts, -1, 0.0, RISK_DAILY_LOSS_LIMIT)
        return True
    return False


# --- entries and exits -----------------------------------------------------------------------------


@nb.njit(cache=True)
def try_entry(acct, pos, sym, brackets, cfg, lim, fills, events, req, k, side, ts, ref_price, mark_price,
              decision_price, atr, notional_target, sl_level, tp_level, leverage, quote_volume, dry_run):  # fmt: skip
    """Check and (unless ``dry_run`` or blocked) open a market entry of symbol ``k``; return the risk mask.

    Fill ``ref_price · (1 + side·s)`` with ``s = fill_slippage(slippage_fraction(slippage_k, atr,
    decision_price), impact_k, notional_target, quote_volume)``; quantity ``notional_target / fill``
    floored to the step; SL/TP from ``sl_level``/``tp_level`` (prices, or distances from the fill
    per ``cfg[C_PROTECTION_MODE]``; NaN or ≤ 0: none) rounded to the tick towards the fill. Blocked
    entries are logged as risk events. Isolated margin ``N / leverage``; the taker fee leaves the wallet.
    """
    fee_rate = cfg[C_FEE_RATE]
    slip_base = 0.0
    if atr > 0.0 and math.isfinite(atr) and decision_price > 0.0 and math.isfinite(decision_price):
        slip_base = slippage_fraction(cfg[C_SLIPPAGE_K], atr, decision_price)
    if not (leverage >= 1.0):
        leverage = cfg[C_DEFAULT_LEVERAGE]
    s = fill_slippage(slip_base, cfg[C_IMPACT_K], notional_target, quote_volume)
    fill = entry_fill_price(ref_price, side, s)
    qty = 0.0
    if fill > 0.0 and notional_target > 0.0:
        qty = floor_to_step(notional_target / fill, sym[k, S_STEP])
    notional = qty * fill
    tick = sym[k, S_TICK]
    sl = math.nan
    tp = math.nan
    if sl_level > 0.0:
        sl = sl_level if cfg[C_PROTECTION_MODE] == PROTECTION_PRICE else fill - side * sl_level
        sl = round_toward(sl, tick, fill)
    if tp_level > 0.0:
        tp = tp_level if cfg[C_PROTECTION_MODE] == PROTECTION_PRICE else fill + side * tp_level
        tp = round_toward(tp, tick, fill)
    b = bracket_index(brackets, k, int(sym[k, S_N_BRACKETS]), notional)
    req[R_SIDE] = side
    req[R_QTY] = qty
    req[R_PRICE] = fill if math.isfinite(fill) else math.nan
    req[R_REFERENCE_PRICE] = decision_price
    req[R_MARK_PRICE] = mark_price
    req[R_LEVERAGE] = leverage
    req[R_MAX_LEVERAGE] = brackets[k, b, B_MAX_LEVERAGE] if b >= 0 else math.nan
    req[R_SL] = sl
    req[R_TP] = tp
    req[R_TS] = ts
    req[R_BETA] = sym[k, S_BETA]
    has_position = pos[k, P_SIDE] != 0.0
    req[R_SYMBOL_NOTIONAL] = pos[k, P_QTY] * pos[k, P_MARK] if has_position else 0.0
    req[R_HAS_POSITION] = 1.0 if has_position else 0.0
    req[R_FEE_RATE] = fee_rate
    req[R_MIN_PRICE] = sym[k, S_MIN_PRICE]
    req[R_MAX_PRICE] = sym[k, S_MAX_PRICE]
    req[R_MIN_QTY] = sym[k, S_MIN_QTY]
    req[R_MAX_QTY] = sym[k, S_MAX_QTY]
    req[R_MIN_NOTIONAL] = sym[k, S_MIN_NOTIONAL]
    mask = risk_mask(lim, acct, req)
    if dry_run:
        return mask
    if mask != 0:
        _log_event(events, acct, ts, k, side, mask)
        return mask
    pid = acct[A_N_OPENED]
    acct[A_N_OPENED] = pid + 1.0
    margin = notional / leverage
    fee = fee_rate * notional
    mmr = brackets[k, b, B_MMR]
    cum = brackets[k, b, B_CUM]
    pos[k, P_SIDE] = side
    pos[k, P_QTY] = qty
    pos[k, P_ENTRY_PRICE] = fill
    pos[k, P_ENTRY_REF] = ref_price
    pos[k, P_ENTRY_TS] = ts
    pos[k, P_SL] = sl
    pos[k, P_TP] = tp
    pos[k, P_MARGIN] = margin
    pos[k, P_INITIAL_MARGIN] = margin
    pos[k, P_LEVERAGE] = leverage
    pos[k, P_MMR] = mmr
    pos[k, P_CUM] = cum
    pos[k, P_LIQ] = liquidation_price(side, qty, fill, margin, mmr, cum)
    pos[k, P_SLIP_BASE] = slip_base
    pos[k, P_ENTRY_FEE] = fee
    pos[k, P_ENTRY_SLIPPAGE] = side * qty * (fill - ref_price)
    pos[k, P_FUNDING] = 0.0
    pos[k, P_MARK] = mark_price if (mark_price > 0.0 and math.isfinite(mark_price)) else ref_price
    pos[k, P_BARS_HELD] = 0.0
    pos[k, P_ID] = pid
    acct[A_WALLET] -= fee
    acct[A_FEES] += fee
    acct[A_SLIPPAGE] += pos[k, P_ENTRY_SLIPPAGE]
    _count_order(acct, ts)
    _log_fill(fills, acct, pid, k, ts, side, qty, fill, ref_price, fee, REASON_ENTRY)
    revalue(acct, pos, sym)
    return 0


@nb.njit(cache=True)
def _book_exit(acct, pos, trades, fills, k, ts, qty, exit_ref, exit_fill, exit_fee, reason, entry_fee, funding,
               entry_slippage, initial_margin):  # fmt: skip
    # book the exit fill of qty of symbol k's position and write its trade row; entry_fee, funding,
    # entry_slippage and initial_margin are the shares of the position's that this exit carries
    side = pos[k, P_SIDE]
    entry = pos[k, P_ENTRY_PRICE]
    realized = side * qty * (exit_fill - entry)
    exit_slippage = side * qty * (exit_ref - exit_fill)
    fees = entry_fee + exit_fee
    pnl = realized - fees - funding
    acct[A_WALLET] += realized - exit_fee
    acct[A_FEES] += exit_fee
    acct[A_SLIPPAGE] += exit_slippage
    acct[A_REALIZED] += pnl
    if pnl < 0.0:
        acct[A_CONSECUTIVE_LOSSES] += 1.0
    else:
        acct[A_CONSECUTIVE_LOSSES] = 0.0
    if reason == REASON_LIQUIDATION:
        acct[A_LIQUIDATIONS] += 1.0
    r = int(acct[A_N_TRADES])
    trades[r, T_ID] = pos[k, P_ID]
    trades[r, T_SYMBOL] = k
    trades[r, T_SIDE] = side
    trades[r, T_ENTRY_TS] = pos[k, P_ENTRY_TS]
    trades[r, T_EXIT_TS] = ts
    trades[r, T_ENTRY_PRICE] = entry
    trades[r, T_EXIT_PRICE] = exit_fill
    trades[r, T_ENTRY_REF] = pos[k, P_ENTRY_REF]
    trades[r, T_EXIT_REF] = exit_ref
    trades[r, T_QTY] = qty
    trades[r, T_NOTIONAL] = qty * entry
    trades[r, T_LEVERAGE] = pos[k, P_LEVERAGE]
    trades[r, T_INITIAL_MARGIN] = initial_margin
    trades[r, T_LIQ] = pos[k, P_LIQ]
    trades[r, T_SL] = pos[k, P_SL]
    trades[r, T_TP] = pos[k, P_TP]
    trades[r, T_REASON] = reason
    trades[r, T_FEES] = fees
    trades[r, T_SLIPPAGE] = entry_slippage + exit_slippage
    trades[r, T_FUNDING] = funding
    trades[r, T_GROSS] = side * qty * (exit_ref - pos[k, P_ENTRY_REF])
    trades[r, T_PNL] = pnl
    trades[r, T_BARS_HELD] = pos[k, P_BARS_HELD]
    acct[A_N_TRADES] = r + 1
    _log_fill(fills, acct, pos[k, P_ID], k, ts, -side, qty, exit_fill, exit_ref, exit_fee, reason)


@nb.njit(cache=True)
def _close(acct, pos, sym, trades, fills, k, ts, exit_ref, exit_fill, exit_fee, reason):
    # book the exit fill of symbol k's whole position, write its trade row and flatten the row
    _book_exit(acct, pos, trades, fills, k, ts, pos[k, P_QTY], exit_ref, exit_fill, exit_fee, reason,
               pos[k, P_ENTRY_FEE], pos[k, P_FUNDING], pos[k, P_ENTRY_SLIPPAGE], pos[k, P_INITIAL_MARGIN])  # fmt: skip
    pos[k, :] = math.nan
    pos[k, P_SIDE] = 0.0
    revalue(acct, pos, sym)


@nb.njit(cache=True)
def market_exit(acct, pos, sym, cfg, trades, fills, k, ts, ref_price, quote_volume, reason, is_order):
    """Close symbol ``k``'s position at ``ref_price`` with slippage and the taker fee.

    ``s = fill_slippage(entry's slip_base, impact_k, qty · ref_price, quote_volume)``; an exit we
    send (``is_order``: SIGNAL, TIME, FLATTEN, END) counts against the order-rate limits; triggered
    SL/TP orders were placed at entry and do not. Does nothing when flat or ``ref_price`` is not a price.
    """
    side = pos[k, P_SIDE]
    if side == 0.0 or not (ref_price > 0.0 and math.isfinite(ref_price)):
        return False
    qty = pos[k, P_QTY]
    s = fill_slippage(pos[k, P_SLIP_BASE], cfg[C_IMPACT_K], qty * ref_price, quote_volume)
    fill = exit_fill_price(ref_price, side, s)
    fee = cfg[C_FEE_RATE] * qty * fill
    if is_order:
        _count_order(acct, ts)
    _close(acct, pos, sym, trades, fills, k, ts, ref_price, fill, fee, reason)
    return True


@nb.njit(cache=True)
def liquidate(acct, pos, sym, trades, fills, k, ts):
    """Liquidate symbol ``k``'s position at its liquidation price: the isolated margin is lost.

    The exit fill is the liquidation price without slippage, whatever the gap beyond it; its fee is
    the clearance fee, what margin is left there (``margin + side·qty·(liq − entry)``), so the trade
    loses its initial margin and its entry fee, and the wallet exactly the position's margin.
    """
    side = pos[k, P_SIDE]
    liq = pos[k, P_LIQ]
    clearance = pos[k, P_MARGIN] + side * pos[k, P_QTY] * (liq - pos[k, P_ENTRY_PRICE])
    _close(acct, pos, sym, trades, fills, k, ts, liq, liq, clearance, REASON_LIQUIDATION)


@nb.njit(cache=True)
def apply_funding(acct: np.ndarray, pos: np.ndarray, k: int, rate: float, mark_price: float) -> None:
    """Settle one funding payment of symbol ``k``: ``side · qty · mark · rate`` paid (received if < 0).

    The isolated margin pays it (Binance, isolated mode), so the liquidation price moves.
    """
    side = pos[k, P_SIDE]
    if side == 0.0:
        return
    paid = side * pos[k, P_QTY] * mark_price * rate
    pos[k, P_FUNDING] += paid
    pos[k, P_MARGIN] -= paid
    acct[A_WALLET] -= paid
    acct[A_FUNDING] += paid
    pos[k, P_LIQ] = liquidation_price(side, pos[k, P_QTY], pos[k, P_ENTRY_PRICE], pos[k, P_MARGIN],
                                      pos[k, P_MMR], pos[k, P_CUM])  # fmt: skip


@nb.njit(cache=True)
def symbol_bar(acct, pos, sym, cfg, trades, fills, k, ts, last_open, last_close, mark_open, mark_high,
               mark_low, mark_close, quote_volume, funding_rate):  # fmt: skip
    """Advance symbol ``k``'s position through the 1m bar opening at ``ts``; return the exit reason (0: none).

    1. Funding of the bar (the rates of funding times in (ts, ts + 1m], summed; 0: none) at the
       bar's mark close: the position counts as held to the bar's close, as in the labels.
    2. A bar with a non-finite price is skipped (no trigger check, not counted as held).
    3. Triggers on the mark range. Liquidation when the mark reaches the liquidation price before the
       stop: the bar opens beyond it, or it lies no further from the open than the stop, or there is
       no stop touch. Else SL if the adverse extreme touches it (also when TP is touched: SL first),
       else TP. A triggered SL/TP fills at its trigger, or at the worse of trigger and the bar's
       last-price open when the mark opened beyond the trigger (gap), with slippage (bar's volume).
       Trigger exits are timed at the bar's close.
    4. Time limit: after ``max_hold_bars`` held bars, exit at the bar's last close with slippage.
    """
    side = pos[k, P_SIDE]
    if side == 0.0:
        return 0
    close_ts = ts + np.int64(cfg[C_BAR_MS])
    if funding_rate != 0.0 and math.isfinite(funding_rate):
        mark = mark_close if (mark_close > 0.0 and math.isfinite(mark_close)) else pos[k, P_MARK]
        apply_funding(acct, pos, k, funding_rate, mark)
    if not (math.isfinite(last_open) and math.isfinite(last_close) and math.isfinite(mark_open)
            and math.isfinite(mark_high) and math.isfinite(mark_low) and math.isfinite(mark_close)):  # fmt: skip
        return 0
    pos[k, P_BARS_HELD] += 1.0
    liq = pos[k, P_LIQ]
    sl = pos[k, P_SL]
    tp = pos[k, P_TP]
    if side > 0:
        liq_hit, liq_gap = mark_low <= liq, mark_open <= liq
        sl_hit, sl_gap = mark_low <= sl, mark_open <= sl
        tp_hit, tp_gap = mark_high >= tp, mark_open >= tp
    else:
        liq_hit, liq_gap = mark_high >= liq, mark_open >= liq
        sl_hit, sl_gap = mark_high >= sl, mark_open >= sl
        tp_hit, tp_gap = mark_low <= tp, mark_open <= tp
    if liq_hit and (liq_gap or not sl_hit or side * (liq - sl) >= 0.0):
        liquidate(acct, pos, sym, trades, fills, k, close_ts)
        return REASON_LIQUIDATION
    if sl_hit:
        ref = _worse_exit(sl, last_open, side) if sl_gap else sl
        market_exit(acct, pos, sym, cfg, trades, fills, k, close_ts, ref, quote_volume, REASON_SL, False)
        return REASON_SL
    if tp_hit:
        ref = _worse_exit(tp, last_open, side) if tp_gap else tp
        market_exit(acct, pos, sym, cfg, trades, fills, k, close_ts, ref, quote_volume, REASON_TP, False)
        return REASON_TP
    pos[k, P_MARK] = mark_close
    max_hold = cfg[C_MAX_HOLD_BARS]
    if max_hold > 0.0 and pos[k, P_BARS_HELD] >= max_hold:
        market_exit(
            acct, pos, sym, cfg, trades, fills, k, close_ts, last_close, quote_volume, REASON_TIME, True
        )
        return REASON_TIME
    return 0


@nb.njit(cache=True)
def symbol_mark(acct, pos, sym, cfg, trades, fills, k, ts, mark_price, bid, ask, quote_volume):
    """Apply one realtime mark tick to symbol ``k``'s position; return the exit reason (0: none).

    Liquidation if the mark is at or beyond the liquidation price; else SL, else TP, if the mark is
    at or beyond the trigger: the market exit fills at the touch (bid for a long, ask for a short;
    the mark if the book side is unknown) with slippage, at ``ts``.
    """
    side = pos[k, P_SIDE]
    if side == 0.0 or not (mark_price > 0.0 and math.isfinite(mark_price)):
        return 0
    pos[k, P_MARK] = mark_price
    liq = pos[k, P_LIQ]
    sl = pos[k, P_SL]
    tp = pos[k, P_TP]
    if side > 0:
        liq_hit, sl_hit, tp_hit = mark_price <= liq, mark_price <= sl, mark_price >= tp
    else:
        liq_hit, sl_hit, tp_hit = mark_price >= liq, mark_price >= sl, mark_price <= tp
    if liq_hit:
        liquidate(acct, pos, sym, trades, fills, k, ts)
        return REASON_LIQUIDATION
    if sl_hit or tp_hit:
        touch = bid if side > 0 else ask
        if not (touch > 0.0 and math.isfinite(touch)):
            touch = mark_price
        reason = REASON_SL if sl_hit else REASON_TP
        market_exit(acct, pos, sym, cfg, trades, fills, k, ts, touch, quote_volume, reason, False)
        return reason
    return 0


@nb.njit(cache=True)
def flatten_all(acct, pos, sym, cfg, trades, fills, ts, prices, quote_volumes, reason):
    """Close every open position at ``prices[k]`` (its last mark when not a price) with ``reason``."""
    for k in range(pos.shape[0]):
        if pos[k, P_SIDE] == 0.0:
            continue
        price = prices[k]
        if not (price > 0.0 and math.isfinite(price)):
            price = pos[k, P_MARK]
        market_exit(acct, pos, sym, cfg, trades, fills, k, ts, price, quote_volumes[k], reason, True)
    acct[A_FLATTEN_REQUESTED] = 0.0


# --- one bar of the whole book, and the backtest loop ----------------------------------------------


@nb.njit(cache=True)
def portfolio_bar(acct, pos, sym, brackets, cfg, lim, trades, fills, events, req, ts, has_decision,
                  direction, exits, size, sl_level, tp_level, leverage, decision_close, decision_atr,
                  decision_volume, last_open, last_close, mark_open, mark_high, mark_low, mark_close,
                  quote_volume, funding_rate, close_at_end, curve_row):  # fmt: skip
    """Run one 1m bar (open time ``ts``) for every symbol; write the bar-close account row.

    At the open: a pending flatten (daily loss limit) closes everything (FLATTEN); the UTC day
    rolls; then per symbol in index order, the decision of the previous bar (``has_decision``;
    the ``decision_*``, ``direction``, ``exits``, ``size``, ``sl/tp_level`` and ``leverage`` rows):
    an exit flag matching the open side closes it (SIGNAL; bit 0 closes a long, bit 1 a short), then
    a direction ±1 opens a position when the symbol is flat and ``risk_mask`` allows it. Fills at the
    open use the decision bar's quote volume. During the bar: ``symbol_bar`` per symbol. At the close:
    ``close_at_end`` closes what is open at the last close (END), then revaluation at the mark
    closes, the account row, and the daily loss check.
    """
    m = pos.shape[0]
    if acct[A_FLATTEN_REQUESTED] != 0.0:
        flatten_all(acct, pos, sym, cfg, trades, fills, ts, last_open, decision_volume, REASON_FLATTEN)
    roll_day(acct, ts)
    if has_decision:
        by_fraction = cfg[C_SIZE_MODE] == SIZE_EQUITY_FRACTION
        for k in range(m):
            d = direction[k]
            x = exits[k]
            if d == 0 and x == 0:
                continue
            side = pos[k, P_SIDE]
            if side != 0.0 and ((side > 0 and (x & 1) != 0) or (side < 0 and (x & 2) != 0)):
                market_exit(acct, pos, sym, cfg, trades, fills, k, ts, last_open[k], decision_volume[k],
                            REASON_SIGNAL, True)  # fmt: skip
            if d == 0 or pos[k, P_SIDE] != 0.0:
                continue
            notional = size[k] * acct[A_EQUITY] if by_fraction else size[k]
            try_entry(acct, pos, sym, brackets, cfg, lim, fills, events, req, k, float(d), ts, last_open[k],
                      mark_open[k], decision_close[k], decision_atr[k], notional, sl_level[k], tp_level[k],
                      float(leverage[k]), decision_volume[k], False)  # fmt: skip
    for k in range(m):
        if pos[k, P_SIDE] != 0.0:
            symbol_bar(acct, pos, sym, cfg, trades, fills, k, ts, last_open[k], last_close[k], mark_open[k],
                       mark_high[k], mark_low[k], mark_close[k], quote_volume[k], funding_rate[k])  # fmt: skip
    close_ts = ts + np.int64(cfg[C_BAR_MS])
    if close_at_end:
        flatten_all(acct, pos, sym, cfg, trades, fills, close_ts, last_close, quote_volume, REASON_END)
    revalue(acct, pos, sym)
    check_daily(acct, lim, events, close_ts)
    curve_row[K_TS] = close_ts
    curve_row[K_EQUITY] = acct[A_EQUITY]
    curve_row[K_WALLET] = acct[A_WALLET]
    curve_row[K_UNREALIZED] = acct[A_UNREALIZED]
    curve_row[K_USED_MARGIN] = acct[A_USED_MARGIN]
    curve_row[K_OPEN_POSITIONS] = acct[A_OPEN_POSITIONS]
    curve_row[K_TOTAL_NOTIONAL] = acct[A_TOTAL_NOTIONAL]
    curve_row[K_LONG_NOTIONAL] = acct[A_LONG_NOTIONAL]
    curve_row[K_SHORT_NOTIONAL] = acct[A_SHORT_NOTIONAL]
    curve_row[K_DAILY_PNL] = acct[A_EQUITY] - acct[A_DAY_START_EQUITY]
    curve_row[K_TRADING_ENABLED] = acct[A_TRADING_ENABLED]
    curve_row[K_CONSECUTIVE_LOSSES] = acct[A_CONSECUTIVE_LOSSES]


@nb.njit(cache=True)
def has_room(acct: np.ndarray, trades: np.ndarray, fills: np.ndarray, events: np.ndarray, m: int) -> bool:
    """Whether the logs can take one more bar of ``m`` symbols (≤ 2 trades, 3 fills, 1 event each)."""
    return (acct[A_N_TRADES] + 2 * m <= trades.shape[0] and acct[A_N_FILLS] + 3 * m <= fills.shape[0]
            and acct[A_N_EVENTS] + m + 1 <= events.shape[0])  # fmt: skip


@nb.njit(cache=True)
def run_portfolio(j0, ts, last_open, last_close, mark_open, mark_high, mark_low, mark_close, quote_volume,
                  funding_rate, atr, direction, exits, size, sl_level, tp_level, leverage, close_at_end,
                  acct, pos, sym, brackets, cfg, lim, trades, fills, events, curve):  # fmt: skip
    """Run ``portfolio_bar`` over bars ``j0 …`` of [bar, symbol] panels; return the next bar to run.

    The decision of bar j − 1 (its close, ATR, volume and signal rows) acts at bar j's open. Stops
    early, returning the bar, when a log is too full for one more bar: the caller grows it and resumes.
    """
    n, m = last_open.shape
    req = np.empty(REQ_LEN)
    for j in range(j0, n):
        if not has_room(acct, trades, fills, events, m):
            return j
        d = max(j - 1, 0)
        has_decision = j > 0
        is_end = close_at_end and j == n - 1
        portfolio_bar(acct, pos, sym, brackets, cfg, lim, trades, fills, events, req, ts[j], has_decision,
                      direction[d], exits[d], size[d], sl_level[d], tp_level[d], leverage[d], last_close[d],
                      atr[d], quote_volume[d], last_open[j], last_close[j], mark_open[j], mark_high[j],
                      mark_low[j], mark_close[j], quote_volume[j], funding_rate[j],
                      is_end, curve[j])  # fmt: skip
    return n


# --- one event at a time (FillSimulator) -----------------------------------------------------------


@nb.njit(cache=True)
def event_entry(acct, pos, sym, brackets, cfg, lim, fills, events, req, k, side, ts, ref_price, mark_price,
                decision_price, atr, notional, sl_level, tp_level, leverage, quote_volume, dry_run):  # fmt: skip
    """``try_entry`` after rolling the day (one realtime event)."""
    roll_day(acct, ts)
    return try_entry(acct, pos, sym, brackets, cfg, lim, fills, events, req, k, side, ts, ref_price,
                     mark_price, decision_price, atr, notional, sl_level, tp_level, leverage, quote_volume,
                     dry_run)  # fmt: skip


@nb.njit(cache=True)
def event_bar(acct, pos, sym, cfg, lim, trades, fills, events, k, ts, last_open, last_close, mark_open,
              mark_high, mark_low, mark_close, quote_volume, funding_rate):  # fmt: skip
    """One symbol's 1m bar: roll the day, ``symbol_bar``, revalue, daily loss check at the bar close."""
    roll_day(acct, ts)
    if pos[k, P_SIDE] != 0.0:
        reason = symbol_bar(acct, pos, sym, cfg, trades, fills, k, ts, last_open, last_close, mark_open,
                            mark_high, mark_low, mark_close, quote_volume, funding_rate)  # fmt: skip
    else:
        reason = 0
    revalue(acct, pos, sym)
    check_daily(acct, lim, events, ts + np.int64(cfg[C_BAR_MS]))
    return reason


@nb.njit(cache=True)
def event_mark(acct, pos, sym, cfg, lim, trades, fills, events, k, ts, mark_price, bid, ask, quote_volume):
    """One realtime mark tick: roll the day, ``symbol_mark``, revalue, daily loss check."""
    roll_day(acct, ts)
    reason = symbol_mark(acct, pos, sym, cfg, trades, fills, k, ts, mark_price, bid, ask, quote_volume)
    revalue(acct, pos, sym)
    check_daily(acct, lim, events, ts)
    return reason


@nb.njit(cache=True)
def event_funding(acct, pos, sym, lim, events, k, ts, rate, mark_price):
    """One funding settlement of symbol ``k`` at ``ts``: roll the day, pay, revalue, daily check."""
    roll_day(acct, ts)
    if pos[k, P_SIDE] != 0.0:
        if not (mark_price > 0.0 and math.isfinite(mark_price)):
            mark_price = pos[k, P_MARK]
        apply_funding(acct, pos, k, rate, mark_price)
    revalue(acct, pos, sym)
    check_daily(acct, lim, events, ts)


@nb.njit(cache=True)
def event_exit(acct, pos, sym, cfg, trades, fills, k, ts, ref_price, quote_volume, reason):
    """A market exit we send (SIGNAL, TIME, FLATTEN, END): roll the day, exit, revalue."""
    roll_day(acct, ts)
    done = market_exit(acct, pos, sym, cfg, trades, fills, k, ts, ref_price, quote_volume, reason, True)
    revalue(acct, pos, sym)
    return done


@nb.njit(cache=True)
def event_flatten(acct, pos, sym, cfg, trades, fills, ts, prices, quote_volumes, reason):
    """Close everything (a requested flatten, or the kill-switch's): roll the day, flatten, revalue."""
    roll_day(acct, ts)
    flatten_all(acct, pos, sym, cfg, trades, fills, ts, prices, quote_volumes, reason)
    revalue(acct, pos, sym)


# --- orders by quantity (the paper exchange's market orders) ---------------------------------------

# What ``event_order`` did (or, dry, would do): the closed and opened quantity, the fill price, the
# taker fee of the whole order and the realized PnL of the closed part (before fees).
O_CLOSED, O_OPENED, O_PRICE, O_FEE, O_REALIZED = range(5)
ORDER_OUT_LEN = 5


@nb.njit(cache=True)
def rebracket(pos: np.ndarray, brackets: np.ndarray, sym: np.ndarray, k: int) -> None:
    """Set symbol ``k``'s bracket (MMR, cum) from its notional at the entry price, and its liquidation
    price; a notional beyond the table takes the last bracket."""
    n = int(sym[k, S_N_BRACKETS])
    b = bracket_index(brackets, k, n, pos[k, P_QTY] * pos[k, P_ENTRY_PRICE])
    if b < 0:
        b = n - 1
    pos[k, P_MMR] = brackets[k, b, B_MMR]
    pos[k, P_CUM] = brackets[k, b, B_CUM]
    pos[k, P_LIQ] = liquidation_price(pos[k, P_SIDE], pos[k, P_QTY], pos[k, P_ENTRY_PRICE], pos[k, P_MARGIN],
                                      pos[k, P_MMR], pos[k, P_CUM])  # fmt: skip


@nb.njit(cache=True)
def _close_part(acct, pos, sym, brackets, trades, fills, k, ts, qty, exit_ref, exit_fill, exit_fee, reason):
    # book the exit of qty < the position's as a trade of its own; the rest keeps its entry price, and
    # its margin, entry fee, funding and entry slippage shrink to the quantity left
    held = pos[k, P_QTY]
    left = (held - qty) / held
    _book_exit(acct, pos, trades, fills, k, ts, qty, exit_ref, exit_fill, exit_fee, reason,
               pos[k, P_ENTRY_FEE] - pos[k, P_ENTRY_FEE] * left, pos[k, P_FUNDING] - pos[k, P_FUNDING] * left,
               pos[k, P_ENTRY_SLIPPAGE] - pos[k, P_ENTRY_SLIPPAGE] * left,
               pos[k, P_INITIAL_MARGIN] - pos[k, P_INITIAL_MARGIN] * left)  # fmt: skip
    pos[k, P_QTY] = held - qty
    pos[k, P_MARGIN] *= left
    pos[k, P_INITIAL_MARGIN] *= left
    pos[k, P_ENTRY_FEE] *= left
    pos[k, P_FUNDING] *= left
    pos[k, P_ENTRY_SLIPPAGE] *= left
    rebracket(pos, brackets, sym, k)


@nb.njit(cache=True)
def _open_part(acct, pos, sym, brackets, fills, k, side, ts, qty, ref_price, fill, fee, mark_price, leverage):
    # open symbol k's position, or add to it on its side (the entry price averages by quantity)
    margin = qty * fill / leverage
    slippage = side * qty * (fill - ref_price)
    if pos[k, P_SIDE] == 0.0:
        pid = acct[A_N_OPENED]
        acct[A_N_OPENED] = pid + 1.0
        pos[k, P_SIDE] = side
        pos[k, P_QTY] = qty
        pos[k, P_ENTRY_PRICE] = fill
        pos[k, P_ENTRY_REF] = ref_price
        pos[k, P_ENTRY_TS] = ts
        pos[k, P_SL] = math.nan
        pos[k, P_TP] = math.nan
        pos[k, P_MARGIN] = margin
        pos[k, P_INITIAL_MARGIN] = margin
        pos[k, P_SLIP_BASE] = 0.0
        pos[k, P_ENTRY_FEE] = fee
        pos[k, P_ENTRY_SLIPPAGE] = slippage
        pos[k, P_FUNDING] = 0.0
        pos[k, P_MARK] = ref_price
        pos[k, P_BARS_HELD] = 0.0
        pos[k, P_ID] = pid
    else:
        held = pos[k, P_QTY]
        total = held + qty
        pos[k, P_ENTRY_PRICE] = (held * pos[k, P_ENTRY_PRICE] + qty * fill) / total
        pos[k, P_ENTRY_REF] = (held * pos[k, P_ENTRY_REF] + qty * ref_price) / total
        pos[k, P_QTY] = total
        pos[k, P_MARGIN] += margin
        pos[k, P_INITIAL_MARGIN] += margin
        pos[k, P_ENTRY_FEE] += fee
        pos[k, P_ENTRY_SLIPPAGE] += slippage
    pos[k, P_LEVERAGE] = leverage
    if mark_price > 0.0 and math.isfinite(mark_price):
        pos[k, P_MARK] = mark_price
    rebracket(pos, brackets, sym, k)
    acct[A_WALLET] -= fee
    acct[A_FEES] += fee
    acct[A_SLIPPAGE] += slippage
    _log_fill(fills, acct, pos[k, P_ID], k, ts, side, qty, fill, ref_price, fee, REASON_ENTRY)


@nb.njit(cache=True)
def event_order(acct, pos, sym, brackets, cfg, trades, fills, out, k, side, ts, qty, ref_price, mark_price,
                leverage, quote_volume, reduce_only, reason, dry_run):  # fmt: skip
    """A market order of ``qty`` (base asset) on symbol ``k`` in one-way mode; return its risk mask.

    The order first closes an opposite position (all of it when ``qty`` reaches it within half a
    step), then opens or adds the rest on its own side: a larger order flips the position.
    ``reduce_only`` closes at most the position and is refused (INVALID_ORDER) when there is nothing
    to close. Fill ``ref_price · (1 + side·s)``, ``s = fill_slippage(0, impact_k, qty · ref_price,
    quote_volume)`` (an order by quantity has no decision bar, so no ATR part); taker fee ``fee_rate ·
    qty · fill``, shared between the closed and the opened part by quantity. The closed part realizes
    ``−side · q · (fill − entry)``: all of it as ``_close`` does (``reason``), or a part as a trade of its
    own, the rest keeping its entry price with margin, entry fee and funding scaled to what is left.
    The opened part adds margin ``q · fill / leverage`` (``leverage`` < 1: the default) and averages the
    entry price by quantity; bracket and liquidation price follow the new notional at the entry price.
    Refused, changing nothing: INSUFFICIENT_MARGIN when the new margin exceeds the available balance
    after the closed part (wallet − used margin + released margin + realized − fee), LEVERAGE_BRACKET
    when the new notional at the fill lies beyond the table or its bracket allows less leverage.
    ``out`` (``O_*``) receives what the order does, also when dry or refused.
    """
    out[:] = 0.0
    if not (side == 1.0 or side == -1.0) or not (qty > 0.0 and math.isfinite(qty)):
        return RISK_INVALID_ORDER
    if not (ref_price > 0.0 and math.isfinite(ref_price)):
        return RISK_INVALID_ORDER
    roll_day(acct, ts)
    if not (leverage >= 1.0):
        leverage = cfg[C_DEFAULT_LEVERAGE]
    held_side = pos[k, P_SIDE]
    held = pos[k, P_QTY] if held_side != 0.0 else 0.0
    step = sym[k, S_STEP]
    tolerance = 0.5 * step if step > 0.0 else _LOT_EPS * max(held, qty)
    closing = 0.0
    if held_side == -side:
        closing = held if qty >= held - tolerance else qty
    if reduce_only:
        if closing == 0.0:
            return RISK_INVALID_ORDER
        qty = closing
    opening = qty - closing
    if closing > 0.0 and opening <= tolerance:
        opening = 0.0
        qty = closing
    s = fill_slippage(0.0, cfg[C_IMPACT_K], qty * ref_price, quote_volume)
    price = entry_fill_price(ref_price, side, s)
    fee = cfg[C_FEE_RATE] * qty * price
    realized = held_side * closing * (price - pos[k, P_ENTRY_PRICE]) if closing > 0.0 else 0.0
    out[O_CLOSED] = closing
    out[O_OPENED] = opening
    out[O_PRICE] = price
    out[O_FEE] = fee
    out[O_REALIZED] = realized
    mask = 0
    if opening > 0.0:
        released = pos[k, P_MARGIN] * closing / held if closing > 0.0 else 0.0
        available = acct[A_WALLET] - acct[A_USED_MARGIN] + released + realized - fee
        if opening * price / leverage > available:
            mask |= RISK_INSUFFICIENT_MARGIN
        new_qty = held + opening if held_side == side else opening
        b = bracket_index(brackets, k, int(sym[k, S_N_BRACKETS]), new_qty * price)
        if b < 0 or leverage > brackets[k, b, B_MAX_LEVERAGE]:
            mask |= RISK_LEVERAGE_BRACKET
    if mask != 0 or dry_run:
        return mask
    close_fee = 0.0
    if closing > 0.0:
        close_fee = fee if opening == 0.0 else fee * closing / qty
        if closing == held:
            _close(acct, pos, sym, trades, fills, k, ts, ref_price, price, close_fee, reason)
        else:
            _close_part(acct, pos, sym, brackets, trades, fills, k, ts, closing, ref_price, price, close_fee,
                        reason)  # fmt: skip
    if opening > 0.0:
        _open_part(acct, pos, sym, brackets, fills, k, side, ts, opening, ref_price, price, fee - close_fee,
                   mark_price, leverage)  # fmt: skip
    elif mark_price > 0.0 and math.isfinite(mark_price) and pos[k, P_SIDE] != 0.0:
        pos[k, P_MARK] = mark_price
    _count_order(acct, ts)
    revalue(acct, pos, sym)
    return 0
