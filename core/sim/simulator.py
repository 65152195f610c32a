"""``FillSimulator``: the simulator one event at a time, for the shadow executor and the RL environment.

Every method runs one compiled step of ``core.sim.kernel`` on the simulator's state, the same
functions the portfolio backtest loops over. ``step_bar`` runs a whole bar of the book exactly as the
backtest does (so a replay through it reproduces the backtest's trades); ``on_bar``, ``on_mark`` and
``on_funding`` feed one symbol's bar, mark tick or funding settlement; ``open_position`` (risk-checked),
``close_position`` and ``flatten`` are the orders. Time is passed in (epoch ms), never read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from core.config import RiskConfig
from core.errors import DataQualityError
from core.sim import kernel as _k
from core.sim.account import AccountSnapshot
from core.sim.config import SimConfig, risk_vector
from core.sim.orders import ExitFill, MarginTerms, OrderFill
from core.sim.rules import SymbolRules, pack_rules
from core.sim.state import (
    BookState,
    Position,
    SimLogs,
    curve_frame,
    decode_risk_mask,
    events_frame,
    fills_frame,
    position_from_row,
    trades_frame,
)
from core.symbols import validate_internal
from core.time import DAY_MS

_EXIT_REASONS = {"SIGNAL": _k.REASON_SIGNAL, "TIME": _k.REASON_TIME, "FLATTEN": _k.REASON_FLATTEN,
                 "END": _k.REASON_END}  # fmt: skip
_NAN = math.nan
_ORDER_REASONS = {name: _k.REASON_NAMES.index(name)
                  for name in ("SIGNAL", "SL", "TP", "TIME", "FLATTEN", "END")}  # fmt: skip


def _f(x: float | None) -> float:
    return _NAN if x is None else float(x)


class FillSimulator:
    """A book of one-way isolated positions over ``symbols`` with fills by the rules of ``core.sim``.

    ``risk``: the hard guards checked on every entry (None: only the venue and book checks);
    ``rules``: per-symbol filters, leverage brackets and BTC beta (default ``SymbolRules()``).
    Events must come in time order.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        config: SimConfig | None = None,
        risk: RiskConfig | None = None,
        rules: Mapping[str, SymbolRules] | None = None,
    ) -> None:
        self.symbols = tuple(symbols)
        for s in self.symbols:
            validate_internal(s)
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbols repeat: {self.symbols}")
        self.config = config or SimConfig()
        self.risk = risk
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self.cfg = self.config.vector()
        self.lim = risk_vector(risk)
        self.sym, self.brackets = pack_rules(self.symbols, rules)
        self.acct = _k.new_account(self.config.initial_equity_usdt)
        self.pos = _k.new_positions(len(self.symbols))
        self.logs = SimLogs()
        self._req = np.empty(_k.REQ_LEN)
        self._curve: list[np.ndarray] = []

    # --- helpers -----------------------------------------------------------------------------------
    def _k(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise ValueError(
                f"unknown symbol {symbol!r}; the simulator holds {', '.join(self.symbols)}"
            ) from None

    def _at(self, ts_ms: int) -> int:
        ts = int(ts_ms)
        day = self.acct[_k.A_DAY]
        if day >= 0 and ts // DAY_MS < day:
            raise DataQualityError(
                f"simulator: event at {ts} is on a UTC day before the current one ({int(day)})"
            )
        self.logs.ensure_room(self.acct, len(self.symbols))
        return ts

    # --- orders ------------------------------------------------------------------------------------
    def open_position(
        self,
        symbol: str,
        side: int,
        ts_ms: int,
        price: float,
        notional_usdt: float,
        *,
        decision_price: float | None = None,
        atr: float | None = None,
        sl: float | None = None,
        tp: float | None = None,
        leverage: float | None = None,
        mark_price: float | None = None,
        quote_volume_usdt: float | None = None,
        dry_run: bool = False,
    ) -> tuple[str, ...]:
        """Send a market entry; return the risk reason codes that blocked it, () when it filled.

        ``price`` is the fill reference (next bar's open; realtime: the ask for a long, the bid for a
        short); the fill is worse by the slippage of ``atr`` (ATR at the decision, USDT; None: no ATR
        part) over ``decision_price`` (None: ``price``) plus the impact on ``quote_volume_usdt`` (the
        last closed bar's; None: unknown, participation 1). ``sl``/``tp``: trigger prices, or
        distances from the fill with ``SimConfig.protection == "entry_distance"``; None: none.
        ``dry_run`` only checks. A blocked entry is recorded as a risk event.
        """
        k = self._k(symbol)
        ts = self._at(ts_ms)
        reference = float(price)
        mask = _k.event_entry(
            self.acct, self.pos, self.sym, self.brackets, self.cfg, self.lim, self.logs.fills,
            self.logs.events, self._req, k, float(side), ts, reference, _f(mark_price),
            reference if decision_price is None else float(decision_price), _f(atr), float(notional_usdt),
            _f(sl), _f(tp), float(leverage) if leverage is not None else 0.0, _f(quote_volume_usdt), dry_run,
        )  # fmt: skip
        return decode_risk_mask(int(mask))

    def check_entry(self, symbol: str, side: int, ts_ms: int, price: float, notional_usdt: float,
                    **kwargs: float | None) -> tuple[str, ...]:  # fmt: skip
        """Return the reason codes ``open_position`` would give, without sending anything."""
        return self.open_position(symbol, side, ts_ms, price, notional_usdt, dry_run=True, **kwargs)

    def fill_order(
        self,
        symbol: str,
        side: int,
        ts_ms: int,
        qty: float,
        price: float,
        *,
        reduce_only: bool = False,
        leverage: float | None = None,
        mark_price: float | None = None,
        quote_volume_usdt: float | None = None,
        reason: str = "SIGNAL",
        dry_run: bool = False,
    ) -> OrderFill:
        """Send a market order of ``qty`` (base asset) that nets against ``symbol``'s position.

        The paper exchange's order (``kernel.event_order``): it closes an opposite position (all or
        part), then opens or adds the rest on ``side`` (+1 buy, −1 sell), so a larger order flips the
        position and an add averages its entry price. ``price`` is the reference (the ask for a buy,
        the bid for a sell); the fill is worse by ``impact_k`` on ``quote_volume_usdt`` (None: unknown,
        participation 1), with no ATR part. ``reduce_only`` closes at most the position. ``leverage``
        (None: the default) sets the margin of the opened part. ``reason`` (SIGNAL, SL, TP, TIME,
        FLATTEN or END) labels a closed part. Not risk-checked beyond the book: refused only with
        INVALID_ORDER (nothing to reduce, bad input), INSUFFICIENT_MARGIN or LEVERAGE_BRACKET.
        """
        if reason not in _ORDER_REASONS:
            raise ValueError(f"exit reason {reason!r}; expected one of {', '.join(_ORDER_REASONS)}")
        k = self._k(symbol)
        ts = self._at(ts_ms)
        out = np.zeros(_k.ORDER_OUT_LEN)
        mask = _k.event_order(
            self.acct, self.pos, self.sym, self.brackets, self.cfg, self.logs.trades, self.logs.fills, out, k,
            float(side), ts, float(qty), float(price), _f(mark_price), float(leverage) if leverage else 0.0,
            _f(quote_volume_usdt), bool(reduce_only), _ORDER_REASONS[reason], bool(dry_run),
        )  # fmt: skip
        return OrderFill(
            codes=decode_risk_mask(int(mask)),
            side=int(side),
            closed_qty=float(out[_k.O_CLOSED]),
            opened_qty=float(out[_k.O_OPENED]),
            price=float(out[_k.O_PRICE]),
            fee_usdt=float(out[_k.O_FEE]),
            realized_pnl_usdt=float(out[_k.O_REALIZED]),
        )

    def last_exit(self) -> ExitFill | None:
        """Return the book's last exit fill (a close, a partial close, a trigger, a liquidation), or None."""
        n_fills = int(self.acct[_k.A_N_FILLS])
        n_trades = int(self.acct[_k.A_N_TRADES])
        exits = np.flatnonzero(self.logs.fills[:n_fills, _k.F_REASON] != _k.REASON_ENTRY)
        if not len(exits):
            return None
        fill = self.logs.fills[exits[-1]]
        trade = self.logs.trades[n_trades - 1]  # exit fills and trade rows are one to one, in order
        side, qty, entry, price = trade[_k.T_SIDE], trade[_k.T_QTY], trade[_k.T_ENTRY_PRICE], fill[_k.F_PRICE]
        return ExitFill(
            symbol=self.symbols[int(fill[_k.F_SYMBOL])],
            side=int(fill[_k.F_SIDE]),
            qty=float(fill[_k.F_QTY]),
            price=float(price),
            fee_usdt=float(fill[_k.F_FEE]),
            realized_pnl_usdt=float(side * qty * (price - entry)),  # as the kernel's _close books it
            reason=_k.REASON_NAMES[int(fill[_k.F_REASON])],
            ts_ms=int(fill[_k.F_TS]),
        )

    def margin_terms(self, symbol: str) -> MarginTerms | None:
        """Return ``symbol``'s open position's maintenance rate and amount (its bracket), None when flat."""
        k = self._k(symbol)
        if self.pos[k, _k.P_SIDE] == 0:
            return None
        return MarginTerms(float(self.pos[k, _k.P_MMR]), float(self.pos[k, _k.P_CUM]))

    def close_position(
        self,
        symbol: str,
        ts_ms: int,
        price: float,
        *,
        reason: str = "SIGNAL",
        quote_volume_usdt: float | None = None,
    ) -> bool:
        """Close ``symbol``'s position with a market order at ``price`` (bid for a long, ask for a
        short) plus slippage; ``reason`` SIGNAL, TIME, FLATTEN or END. False when flat."""
        if reason not in _EXIT_REASONS:
            raise ValueError(f"exit reason {reason!r}; expected one of {', '.join(_EXIT_REASONS)}")
        k = self._k(symbol)
        ts = self._at(ts_ms)
        return bool(_k.event_exit(self.acct, self.pos, self.sym, self.cfg, self.logs.trades, self.logs.fills,
                                  k, ts, float(price), _f(quote_volume_usdt), _EXIT_REASONS[reason]))  # fmt: skip

    def flatten(
        self, ts_ms: int, prices: Mapping[str, float] | None = None, *, reason: str = "FLATTEN"
    ) -> None:
        """Close every open position at ``prices[symbol]`` (default: its last mark) with ``reason``."""
        if reason not in _EXIT_REASONS:
            raise ValueError(f"exit reason {reason!r}; expected one of {', '.join(_EXIT_REASONS)}")
        ts = self._at(ts_ms)
        prices = prices or {}
        p = np.array([float(prices.get(s, _NAN)) for s in self.symbols])
        volumes = np.full(len(self.symbols), _NAN)
        _k.event_flatten(self.acct, self.pos, self.sym, self.cfg, self.logs.trades, self.logs.fills, ts, p,
                         volumes, _EXIT_REASONS[reason])  # fmt: skip

    def mark_bar_close(self, ts_ms: int, marks: Mapping[str, float]) -> bool:
        """Mark the open positions at their bar's mark close and apply the daily loss limit at ``ts_ms``
        (the bar's close), as the portfolio backtest does at every bar close; return True when the
        limit fired (then ``flatten_requested``: the backtest flattens at the next open).

        ``marks``: mark close by symbol; a held symbol missing from it, or with no price, keeps its
        last mark. No trigger is checked (the bar rule ran already); the UTC day does not roll here.
        """
        ts = self._at(ts_ms)
        for symbol, price in marks.items():
            k = self._k(symbol)
            if self.pos[k, _k.P_SIDE] != 0.0 and math.isfinite(price) and price > 0.0:
                self.pos[k, _k.P_MARK] = float(price)
        _k.revalue(self.acct, self.pos, self.sym)
        return bool(_k.check_daily(self.acct, self.lim, self.logs.events, ts))

    def set_kill_switch(self, on: bool) -> None:
        """Turn the kill-switch on (every entry is blocked with KILL_SWITCH) or off."""
        self.acct[_k.A_KILL_SWITCH] = 1.0 if on else 0.0

    # --- market events -----------------------------------------------------------------------------
    def on_bar(
        self,
        symbol: str,
        ts_ms: int,
        open: float,
        high: float,
        low: float,
        close: float,
        *,
        mark: tuple[float, float, float, float] | None = None,
        quote_volume_usdt: float | None = None,
        funding_rate: float = 0.0,
    ) -> str | None:
        """Run ``symbol``'s 1m bar opening at ``ts_ms``; return the exit reason if the position closed.

        ``mark``: the bar's mark (open, high, low, close); None: the last-price bar stands in for it.
        ``funding_rate``: the summed rates of the symbol's funding times in (ts, ts + 1m], 0: none.
        """
        k = self._k(symbol)
        ts = self._at(ts_ms)
        mo, mh, ml, mc = (open, high, low, close) if mark is None else mark
        reason = _k.event_bar(self.acct, self.pos, self.sym, self.cfg, self.lim, self.logs.trades,
                              self.logs.fills, self.logs.events, k, ts, float(open), float(close), float(mo),
                              float(mh), float(ml), float(mc), _f(quote_volume_usdt), float(funding_rate))  # fmt: skip
        return _k.REASON_NAMES[reason] if reason else None

    def on_mark(
        self,
        symbol: str,
        ts_ms: int,
        mark_price: float,
        *,
        bid: float | None = None,
        ask: float | None = None,
        quote_volume_usdt: float | None = None,
    ) -> str | None:
        """Apply a realtime mark tick (with the book's best bid/ask); return the exit reason if closed."""
        k = self._k(symbol)
        ts = self._at(ts_ms)
        reason = _k.event_mark(self.acct, self.pos, self.sym, self.cfg, self.lim, self.logs.trades,
                               self.logs.fills, self.logs.events, k, ts, float(mark_price), _f(bid), _f(ask),
                               _f(quote_volume_usdt))  # fmt: skip
        return _k.REASON_NAMES[reason] if reason else None

    def on_funding(self, symbol: str, ts_ms: int, rate: float, mark_price: float | None = None) -> None:
        """Settle a funding time of ``symbol``: ``side·qty·mark·rate`` paid (None: the last mark)."""
        k = self._k(symbol)
        ts = self._at(ts_ms)
        _k.event_funding(self.acct, self.pos, self.sym, self.lim, self.logs.events, k, ts, float(rate),
                         _f(mark_price))  # fmt: skip

    def step_bar(
        self,
        ts_ms: int,
        bar: Mapping[str, np.ndarray],
        decision: Mapping[str, np.ndarray] | None = None,
        *,
        close_at_end: bool = False,
    ) -> None:
        """Run one bar of the whole book exactly as the portfolio backtest does (``portfolio_bar``).

        ``bar``: arrays over ``symbols`` of open, close, mark_open, mark_high, mark_low, mark_close,
        quote_volume and funding_rate of the bar opening at ``ts_ms``. ``decision``: the previous
        bar's close, atr, quote_volume and signal rows (direction, exits, size, sl, tp, leverage),
        or None (no decision yet). Appends the bar-close row to ``equity_curve()``.
        """
        ts = self._at(ts_ms)
        m = len(self.symbols)

        def col(source: Mapping[str, np.ndarray], name: str, dtype: type = np.float64) -> np.ndarray:
            a: np.ndarray = np.ascontiguousarray(source[name], dtype)
            if a.shape != (m,):
                raise ValueError(f"step_bar: {name} must have shape ({m},), got {a.shape}")
            return a

        b = {n: col(bar, n) for n in ("open", "close", "mark_open", "mark_high", "mark_low", "mark_close",
                                      "quote_volume", "funding_rate")}  # fmt: skip
        if decision is None:
            d = {"direction": np.zeros(m, np.int8), "exits": np.zeros(m, np.int8)}
            d.update(
                {
                    n: np.full(m, _NAN)
                    for n in ("size", "sl", "tp", "leverage", "close", "atr", "quote_volume")
                }
            )
        else:
            d = {n: col(decision, n, np.int8) for n in ("direction", "exits")}
            d.update(
                {
                    n: col(decision, n)
                    for n in ("size", "sl", "tp", "leverage", "close", "atr", "quote_volume")
                }
            )
        row = np.empty(_k.CURVE_LEN)
        _k.portfolio_bar(self.acct, self.pos, self.sym, self.brackets, self.cfg, self.lim, self.logs.trades,
                         self.logs.fills, self.logs.events, self._req, ts, decision is not None,
                         d["direction"], d["exits"], d["size"], d["sl"], d["tp"], d["leverage"], d["close"],
                         d["atr"], d["quote_volume"], b["open"], b["close"], b["mark_open"], b["mark_high"],
                         b["mark_low"], b["mark_close"], b["quote_volume"], b["funding_rate"], close_at_end,
                         row)  # fmt: skip
        self._curve.append(row)

    # --- state -------------------------------------------------------------------------------------
    @property
    def equity(self) -> float:
        """Wallet + unrealized PnL at the last marks, USDT."""
        return float(self.acct[_k.A_EQUITY])

    @property
    def wallet(self) -> float:
        """Wallet balance: initial equity + realized PnL − fees − funding paid, USDT."""
        return float(self.acct[_k.A_WALLET])

    @property
    def unrealized(self) -> float:
        return float(self.acct[_k.A_UNREALIZED])

    @property
    def used_margin(self) -> float:
        """Isolated margin of the open positions, USDT."""
        return float(self.acct[_k.A_USED_MARGIN])

    @property
    def daily_pnl(self) -> float:
        """Equity change since the start of the current UTC day, USDT."""
        return float(self.acct[_k.A_EQUITY] - self.acct[_k.A_DAY_START_EQUITY])

    @property
    def consecutive_losses(self) -> int:
        return int(self.acct[_k.A_CONSECUTIVE_LOSSES])

    @property
    def trading_enabled(self) -> bool:
        """False from the daily loss limit firing until the next UTC day."""
        return bool(self.acct[_k.A_TRADING_ENABLED])

    @property
    def flatten_requested(self) -> bool:
        """True after the daily loss limit fired until a flatten ran (``flatten`` or ``step_bar``)."""
        return bool(self.acct[_k.A_FLATTEN_REQUESTED])

    @property
    def open_positions(self) -> int:
        return int(self.acct[_k.A_OPEN_POSITIONS])

    def position(self, symbol: str) -> Position | None:
        """Return ``symbol``'s open position, None when flat."""
        k = self._k(symbol)
        return position_from_row(symbol, self.pos[k]) if self.pos[k, _k.P_SIDE] != 0 else None

    def positions(self) -> dict[str, Position]:
        """Return the open positions by symbol."""
        return {
            s: position_from_row(s, self.pos[k]) for k, s in enumerate(self.symbols) if self.pos[k, _k.P_SIDE]
        }

    def book_state(self) -> BookState:
        """Return a copy of the account and the positions (not the logs), to ``restore_book`` later."""
        return BookState(self.symbols, self.acct.copy(), self.pos.copy())

    def restore_book(self, state: BookState) -> None:
        """Replace the account and the positions by ``state`` (a ``book_state`` of the same symbols,
        arrays of the same sizes, any shape); ValueError when it does not fit this simulator. The
        trade, fill and risk-event logs restart empty (they are this simulator's, not the book's)."""
        if tuple(state.symbols) != self.symbols:
            raise ValueError(
                f"book state of symbols {list(state.symbols)}, simulator of {list(self.symbols)}"
            )
        account = np.asarray(state.account, np.float64)
        positions = np.asarray(state.positions, np.float64)
        if account.size != self.acct.size or positions.size != self.pos.size:
            raise ValueError(
                f"book state of {account.size} account and {positions.size} position values, "
                f"simulator of {self.acct.size} and {self.pos.size}"
            )
        self.acct[:] = account.reshape(self.acct.shape)
        self.pos[:] = positions.reshape(self.pos.shape)
        # the logs are not part of the book (``book_state``): this simulator's trades, fills and risk
        # events start empty, so their counts do too — the restored counts would index rows this
        # simulator never wrote (NaN: an IndexError at the first ``trades()``, e.g. a recovered
        # execution actor's end-of-session flatten)
        self.acct[[_k.A_N_TRADES, _k.A_N_FILLS, _k.A_N_EVENTS]] = 0.0

    def snapshot(self, ts_ms: int) -> AccountSnapshot:
        """Return the account as ``core.risk.check_risk`` takes it, for a request at ``ts_ms``."""
        ts = int(ts_ms)
        same_day = ts // DAY_MS == self.acct[_k.A_DAY]
        same_second = ts // 1000 == self.acct[_k.A_ORDER_SECOND]
        return AccountSnapshot(
            equity_usdt=self.equity,
            wallet_usdt=self.wallet,
            used_margin_usdt=self.used_margin,
            day_start_equity_usdt=float(self.acct[_k.A_DAY_START_EQUITY]) if same_day else self.equity,
            positions={s: p.side * p.qty * p.mark_price for s, p in self.positions().items()},
            trading_enabled=self.trading_enabled or not same_day,
            kill_switch=bool(self.acct[_k.A_KILL_SWITCH]),
            orders_this_second=int(self.acct[_k.A_ORDERS_IN_SECOND]) if same_second else 0,
            orders_today=int(self.acct[_k.A_ORDERS_TODAY]) if same_day else 0,
        )

    def trades(self) -> pd.DataFrame:
        """Closed trades (``core.sim.state.trades_frame``)."""
        return trades_frame(self.logs.trades, int(self.acct[_k.A_N_TRADES]), self.symbols)

    def fills(self) -> pd.DataFrame:
        """Every fill, entries and exits (``core.sim.state.fills_frame``)."""
        return fills_frame(self.logs.fills, int(self.acct[_k.A_N_FILLS]), self.symbols)

    def risk_events(self) -> pd.DataFrame:
        """Blocked entries and account risk events (``core.sim.state.events_frame``)."""
        return events_frame(self.logs.events, int(self.acct[_k.A_N_EVENTS]), self.symbols)

    def equity_curve(self) -> pd.DataFrame:
        """The bar-close rows of ``step_bar`` calls (``core.sim.state.curve_frame``)."""
        rows = np.array(self._curve) if self._curve else np.empty((0, _k.CURVE_LEN))
        return curve_frame(rows)
