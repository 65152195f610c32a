"""Anomaly monitor and circuit breaker (issue 18, seed 003 §Layer 2–3): pause entries on a price jump,
a spread blow-out or an error spike. Pure: times are passed in, nothing is read or written here.

Triggers (``AnomalyConfig``), judged per symbol on every tick (``on_tick``) and on the error count
(``on_error`` / ``check``):

- ``price_jump``: the return between the tick and the price ``jump_window_ms`` before it exceeds
  ``jump_bps`` (a fixed bound), or ``jump_sigma_k`` × the recent volatility of returns over that
  window (the standard deviation of the last ``vol_samples`` window returns, once at least
  ``vol_min_samples`` were seen);
- ``spread``: (ask − bid) / mid beyond ``spread_bps``, judged on a tick with bid and ask or on a quote
  alone (``on_quote``: a book ticker, which moves no price series);
- ``error_rate``: more than ``errors_per_minute`` order/REST errors within the last 60 s.

The first condition to hold trips the breaker: one ``trip`` event per onset of a condition (a
condition that keeps holding produces nothing more; another trigger's onset while tripped is its
own ``trip`` event). The caller pauses entries on a trip (``trading.stop_entries`` with source
``circuit_breaker``). Auto-reset: once ``cooldown_ms`` has passed since the latest onset *and* no
condition holds any more (a price jump stops holding when ``jump_window_ms`` has passed since the
jump tick; a spread when a tick shows a normal spread; the error rate when errors leave the window),
``check`` returns one ``reset`` event and the caller resumes entries — only if it was the breaker
that paused them. A condition still holding at the end of the cool-down keeps the breaker tripped.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AnomalyConfig", "AnomalyEvent", "AnomalyMonitor", "Trigger"]

Trigger = Literal["price_jump", "spread", "error_rate"]


class AnomalyConfig(BaseModel):
    """Thresholds of the anomaly monitor (defaults for 1 s mark ticks of USDⓈ-M perpetuals)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jump_window_ms: int = Field(60_000, gt=0, description="return horizon of the price-jump check, ms")
    jump_bps: float = Field(300.0, gt=0, description="a |return| over the window beyond this trips, bps")
    jump_sigma_k: float = Field(8.0, gt=0, description="a |return| beyond k × recent volatility trips")
    vol_samples: int = Field(240, ge=2, description="window returns kept for the recent volatility")
    vol_min_samples: int = Field(30, ge=2, description="returns needed before the k-sigma check applies")
    spread_bps: float = Field(50.0, gt=0, description="a bid/ask spread beyond this trips, bps of mid")
    errors_per_minute: int = Field(10, ge=1, description="more order/REST errors than this within 60 s trip")
    cooldown_ms: int = Field(
        300_000, ge=0, description="the breaker stays tripped at least this after an onset, ms"
    )


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """``trip`` (``trigger`` began to hold) or ``reset`` (cool-down over, nothing holds)."""

    kind: Literal["trip", "reset"]
    ts_ms: int
    trigger: Trigger | None
    symbol: str | None
    detail: str
    value: float = math.nan

    @property
    def event_kind(self) -> str:
        """The ``events`` table kind: ``circuit_breaker.trip`` / ``circuit_breaker.reset``."""
        return f"circuit_breaker.{self.kind}"


@dataclass(slots=True)
class _Series:
    prices: deque[tuple[int, float]]
    returns: deque[float]
    last_return_ts: int = -1


