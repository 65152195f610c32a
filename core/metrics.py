"""Trading metrics (spec 001 §9.3): pure functions of a trade list and an equity curve.

Column contract. The fill simulator and the portfolio backtester produce exactly these columns
(``TRADE_COLUMNS``, ``EQUITY_COLUMNS``; ``check_trades`` / ``check_equity`` verify them); extra
columns are allowed and ignored.

Trades, one row per closed round trip:

==============  =======  =====================================================================
column          dtype    meaning
==============  =======  =====================================================================
symbol          object   internal symbol, e.g. ``BTCUSDT``
side            int8     +1 long, −1 short
entry_ts        int64    entry fill time, epoch ms
exit_ts         int64    exit fill time, epoch ms (≥ entry_ts)
entry_price     float64  entry fill price, USDT (slippage included)
exit_price      float64  exit fill price, USDT (slippage included)
qty             float64  base-asset quantity, > 0
notional        float64  entry notional, USDT: ``qty · entry_price``
exit_reason     object   how it ended: "TP", "SL", "TIME", "SIGNAL", "LIQUIDATION", "END", …
fees            float64  taker fees of both fills, USDT, ≥ 0
slippage        float64  slippage cost of both fills vs their reference prices, USDT, ≥ 0
                         (already inside the fill prices: informational, not subtracted again)
funding         float64  funding paid while holding, USDT (negative = received)
pnl             float64  net PnL, USDT: ``side · qty · (exit_price − entry_price) − fees − funding``
return          float64  ``pnl / notional`` (net return on entry notional, unlevered)
==============  =======  =====================================================================

Equity, one row per 1m bar close (regular sampling: Sharpe/Sortino annualise per row):

==============  =======  =====================================================================
ts              int64    bar close time, epoch ms, strictly increasing
equity          float64  ``wallet + unrealized``, USDT
wallet          float64  cash balance after realized PnL, fees and funding, USDT
unrealized      float64  unrealized PnL of open positions at the mark, USDT
used_margin     float64  initial margin of open positions, USDT
open_positions  int64    positions open at ``ts``
==============  =======  =====================================================================

Conventions (each function says its own):

- Profit factor = Σ gains / |Σ losses| over trade PnL; no losing trade with some gain → ``inf``;
  no trade, or neither gain nor loss → NaN.
- Max drawdown: the largest fall from a running peak of equity, as a positive fraction of the
  peak (0.25 = −25%); 0 for a flat or rising curve.
- Expectancy: mean net PnL per trade (USDT) and mean net return per trade.
- Tail loss: mean of the worst ``max(1, ceil(0.01·n))`` trade returns (expected shortfall at 1% by
  trade count): a negative number for a book that loses in its tail.
- Turnover: traded notional (entry ``notional`` + exit ``qty · exit_price``) over mean equity;
  ``summarize`` also gives it per day.
- Sharpe, Sortino: on per-row (per-minute) simple returns of equity, zero risk-free rate, annualised
  with ``periods_per_year = 525,600`` (minutes in 365 days; crypto trades every minute):
  ``Sharpe = mean / std(ddof=1) · sqrt(525,600)``; ``Sortino = mean / downside · sqrt(525,600)``
  with ``downside = sqrt(mean(min(r, 0)²))`` over all rows (empyrical's definition). Zero
  dispersion gives NaN (Sortino: ``inf`` when the mean is positive and there is no down move).
- Exposure: fraction of equity rows with at least one open position.
- Win rate: fraction of trades with pnl > 0 (a zero-PnL trade is not a win).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.errors import DataQualityError
from core.time import DAY_MS

MINUTES_PER_YEAR = 525_600
TAIL_QUANTILE = 0.01

TRADE_COLUMNS: Mapping[str, str] = {
    "symbol": "object",
    "side": "int8",
    "entry_ts": "int64",
    "exit_ts": "int64",
    "entry_price": "float64",
    "exit_price": "float64",
    "qty": "float64",
    "notional": "float64",
    "exit_reason": "object",
    "fees": "float64",
    "slippage": "float64",
    "funding": "float64",
    "pnl": "float64",
    "return": "float64",
}
EQUITY_COLUMNS: Mapping[str, str] = {
    "ts": "int64",
    "equity": "float64",
    "wallet": "float64",
    "unrealized": "float64",
    "used_margin": "float64",
    "open_positions": "int64",
}


def empty_trades() -> pd.DataFrame:
    """Return a trade list with no rows and the contract's columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in TRADE_COLUMNS.items()})


