"""One valid message per bus topic, and a candle series: shared by the message and bus tests."""

from __future__ import annotations

from core.messages import (
    AccountUpdate,
    BookTicker,
    CandleClosed,
    DataQualityEvent,
    FeaturesReady,
    FillNew,
    MarkPrice,
    Message,
    OrderUpdate,
    PositionUpdate,
    RiskEvent,
    SignalNew,
    SystemStatus,
    Topic,
    TrainingUpdate,
)

TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

SAMPLES: dict[Topic, Message] = {
    Topic.MARKET_CANDLE_CLOSED: CandleClosed(
        symbol="BTCUSDT",
        interval="1m",
        ts_ms=TS_MS,
        open=94_000.1,
        high=94_050.0,
        low=93_990.5,
        close=94_020.3,
        volume=123.456,
    ),
    Topic.MARKET_MARK_PRICE: MarkPrice(
        symbol="ETHUSDT",
        ts_ms=TS_MS + 1_000,
        mark_price=3_301.25,
        index_price=3_300.9,
        funding_rate=-0.000_125,
        next_funding_ts_ms=TS_MS + 8 * 3_600_000,
    ),
    Topic.MARKET_BOOK_TICKER: BookTicker(
        symbol="SOLUSDT",
        ts_ms=TS_MS + 17,
        bid_price=187.12,
        bid_qty=310.0,
        ask_price=187.13,
        ask_qty=0.5,
    ),
    Topic.FEATURES_READY: FeaturesReady(
        symbol="BTCUSDT", ts_ms=TS_MS, schema_version=3, schema_hash="9f2c4d1ab07e55c3"
    ),
    Topic.SIGNALS_NEW: SignalNew(
        symbol="1000PEPEUSDT",
        ts_ms=TS_MS,
        decision="FLAT",
        ev_long=0.0012,
        ev_short=-0.0031,
        model_version="models:/raytrade/7",
        block_reasons=["EV_BELOW_MIN", "BTC_HIGH_VOL"],
    ),
    Topic.ORDERS_UPDATE: OrderUpdate(
        symbol="BTCUSDT",
        ts_ms=TS_MS + 250,
        client_order_id="rt-entry-000042",
        order_id="8389765512",
        side="BUY",
        order_type="MARKET",
        status="FILLED",
        qty=0.012,
        filled_qty=0.012,
        avg_fill_price=94_021.0,
        reduce_only=False,
    ),
    Topic.FILLS_NEW: FillNew(
        symbol="BTCUSDT",
        ts_ms=TS_MS + 251,
        trade_id="512345678",
        order_id="8389765512",
        client_order_id="rt-entry-000042",
        side="BUY",
        price=94_021.0,
        qty=0.012,
        fee=0.451_300_8,
        fee_asset="USDT",
        is_maker=False,
        realized_pnl=0.0,
    ),
    Topic.POSITIONS_UPDATE: PositionUpdate(
        symbol="BTCUSDT",
        ts_ms=TS_MS + 252,
        qty=-0.012,
        entry_price=94_021.0,
        unrealized_pnl=-0.25,
        mark_price=94_041.8,
        leverage=3,
        liquidation_price=125_000.0,
    ),
    Topic.RISK_EVENT: RiskEvent(
        ts_ms=TS_MS + 300,
        event_type="kill_switch",
        symbol=None,
        severity="critical",
        message="user stream silent for 65 s",
        details={"silence_s": 65.2, "flatten": True},
    ),
    Topic.DATA_QUALITY_EVENT: DataQualityEvent(
        ts_ms=TS_MS + 400,
        source="ingest.kline",
        symbol="btc-usdt",
        reason="malformed symbol",
        payload={"s": "btc-usdt", "c": "94020.3"},
    ),
    Topic.TRAINING_UPDATE: TrainingUpdate(
        ts_ms=TS_MS + 500,
        job_id="6f1d0c2e-4b5a-4e59-9a43-0c1b2d3e4f50",
        status="running",
        progress=0.375,
        message="fold 3 of 8",
    ),
    Topic.SYSTEM_STATUS: SystemStatus(
        ts_ms=TS_MS + 600,
        component="ingest-0",
        ok=True,
        details={"lag_ms": 120, "symbols": ["BTCUSDT"]},
    ),
    Topic.ACCOUNT_UPDATE: AccountUpdate(
        ts_ms=TS_MS + 700,
        source="execution:shadow:s1",
        mode="shadow",
        wallet=10_000.0,
        equity=10_012.5,
        available=9_512.5,
        unrealized_pnl=12.5,
        margin_used=500.0,
        positions=1,
    ),
}


def candle(i: int, symbol: str = "BTCUSDT") -> CandleClosed:
    """The i-th closed 1m candle of a small deterministic series."""
    base = 100.0 + i * 0.01
    return CandleClosed(
        symbol=symbol,
        interval="1m",
        ts_ms=TS_MS + i * 60_000,
        open=base,
        high=base + 0.5,
        low=base - 0.5,
        close=base + 0.1,
        volume=float(i),
    )
