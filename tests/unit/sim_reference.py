"""Plain-Python reference of the fill simulator and risk guard: the ``core.sim`` / ``core.risk``
docstrings, literally, one bar and one position at a time, with dicts and floats (no kernel code).

``reference_backtest`` returns the same frames as ``core.sim.run_backtest`` (trades, fills, risk
events, equity curve) for tests to compare row by row; ``random_case`` draws random markets,
signals, configurations, venue rules and risk limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.config import RiskConfig
from core.signals import BarSignals, empty_signals
from core.sim import MarketPanel, SimConfig, SymbolFilters, SymbolRules
from core.sim.rules import DEFAULT_BRACKETS, LeverageBracket
from core.time import DAY_MS, MINUTE_MS

REASONS = ("ENTRY", "TP", "SL", "LIQUIDATION", "TIME", "SIGNAL", "FLATTEN", "END")
CODES = ("INVALID_ORDER", "KILL_SWITCH", "TRADING_DISABLED", "DAILY_LOSS_LIMIT", "POSITION_OPEN",
         "MAX_POSITIONS", "MAX_USED_MARGIN", "INSUFFICIENT_MARGIN", "MAX_TOTAL_NOTIONAL",
         "MAX_DIRECTIONAL_NOTIONAL", "MAX_SYMBOL_NOTIONAL", "MAX_BTC_BETA_NOTIONAL", "ORDER_RATE_SECOND",
         "ORDER_RATE_DAY", "MAX_SLIPPAGE", "FILTER_MIN_NOTIONAL", "FILTER_MARKET_LOT_SIZE", "FILTER_PRICE",
         "LEVERAGE_BRACKET", "NO_PROTECTION")  # fmt: skip
ALWAYS_ON = {"INVALID_ORDER", "KILL_SWITCH", "POSITION_OPEN", "INSUFFICIENT_MARGIN", "FILTER_MIN_NOTIONAL",
             "FILTER_MARKET_LOT_SIZE", "FILTER_PRICE", "LEVERAGE_BRACKET", "NO_PROTECTION"}  # fmt: skip


def fin(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def pos_price(x: float) -> bool:
    return fin(x) and x > 0


@dataclass
class Pos:
    side: int
    qty: float
    entry: float
    entry_ref: float
    entry_ts: int
    sl: float
    tp: float
    liq: float
    margin: float
    initial_margin: float
    leverage: float
    mmr: float
    cum: float
    slip: float
    entry_fee: float
    entry_slippage: float
    mark: float
    pid: int
    funding: float = 0.0
    bars: int = 0


@dataclass
class Book:
    cfg: SimConfig
    risk: RiskConfig | None
    rules: list[SymbolRules]
    symbols: tuple[str, ...]
    wallet: float = 0.0
    pos: dict[int, Pos] = field(default_factory=dict)
    day: int = -1
    day_start: float = 0.0
    enabled: bool = True
    flatten: bool = False
    order_second: int = -1
    in_second: int = 0
    today: int = 0
    losses: int = 0
    opened: int = 0
    trades: list[dict] = field(default_factory=list)
    fills: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)

    # --- account ----------------------------------------------------------------------------------
    def unrealized(self) -> float:
        u = 0.0
        for k in sorted(self.pos):
            p = self.pos[k]
            u += p.side * p.qty * (p.mark - p.entry)
        return u

    def equity(self) -> float:
        return self.wallet + self.unrealized()

    def exposure(self) -> tuple[float, float, float, float, float]:
        used = total = long_n = short_n = beta = 0.0
        for k in sorted(self.pos):
            p = self.pos[k]
            n = p.qty * p.mark
            used += p.margin
            total += n
            if p.side > 0:
                long_n += n
            else:
                short_n += n
            beta += p.side * self.rules[k].btc_beta * n
        return used, total, long_n, short_n, beta

    def roll(self, ts: int) -> None:
        if ts // DAY_MS != self.day:
            self.day = ts // DAY_MS
            self.day_start = self.equity()
            self.enabled = True
            self.today = 0

    def count_order(self, ts: int) -> None:
        if ts // 1000 != self.order_second:
            self.order_second = ts // 1000
            self.in_second = 0
        self.in_second += 1
        self.today += 1

    # --- risk -------------------------------------------------------------------------------------
    def codes(self, k, side, qty, price, ref, mark, lev, max_lev, sl, tp, ts, has_position) -> list[str]:
        r = self.risk
        if side not in (1, -1) or not pos_price(price) or not (lev >= 1 and math.isfinite(lev)):
            return ["INVALID_ORDER"]
        f = self.rules[k].filters
        out = set()
        n = qty * price
        margin = n / lev
        fee = self.cfg.fee_rate * n
        eq = self.equity()
        used, total, long_n, short_n, beta = self.exposure()
        if has_position:
            out.add("POSITION_OPEN")
        if margin + fee > self.wallet - used:
            out.add("INSUFFICIENT_MARGIN")
        m_ = mark if pos_price(mark) else price
        if qty * m_ < f.min_notional_usdt:
            out.add("FILTER_MIN_NOTIONAL")
        if qty <= 0 or qty < f.min_qty * (1 - 1e-9) or qty > f.max_qty:
            out.add("FILTER_MARKET_LOT_SIZE")
        for t in (sl, tp):
            if fin(t) and (t <= 0 or t < f.min_price or t > f.max_price):
                out.add("FILTER_PRICE")
        if not fin(max_lev) or lev > max_lev:
            out.add("LEVERAGE_BRACKET")
        if not (fin(sl) and sl > 0 and (sl - price) * side < 0):
            out.add("NO_PROTECTION")
        if r is not None:
            if not self.enabled:
                out.add("TRADING_DISABLED")
            if self.day_start > 0 and eq - self.day_start <= -r.daily_loss_limit_pct * self.day_start:
                out.add("DAILY_LOSS_LIMIT")
            if len(self.pos) + 1 > r.max_positions:
                out.add("MAX_POSITIONS")
            if eq <= 0 or used + margin > r.max_used_margin_pct * eq:
                out.add("MAX_USED_MARGIN")
            if eq <= 0 or total + n > r.max_total_notional_pct * eq:
                out.add("MAX_TOTAL_NOTIONAL")
            if eq <= 0 or (long_n if side > 0 else short_n) + n > r.max_directional_notional_pct * eq:
                out.add("MAX_DIRECTIONAL_NOTIONAL")
            if eq <= 0 or n > r.max_symbol_notional_pct * eq:  # the symbol is flat when we try
                out.add("MAX_SYMBOL_NOTIONAL")
            new_beta = beta + side * self.rules[k].btc_beta * n
            if abs(new_beta) > abs(beta) and (eq <= 0 or abs(new_beta) > r.max_btc_beta_notional_pct * eq):
                out.add("MAX_BTC_BETA_NOTIONAL")
            in_second = self.in_second if ts // 1000 == self.order_second else 0
            if in_second + 1 > r.max_orders_per_s:
                out.add("ORDER_RATE_SECOND")
            if self.today + 1 > r.max_orders_per_day:
                out.add("ORDER_RATE_DAY")
            if pos_price(ref) and abs(price - ref) > r.max_slippage_pct * ref:
                out.add("MAX_SLIPPAGE")
        return [c for c in CODES if c in out]

    # --- fills ------------------------------------------------------------------------------------
    def slippage(self, base: float, notional: float, volume: float) -> float:
        if self.cfg.impact_k <= 0:
            return base
        part = min(1.0, notional / volume) if (fin(volume) and volume > 0) else 1.0
        return base + self.cfg.impact_k * math.sqrt(max(part, 0.0))

    def entry(self, k, side, ts, ref, mark, decision, atr, target, sl_level, tp_level, lev, volume) -> None:
        cfg = self.cfg
        base = cfg.slippage_k * atr / decision if (pos_price(atr) and pos_price(decision)) else 0.0
        if not lev >= 1:
            lev = float(cfg.default_leverage)
        s = self.slippage(base, target, volume)
        fill = ref * (1 + side * s)
        step = self.rules[k].filters.step_size
        qty = 0.0
        if fill > 0 and target > 0:
            qty = target / fill
            if step > 0:
                qty = math.floor(qty / step + 1e-9) * step
        tick = self.rules[k].filters.tick_size
        sl = tp = math.nan
        by_distance = cfg.protection == "entry_distance"
        if sl_level > 0:
            sl = round_toward(fill - side * sl_level if by_distance else sl_level, tick, fill)
        if tp_level > 0:
            tp = round_toward(fill + side * tp_level if by_distance else tp_level, tick, fill)
        notional = qty * fill
        bracket = next((b for b in self.rules[k].brackets if notional < b.notional_cap_usdt), None)
        max_lev = float(bracket.max_leverage) if bracket is not None else math.nan
        codes = self.codes(k, side, qty, fill if fin(fill) else math.nan, decision, mark, lev, max_lev, sl, tp,
                           ts, k in self.pos)  # fmt: skip
        if codes:
            self.events.append({"ts": ts, "symbol": self.symbols[k], "side": side, "codes": ",".join(codes)})
            return
        assert bracket is not None
        margin = notional / lev
        fee = cfg.fee_rate * notional
        liq = (margin + bracket.maint_amount_usdt - side * qty * fill) / (
            qty * bracket.maint_margin_rate - side * qty
        )
        p = Pos(side, qty, fill, ref, ts, sl, tp, liq, margin, margin, lev, bracket.maint_margin_rate,
                bracket.maint_amount_usdt, base, fee, side * qty * (fill - ref),
                mark if pos_price(mark) else ref, self.opened)  # fmt: skip
        self.opened += 1
        self.pos[k] = p
        self.wallet -= fee
        self.count_order(ts)
        self.fills.append({"position_id": p.pid, "symbol": self.symbols[k], "ts": ts, "side": side, "qty": qty,
                           "price": fill, "reference_price": ref, "fee": fee, "reason": "ENTRY"})  # fmt: skip

    def close(self, k, ts, ref, fill, fee, reason) -> None:
        p = self.pos.pop(k)
        exit_slip = p.side * p.qty * (ref - fill)
        fees = p.entry_fee + fee
        pnl = p.side * p.qty * (fill - p.entry) - fees - p.funding
        self.wallet += p.side * p.qty * (fill - p.entry) - fee
        self.losses = self.losses + 1 if pnl < 0 else 0
        self.trades.append({
            "symbol": self.symbols[k], "side": p.side, "entry_ts": p.entry_ts, "exit_ts": ts,
            "entry_price": p.entry, "exit_price": fill, "qty": p.qty, "notional": p.qty * p.entry,
            "exit_reason": reason, "fees": fees, "slippage": p.entry_slippage + exit_slip, "funding": p.funding,
            "pnl": pnl, "position_id": p.pid, "entry_reference_price": p.entry_ref, "exit_reference_price": ref,
            "leverage": p.leverage, "initial_margin": p.initial_margin, "liquidation_price": p.liq,
            "sl_price": p.sl, "tp_price": p.tp, "gross_pnl": p.side * p.qty * (ref - p.entry_ref),
            "bars_held": p.bars,
        })  # fmt: skip
        self.fills.append({"position_id": p.pid, "symbol": self.symbols[k], "ts": ts, "side": -p.side,
                           "qty": p.qty, "price": fill, "reference_price": ref, "fee": fee, "reason": reason})  # fmt: skip

    def market_exit(self, k, ts, ref, volume, reason, is_order) -> None:
        if k not in self.pos or not pos_price(ref):
            return
        p = self.pos[k]
        s = self.slippage(p.slip, p.qty * ref, volume)
        fill = ref * (1 - p.side * s)
        if is_order:
            self.count_order(ts)
        self.close(k, ts, ref, fill, self.cfg.fee_rate * p.qty * fill, reason)

    def liquidate(self, k, ts) -> None:
        p = self.pos[k]
        self.close(k, ts, p.liq, p.liq, p.margin + p.side * p.qty * (p.liq - p.entry), "LIQUIDATION")

    def flatten_all(self, ts, prices, volumes, reason) -> None:
        for k in sorted(self.pos):
            price = prices[k] if pos_price(prices[k]) else self.pos[k].mark
            self.market_exit(k, ts, price, volumes[k], reason, True)
        self.flatten = False

    def bar(self, k, ts, lo, lc, mo, mh, ml, mc, volume, rate) -> None:
        p = self.pos[k]
        close_ts = ts + self.cfg.bar_ms
        if rate != 0 and fin(rate):
            mark = mc if pos_price(mc) else p.mark
            paid = p.side * p.qty * mark * rate
            p.funding += paid
            p.margin -= paid
            self.wallet -= paid
            p.liq = (p.margin + p.cum - p.side * p.qty * p.entry) / (p.qty * p.mmr - p.side * p.qty)
        if not all(fin(x) for x in (lo, lc, mo, mh, ml, mc)):
            return
        p.bars += 1
        d = p.side
        adverse, favourable = (ml, mh) if d > 0 else (mh, ml)

        def beyond(x: float, level: float, against: bool) -> bool:  # x at or past level, adverse side
            if not fin(level):
                return False
            return (x <= level if d > 0 else x >= level) if against else (x >= level if d > 0 else x <= level)

        liq_hit, liq_gap = beyond(adverse, p.liq, True), beyond(mo, p.liq, True)
        sl_hit, sl_gap = beyond(adverse, p.sl, True), beyond(mo, p.sl, True)
        tp_hit, tp_gap = beyond(favourable, p.tp, False), beyond(mo, p.tp, False)
        liq_first = liq_gap or not sl_hit or (d > 0 and p.liq >= p.sl) or (d < 0 and p.liq <= p.sl)
        if liq_hit and liq_first:
            self.liquidate(k, close_ts)
            return
        worse = min if d > 0 else max
        if sl_hit:
            self.market_exit(k, close_ts, worse(p.sl, lo) if sl_gap else p.sl, volume, "SL", False)
            return
        if tp_hit:
            self.market_exit(k, close_ts, worse(p.tp, lo) if tp_gap else p.tp, volume, "TP", False)
            return
        p.mark = mc
        if self.cfg.max_hold_bars and p.bars >= self.cfg.max_hold_bars:
            self.market_exit(k, close_ts, lc, volume, "TIME", True)


def round_toward(price: float, tick: float, anchor: float) -> float:
    if not tick > 0 or not fin(price):
        return price
    if price < anchor:
        return math.ceil(price / tick - 1e-9) * tick
    return math.floor(price / tick + 1e-9) * tick


def reference_backtest(
    panel: MarketPanel,
    signals: BarSignals,
    cfg: SimConfig,
    risk: RiskConfig | None,
    rules: dict[str, SymbolRules],
    close_at_end: bool = True,
) -> dict[str, pd.DataFrame]:
    """Run the book bar by bar (spec: ``core.sim``); return trades, fills, events and curve frames."""
    n, m = panel.shape
    book = Book(cfg, risk, [rules.get(s, SymbolRules()) for s in panel.symbols], panel.symbols)
    book.wallet = cfg.initial_equity_usdt
    book.day_start = book.wallet
    col = {name: getattr(panel, name).tolist() for name in ("open", "close", "mark_open", "mark_high",
           "mark_low", "mark_close", "quote_volume", "funding_rate", "atr")}  # fmt: skip
    sig = {name: getattr(signals, name).tolist() for name in ("direction", "size_fraction", "leverage",
           "sl_price", "tp_price", "exit_long", "exit_short")}  # fmt: skip
    for j in range(n):
        ts = int(panel.ts[j])
        d = max(j - 1, 0)
        if book.flatten:
            book.flatten_all(ts, col["open"][j], col["quote_volume"][d], "FLATTEN")
        book.roll(ts)
        if j > 0:
            for k in range(m):
                direction = sig["direction"][d][k]
                exit_long, exit_short = sig["exit_long"][d][k], sig["exit_short"][d][k]
                p = book.pos.get(k)
                if p is not None and ((p.side > 0 and exit_long) or (p.side < 0 and exit_short)):
                    book.market_exit(k, ts, col["open"][j][k], col["quote_volume"][d][k], "SIGNAL", True)
                if direction == 0 or k in book.pos:
                    continue
                size = sig["size_fraction"][d][k]
                target = size * book.equity() if cfg.sizing == "equity_fraction" else size
                book.entry(k, direction, ts, col["open"][j][k], col["mark_open"][j][k], col["close"][d][k],
                           col["atr"][d][k], target, sig["sl_price"][d][k], sig["tp_price"][d][k],
                           float(sig["leverage"][d][k]), col["quote_volume"][d][k])  # fmt: skip
        for k in range(m):
            if k in book.pos:
                book.bar(k, ts, *(col[x][j][k] for x in ("open", "close", "mark_open", "mark_high", "mark_low",
                                                          "mark_close", "quote_volume", "funding_rate")))  # fmt: skip
        close_ts = ts + cfg.bar_ms
        if close_at_end and j == n - 1:
            book.flatten_all(close_ts, col["close"][j], col["quote_volume"][j], "END")
        used, total, long_n, short_n, _ = book.exposure()
        equity = book.equity()
        limit = -risk.daily_loss_limit_pct * book.day_start if risk is not None else -math.inf
        if risk is not None and book.enabled and book.day_start > 0 and equity - book.day_start <= limit:
            book.enabled = False
            book.flatten = True
            book.events.append({"ts": close_ts, "symbol": "", "side": 0, "codes": "DAILY_LOSS_LIMIT"})
        book.curve.append({"ts": close_ts, "equity": equity, "wallet": book.wallet, "unrealized": book.unrealized(),
                           "used_margin": used, "open_positions": len(book.pos), "total_notional": total,
                           "long_notional": long_n, "short_notional": short_n,
                           "daily_pnl": equity - book.day_start, "trading_enabled": book.enabled,
                           "consecutive_losses": book.losses})  # fmt: skip
    trades = pd.DataFrame(book.trades)
    if len(trades):
        trades["return"] = trades["pnl"] / trades["notional"]
    return {"trades": trades, "fills": pd.DataFrame(book.fills), "events": pd.DataFrame(book.events),
            "curve": pd.DataFrame(book.curve)}  # fmt: skip


# --- random cases ------------------------------------------------------------------------------------

REAL_LIKE_BRACKETS = (  # BTCUSDT's first brackets (leverage_brackets.json), scaled down 100×
    LeverageBracket(0, 500, 0.004, 0, 125), LeverageBracket(500, 6_000, 0.005, 0.5, 100),
    LeverageBracket(6_000, 30_000, 0.0065, 9.5, 75), LeverageBracket(30_000, 120_000, 0.01, 114.5, 50),
)  # fmt: skip


def random_case(
    rng: np.random.Generator, n: int, m: int, start_ms: int, cfg: SimConfig
) -> tuple[MarketPanel, BarSignals]:
    """A random panel (walks with gaps, wicks, mark basis, missing bars, funding) and random signals
    (sizes and protection levels in the form ``cfg`` reads them)."""
    symbols = tuple(f"S{k}USDT" for k in range(m))
    shape = (n, m)
    vol = rng.uniform(0.001, 0.01, m)
    ret = rng.standard_normal(shape) * vol
    jumps = rng.random(shape) < 0.03
    ret[jumps] += rng.choice([-1.0, 1.0], int(jumps.sum())) * rng.uniform(5, 40, int(jumps.sum())) * vol[
        np.nonzero(jumps)[1]]  # fmt: skip
    price0 = rng.uniform(0.5, 500, m)
    close = price0 * np.exp(np.cumsum(ret, axis=0))
    open_ = np.vstack([price0[None, :], close[:-1]])
    gap = rng.random(shape) < 0.05
    open_[gap] *= np.exp(rng.standard_normal(int(gap.sum())) * 5 * vol[np.nonzero(gap)[1]])
    basis = np.where(rng.random(m) < 0.3, 0.0, 1.0) * rng.standard_normal(shape) * 0.002
    mark_open, mark_close = open_ * (1 + basis), close * (1 + basis)
    wick = rng.exponential(1.0, (2, n, m)) * vol
    mark_high = np.maximum(mark_open, mark_close) * (1 + wick[0])
    mark_low = np.minimum(mark_open, mark_close) * (1 - wick[1])
    quote_volume = np.where(rng.random(shape) < 0.05, 0.0, rng.lognormal(10, 2, shape))
    atr = np.where(rng.random(shape) < 0.05, np.nan, close * vol * rng.uniform(1, 6, shape))
    funding = np.where(rng.random(shape) < 0.03, rng.normal(0, 0.002, shape), 0.0)
    missing = rng.random(shape) < 0.02
    for a in (open_, close, mark_open, mark_high, mark_low, mark_close):
        a[missing] = np.nan
    quote_volume[missing] = np.nan
    panel = MarketPanel(
        symbols, start_ms + MINUTE_MS * np.arange(n, dtype=np.int64), *(np.ascontiguousarray(a) for a in (
            open_, close, mark_open, mark_high, mark_low, mark_close, quote_volume, funding, atr)),
    )  # fmt: skip
    sig = empty_signals(shape)
    density = rng.uniform(0.02, 0.3)
    direction = np.where(rng.random(shape) < density, rng.choice([-1, 1], shape), 0).astype(np.int8)
    sig.direction[:] = direction
    size = rng.uniform(0.02, 0.8, shape) * (
        1.0 if cfg.sizing == "equity_fraction" else cfg.initial_equity_usdt
    )
    sig.size_fraction[:] = np.where(direction != 0, size, 0.0)
    sig.leverage[:] = np.where(direction != 0, rng.choice([0, 1, 2, 3, 5, 10, 20, 50, 100, 200], shape), 0)
    dist_sl = close * vol * rng.uniform(0.2, 8, shape)
    dist_tp = close * vol * rng.uniform(0.2, 8, shape)
    if cfg.protection == "price":
        sl, tp = close - direction * dist_sl, close + direction * dist_tp
    else:
        sl, tp = dist_sl, dist_tp
    sig.sl_price[:] = np.where((direction != 0) & (rng.random(shape) < 0.9), sl, np.nan)
    sig.tp_price[:] = np.where((direction != 0) & (rng.random(shape) < 0.9), tp, np.nan)
    sig.exit_long[:] = rng.random(shape) < 0.03
    sig.exit_short[:] = rng.random(shape) < 0.03
    return panel, sig


def random_rules(rng: np.random.Generator, panel: MarketPanel) -> dict[str, SymbolRules]:
    """Random filters (step, tick, min notional, price bounds), brackets and betas per symbol."""
    out = {}
    for k, s in enumerate(panel.symbols):
        price = float(np.nanmedian(panel.close[:, k]))
        if rng.random() < 0.3:
            out[s] = SymbolRules()
            continue
        step = float(10.0 ** np.floor(np.log10(10.0 / price))) * rng.choice([0.0, 1.0, 10.0])
        tick = float(10.0 ** np.floor(np.log10(price / 1000))) * rng.choice([0.0, 1.0])
        filters = SymbolFilters(
            tick_size=tick, min_price=price * rng.choice([0.0, 0.98]), max_price=price * rng.choice([1e9, 1.02]),
            step_size=step, min_qty=step, max_qty=float(rng.choice([1e12, 5.0 * 1000 / price])),
            min_notional_usdt=float(rng.choice([0.0, 5.0, 100.0])),
        )  # fmt: skip
        brackets = REAL_LIKE_BRACKETS if rng.random() < 0.5 else DEFAULT_BRACKETS
        out[s] = SymbolRules(filters, brackets, float(rng.uniform(-0.5, 2.0)))
    return out


def random_risk(rng: np.random.Generator) -> RiskConfig | None:
    if rng.random() < 0.25:
        return None
    total = float(rng.uniform(0.2, 4.0))
    return RiskConfig(
        max_used_margin_pct=float(rng.uniform(0.05, 1.0)),
        daily_loss_limit_pct=float(rng.uniform(0.002, 0.1)),
        max_positions=int(rng.integers(1, 6)),
        max_total_notional_pct=total,
        max_directional_notional_pct=float(rng.uniform(0.1, 1.0)) * total,
        max_symbol_notional_pct=float(rng.uniform(0.05, 1.5)),
        max_btc_beta_notional_pct=float(rng.uniform(0.1, 3.0)),
        max_orders_per_s=int(rng.integers(1, 4)),
        max_orders_per_day=int(rng.integers(2, 60)),
        max_slippage_pct=float(rng.choice([0.001, 0.01, 0.2])),
    )


def random_config(rng: np.random.Generator) -> SimConfig:
    return SimConfig(
        fee_rate=float(rng.choice([0.0, 0.0002, 0.0004, 0.001])),
        slippage_k=float(rng.choice([0.0, 0.15, 0.5])),
        impact_k=float(rng.choice([0.0, 0.0005, 0.01])),
        max_hold_bars=int(rng.choice([0, 3, 20, 60])),
        initial_equity_usdt=float(rng.choice([1_000.0, 10_000.0])),
        default_leverage=int(rng.choice([1, 3, 20])),
        sizing="equity_fraction" if rng.random() < 0.7 else "notional_usdt",
        protection="price" if rng.random() < 0.7 else "entry_distance",
    )