def empty_equity() -> pd.DataFrame:
    """Return an equity curve with no rows and the contract's columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in EQUITY_COLUMNS.items()})


def _check(df: pd.DataFrame, columns: Mapping[str, str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataQualityError(f"{what}: missing column(s) {', '.join(missing)}")
    for c, t in columns.items():
        kind = df[c].dtype.kind
        if t == "object":
            if kind not in "OUT":  # object, or pandas' string dtype
                raise DataQualityError(f"{what}: column {c} must hold strings, got {df[c].dtype}")
        elif np.dtype(t).kind in "iu" and kind not in "iu":
            raise DataQualityError(f"{what}: column {c} must be integer, got {df[c].dtype}")
        elif np.dtype(t).kind == "f" and kind not in "fiu":
            raise DataQualityError(f"{what}: column {c} must be numeric, got {df[c].dtype}")


def check_trades(trades: pd.DataFrame) -> None:
    """Raise DataQualityError unless ``trades`` has the trade-list columns with compatible dtypes."""
    _check(trades, TRADE_COLUMNS, "trades")
    if len(trades) and not trades["side"].isin([1, -1]).all():
        raise DataQualityError("trades: side must be +1 or -1")


def check_equity(equity: pd.DataFrame) -> None:
    """Raise DataQualityError unless ``equity`` has the equity-curve columns and increasing ts."""
    _check(equity, EQUITY_COLUMNS, "equity")
    ts = equity["ts"].to_numpy()
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        raise DataQualityError("equity: ts not strictly increasing")


def _arr(values: Any) -> np.ndarray:
    a = np.asarray(values, np.float64).ravel()
    return a[~np.isnan(a)]


def profit_factor(pnl: Any) -> float:
    """Return Σ gains / |Σ losses| of per-trade PnL (or returns); ``inf`` with gains and no loss, NaN
    with no trade or neither gain nor loss. NaN entries are ignored."""
    x = _arr(pnl)
    gains = float(x[x > 0].sum())
    losses = float(-x[x < 0].sum())
    if losses == 0.0:
        return math.inf if gains > 0.0 else math.nan
    return gains / losses


def max_drawdown(equity: Any) -> float:
    """Return the largest peak-to-trough fall of an equity curve as a positive fraction of the peak.

    ``max_t (1 − E_t / max_{s≤t} E_s)``; 0 for a flat or rising curve, NaN for an empty one. Can
    exceed 1 if equity goes negative.
    """
    e = _arr(equity)
    if len(e) == 0:
        return math.nan
    peak = np.maximum.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - e / peak, 0.0)
    return float(max(0.0, dd.max()))


def expectancy(values: Any) -> float:
    """Return the mean per trade of PnL (USDT) or returns; NaN with no trade."""
    x = _arr(values)
    return float(x.mean()) if len(x) else math.nan


def tail_loss(returns: Any, quantile: float = TAIL_QUANTILE) -> float:
    """Return the mean of the worst ``max(1, ceil(quantile · n))`` trade returns; NaN with no trade.

    Expected shortfall by trade count: with 150 trades it is the mean of the worst 2. Negative when
    the tail loses.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"tail_loss: quantile must be in (0, 1], got {quantile}")
    x = np.sort(_arr(returns))
    if len(x) == 0:
        return math.nan
    k = max(1, math.ceil(quantile * len(x) - 1e-12))
    return float(x[:k].mean())


def win_rate(pnl: Any) -> float:
    """Return the fraction of trades with PnL > 0; NaN with no trade."""
    x = _arr(pnl)
    return float(np.mean(x > 0)) if len(x) else math.nan


def turnover(trades: pd.DataFrame, equity: pd.DataFrame) -> float:
    """Return traded notional (entry notional + exit ``qty · exit_price``) over the mean of ``equity``.

    0 with no trade, NaN without equity rows or with a non-positive mean equity.
    """
    mean_equity = float(equity["equity"].mean()) if len(equity) else math.nan
    if not mean_equity > 0:
        return math.nan
    traded = float(trades["notional"].sum() + (trades["qty"] * trades["exit_price"]).sum())
    return traded / mean_equity


def equity_returns(equity: Any) -> np.ndarray:
    """Return simple returns ``E_t / E_{t−1} − 1`` between consecutive equity rows (length n − 1)."""
    e = np.asarray(equity, np.float64).ravel()
    if len(e) < 2:
        return np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return e[1:] / e[:-1] - 1.0


def sharpe(returns: Any, periods_per_year: float = MINUTES_PER_YEAR) -> float:
    """Return the annualised Sharpe ratio of per-period returns, zero risk-free rate.

    ``mean / std(ddof=1) · sqrt(periods_per_year)``; NaN with fewer than 2 returns or zero std.
    """
    r = _arr(returns)
    if len(r) < 2:
        return math.nan
    sd = float(r.std(ddof=1))
    if not sd > 0:
        return math.nan
    return float(r.mean()) / sd * math.sqrt(periods_per_year)