class AnomalyMonitor:
    """The monitor and breaker (module docstring). Not thread-safe: one owner."""

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self._series: dict[str, _Series] = {}
        self._errors: deque[int] = deque()
        # (trigger, symbol) → until_ms (None: until a tick shows otherwise)
        self._holding: dict[tuple[Trigger, str | None], int | None] = {}
        self.tripped = False
        self.tripped_since_ms: int | None = None
        self._last_onset_ms: int | None = None

    # --- observations ------------------------------------------------------------------------------
    def on_tick(self, symbol: str, ts_ms: int, price: float, bid: float | None = None,
                ask: float | None = None) -> list[AnomalyEvent]:  # fmt: skip
        """Judge one tick (``price``: mark or last; ``bid``/``ask`` when known). Bad prices are ignored."""
        events: list[AnomalyEvent] = []
        if not (math.isfinite(price) and price > 0):
            return events
        events += self._jump(symbol, ts_ms, price)
        if bid is not None and ask is not None:
            events += self._spread(symbol, ts_ms, bid, ask)
        return events + self.check(ts_ms)

    def on_quote(self, symbol: str, ts_ms: int, bid: float, ask: float) -> list[AnomalyEvent]:
        """Judge one best bid/ask of ``symbol`` (the spread only). A bad or missing side is ignored."""
        return self._spread(symbol, ts_ms, bid, ask) + self.check(ts_ms)

    def on_error(self, ts_ms: int, count: int = 1) -> list[AnomalyEvent]:
        """Count ``count`` order/REST errors at ``ts_ms``."""
        self._errors.extend([ts_ms] * max(0, count))
        return self.check(ts_ms)

    def check(self, ts_ms: int) -> list[AnomalyEvent]:
        """Judge the error rate and the reset at ``ts_ms`` (call it periodically)."""
        while self._errors and self._errors[0] <= ts_ms - 60_000:
            self._errors.popleft()
        n, limit = len(self._errors), self.config.errors_per_minute
        until = self._errors[n - limit - 1] + 60_000 if n > limit else None
        events = self._judge("error_rate", None, ts_ms, n > limit, until,
                             f"{n} errors within 60 s (limit {limit})", float(n))  # fmt: skip
        return events + self._maybe_reset(ts_ms)

    def holding(self, ts_ms: int) -> list[str]:
        """The conditions holding at ``ts_ms``, as ``trigger[:symbol]``."""
        return [
            f"{t}:{s}" if s else t
            for (t, s), until in self._holding.items()
            if until is None or ts_ms < until
        ]

    # --- rules --------------------------------------------------------------------------------------
    def _spread(self, symbol: str, ts_ms: int, bid: float, ask: float) -> list[AnomalyEvent]:
        if not (math.isfinite(bid) and math.isfinite(ask) and bid > 0 and ask > 0):
            return []
        spread = (ask - bid) / ((bid + ask) / 2) * 1e4
        detail = f"{symbol} spread {spread:.1f} bps (limit {self.config.spread_bps:g} bps)"
        return self._judge("spread", symbol, ts_ms, spread > self.config.spread_bps, None, detail, spread)

    def _jump(self, symbol: str, ts_ms: int, price: float) -> list[AnomalyEvent]:
        cfg = self.config
        s = self._series.setdefault(symbol, _Series(deque(), deque(maxlen=cfg.vol_samples)))
        s.prices.append((ts_ms, price))
        while len(s.prices) > 1 and s.prices[1][0] <= ts_ms - cfg.jump_window_ms:
            s.prices.popleft()  # keep the newest price at least a window old as the base
        base = s.prices[0][1]  # the newest price at least a window old (the oldest while history is shorter)
        ret_bps = (price / base - 1) * 1e4
        sigma = _std(s.returns) if len(s.returns) >= cfg.vol_min_samples else math.nan
        by_sigma = math.isfinite(sigma) and sigma > 0 and abs(ret_bps) > cfg.jump_sigma_k * sigma
        holds = abs(ret_bps) > cfg.jump_bps or by_sigma
        if ts_ms - s.last_return_ts >= cfg.jump_window_ms and not holds:
            s.returns.append(ret_bps)  # non-overlapping window returns; a jump is not its own volatility
            s.last_return_ts = ts_ms
        sig = (
            f", {abs(ret_bps) / sigma:.1f}× recent volatility {sigma:.1f} bps"
            if math.isfinite(sigma) and sigma > 0
            else ""
        )
        detail = f"{symbol} moved {ret_bps:+.1f} bps within {cfg.jump_window_ms} ms (limit {cfg.jump_bps:g} bps, {cfg.jump_sigma_k:g}σ{sig})"
        if holds:
            return self._judge("price_jump", symbol, ts_ms, True, ts_ms + cfg.jump_window_ms, detail, ret_bps)
        return []  # a jump stops holding when its window has passed (until_ms), not at the next calm tick

    def _judge(self, trigger: Trigger, symbol: str | None, ts_ms: int, holds: bool, until_ms: int | None,
               detail: str, value: float) -> list[AnomalyEvent]:  # fmt: skip
        key = (trigger, symbol)
        was = key in self._holding and (self._holding[key] is None or ts_ms < (self._holding[key] or 0))
        if not holds:
            if key in self._holding and self._holding[key] is None:
                del self._holding[key]
            return []
        self._holding[key] = until_ms
        if was:
            return []
        self._last_onset_ms = ts_ms
        if not self.tripped:
            self.tripped, self.tripped_since_ms = True, ts_ms
        return [AnomalyEvent("trip", ts_ms, trigger, symbol, detail, value)]

    def _maybe_reset(self, ts_ms: int) -> list[AnomalyEvent]:
        for key, until in list(self._holding.items()):
            if until is not None and ts_ms >= until:
                del self._holding[key]
        if not self.tripped or self._holding:
            return []
        if ts_ms - (self._last_onset_ms or 0) < self.config.cooldown_ms:
            return []
        since = self.tripped_since_ms
        self.tripped, self.tripped_since_ms = False, None
        return [AnomalyEvent("reset", ts_ms, None, None,
                             f"no anomaly holds; cool-down of {self.config.cooldown_ms} ms over (tripped since {since})")]  # fmt: skip


def _std(values: deque[float]) -> float:
    n = len(values)
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
