"""The anomaly monitor and circuit breaker (core.anomaly): each trigger, one event per onset, cool-down."""

from __future__ import annotations

from core.anomaly import AnomalyConfig, AnomalyMonitor

CFG = AnomalyConfig(jump_window_ms=60_000, jump_bps=300, jump_sigma_k=8, vol_min_samples=5, spread_bps=50,
                    errors_per_minute=3, cooldown_ms=120_000)  # fmt: skip


def calm(m: AnomalyMonitor, minutes: int, start: int = 0, price: float = 100.0) -> list:
    out = []
    for i in range(minutes):
        p = price * (1 + (0.0005 if i % 2 else -0.0005))
        out += m.on_tick("BTCUSDT", start + i * 60_000, p, p - 0.01, p + 0.01)
    return out


def test_calm_ticks_trip_nothing() -> None:
    m = AnomalyMonitor(CFG)
    assert calm(m, 30) == [] and not m.tripped


def test_price_jump_beyond_fixed_bps_trips_once_and_resets_after_cooldown() -> None:
    m = AnomalyMonitor(CFG.model_copy(update={"jump_sigma_k": 1e6}))
    calm(m, 10)
    t = 10 * 60_000
    (trip,) = m.on_tick("BTCUSDT", t, 104.0)  # +400 bps
    assert trip.kind == "trip" and trip.trigger == "price_jump" and trip.symbol == "BTCUSDT" and m.tripped
    assert m.on_tick("BTCUSDT", t + 1000, 104.5) == []  # still holding: no second event
    assert m.check(t + 119_000) == []  # cool-down not over
    (reset,) = m.check(t + 1000 + 120_000)
    assert reset.kind == "reset" and not m.tripped


def test_price_jump_by_k_sigma_trips_below_the_fixed_bound() -> None:
    m = AnomalyMonitor(CFG)
    calm(m, 20)  # window returns of about ±10 bps
    (trip,) = m.on_tick("BTCUSDT", 20 * 60_000, 101.5)  # ~150 bps < 300 bps, but far beyond 8 sigma
    assert trip.trigger == "price_jump" and "volatility" in trip.detail


def test_spread_blowout_trips_and_a_condition_still_holding_blocks_the_reset() -> None:
    m = AnomalyMonitor(CFG)
    (trip,) = m.on_tick("ETHUSDT", 0, 2000.0, 1990.0, 2010.0)  # 100 bps
    assert trip.trigger == "spread"
    assert m.on_tick("ETHUSDT", 500, 2000.0, 1990.0, 2010.0) == []
    assert m.on_tick("ETHUSDT", 200_000, 2000.0, 1990.0, 2010.0) == []  # cool-down over, still wide: tripped
    assert m.tripped
    (reset,) = m.on_tick("ETHUSDT", 201_000, 2000.0, 1999.9, 2000.1)
    assert reset.kind == "reset"
    (again,) = m.on_tick("ETHUSDT", 202_000, 2000.0, 1990.0, 2010.0)  # a new onset: a new event
    assert again.kind == "trip"


def test_a_quote_alone_judges_the_spread_and_moves_no_price_series() -> None:
    m = AnomalyMonitor(CFG)
    (trip,) = m.on_quote("ETHUSDT", 0, 1990.0, 2010.0)  # 100 bps
    assert trip.trigger == "spread" and trip.symbol == "ETHUSDT" and m.tripped
    assert m.on_quote("ETHUSDT", 1000, float("nan"), 2010.0) == [] and m.tripped  # a bad side is ignored
    (reset,) = m.on_quote("ETHUSDT", 200_000, 1999.9, 2000.1)
    assert reset.kind == "reset" and not m.tripped
    assert m.on_tick("ETHUSDT", 260_000, 2000.0) == []  # no price came from the quotes: no jump base


def test_error_rate_trips_above_the_limit_and_clears_as_errors_leave_the_window() -> None:
    m = AnomalyMonitor(CFG)
    assert m.on_error(1000, 3) == []
    (trip,) = m.on_error(2000)
    assert trip.trigger == "error_rate" and trip.value == 4
    assert m.on_error(3000) == []
    assert m.check(61_500) == []  # 2 errors left the window, but cool-down (120 s from 2000) not over
    (reset,) = m.check(122_000)
    assert reset.kind == "reset"


def test_bad_prices_are_ignored() -> None:
    m = AnomalyMonitor(CFG)
    assert m.on_tick("BTCUSDT", 0, float("nan")) == [] and m.on_tick("BTCUSDT", 1, 0.0) == []