def sortino(returns: Any, periods_per_year: float = MINUTES_PER_YEAR) -> float:
    """Return the annualised Sortino ratio of per-period returns, zero target (empyrical's definition).

    ``mean / sqrt(mean(min(r, 0)²)) · sqrt(periods_per_year)``, the downside over all periods;
    ``inf`` when there is no down period and the mean is positive, NaN when the mean is 0 too or
    there is no return.
    """
    r = _arr(returns)
    if len(r) == 0:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    mean = float(r.mean())
    if downside == 0.0:
        return math.inf if mean > 0 else math.nan
    return mean / downside * math.sqrt(periods_per_year)


def exposure(open_positions: Any) -> float:
    """Return the fraction of equity rows with at least one open position; NaN with no row."""
    x = np.asarray(open_positions).ravel()
    return float(np.mean(x >= 1)) if len(x) else math.nan


def cost_breakdown(trades: pd.DataFrame) -> dict[str, float]:
    """Return the summed costs in USDT: fees, slippage, funding (paid − received) and their total."""
    fees = float(trades["fees"].sum())
    slippage = float(trades["slippage"].sum())
    funding = float(trades["funding"].sum())
    return {"fees": fees, "slippage": slippage, "funding": funding, "total": fees + slippage + funding}


def _trade_stats(t: pd.DataFrame) -> dict[str, float]:
    pnl, ret = t["pnl"].to_numpy(np.float64), t["return"].to_numpy(np.float64)
    return {
        "trades": float(len(t)),
        "pnl": float(pnl.sum()),
        "win_rate": win_rate(pnl),
        "profit_factor": profit_factor(pnl),
        "expectancy": expectancy(pnl),
        "expectancy_return": expectancy(ret),
        "tail_loss": tail_loss(ret),
        "notional": float(t["notional"].sum()),
        **cost_breakdown(t),
    }


PER_SYMBOL_COLUMNS: tuple[str, ...] = (
    "trades", "pnl", "win_rate", "profit_factor", "expectancy", "expectancy_return", "tail_loss",
    "notional", "fees", "slippage", "funding", "total",
)  # fmt: skip


def per_symbol_table(trades: pd.DataFrame) -> pd.DataFrame:
    """Return one row per symbol (sorted), columns ``PER_SYMBOL_COLUMNS`` (``total`` = total costs)."""
    rows = {str(sym): _trade_stats(t) for sym, t in trades.groupby("symbol", sort=True)}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(PER_SYMBOL_COLUMNS))
    table.index.name = "symbol"
    return table.astype({"trades": np.int64}) if len(table) else table


def summarize(
    trades: pd.DataFrame, equity: pd.DataFrame, periods_per_year: float = MINUTES_PER_YEAR
) -> dict[str, float]:
    """Return the headline metrics of a backtest as a flat dict of floats (keys below).

    trades, pnl, win_rate, profit_factor, expectancy (USDT), expectancy_return, tail_loss (return),
    max_drawdown, sharpe, sortino, exposure, turnover, turnover_per_day, total_return, fees,
    slippage, funding, total_costs, start_equity, end_equity, days. Checks both column contracts.
    """
    check_trades(trades)
    check_equity(equity)
    e = equity["equity"].to_numpy(np.float64)
    r = equity_returns(e)
    stats = _trade_stats(trades)
    costs = cost_breakdown(trades)
    days = float(equity["ts"].iloc[-1] - equity["ts"].iloc[0]) / DAY_MS if len(equity) > 1 else math.nan
    to = turnover(trades, equity)
    return {
        "trades": float(len(trades)),
        "pnl": stats["pnl"],
        "win_rate": stats["win_rate"],
        "profit_factor": stats["profit_factor"],
        "expectancy": stats["expectancy"],
        "expectancy_return": stats["expectancy_return"],
        "tail_loss": stats["tail_loss"],
        "max_drawdown": max_drawdown(e),
        "sharpe": sharpe(r, periods_per_year),
        "sortino": sortino(r, periods_per_year),
        "exposure": exposure(equity["open_positions"].to_numpy()),
        "turnover": to,
        "turnover_per_day": to / days if days and days > 0 else math.nan,
        "total_return": float(e[-1] / e[0] - 1.0) if len(e) and e[0] > 0 else math.nan,
        "fees": costs["fees"],
        "slippage": costs["slippage"],
        "funding": costs["funding"],
        "total_costs": costs["total"],
        "start_equity": float(e[0]) if len(e) else math.nan,
        "end_equity": float(e[-1]) if len(e) else math.nan,
        "days": days,
    }
