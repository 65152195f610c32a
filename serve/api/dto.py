"""The API's response and request bodies (spec 001 §19.3), one pydantic model each.

Times are epoch ms (``*_ms``); prices, quantities and money are floats in the symbol's quote asset
(USDT). Request bodies forbid unknown fields, so a typo is a 422 naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.drift import DriftStatus

__all__ = [
    "AlgoOrderDTO",
    "CandleCoverageDTO",
    "CandleDTO",
    "DataQualityDTO",
    "DriftDTO",
    "DriftDetailDTO",
    "EventDTO",
    "FeatureDriftDTO",
    "FillDTO",
    "HealthDTO",
    "InstrumentDTO",
    "JobDTO",
    "JobQueuedDTO",
    "JobRequest",
    "KillSwitchDTO",
    "KillSwitchRequest",
    "KillSwitchResultDTO",
    "LedgerPositionDTO",
    "MarkPointDTO",
    "ModelDTO",
    "ModelSummaryDTO",
    "ModelVersionDTO",
    "OrderDTO",
    "OrdersDTO",
    "PnlDTO",
    "PnlRowDTO",
    "PositionLineDTO",
    "PositionsDTO",
    "PromoteRequest",
    "RiskEventDTO",
    "RiskStateDTO",
    "RollbackRequest",
    "SeriesDTO",
    "SettingsDTO",
    "ShadowPositionDTO",
    "SignalDTO",
    "StatusDTO",
    "TradeRiskDTO",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthDTO(BaseModel):
    status: Literal["ok"] = "ok"


class StatusDTO(BaseModel):
    """Freshness of the stored data and the kill switch, as the database shows them now."""

    now_ms: int
    collector_ok: bool = Field(description="a 1m candle closed within the last 3 minutes")
    userstream_ok: bool = Field(description="no user-stream condition holds the kill switch")
    kill_switch_active: bool
    latest_candle_ts_ms: int | None
    latest_feature_ts_ms: int | None
    latest_signal_ts_ms: int | None
    queue_lag: dict[str, float] = Field(description="bus backlog per topic (empty: no bus configured)")
    latency_ms: dict[str, float] = Field(description="age of the newest candle close, feature and signal")


class InstrumentDTO(BaseModel):
    symbol: str
    status: str
    liquidity_tier: str
    tick_size: float | None
    step_size: float | None
    min_notional: float | None


class LedgerPositionDTO(BaseModel):
    """A position recomputed from the ledger's fills and income (``storage.ledger``)."""

    symbol: str
    side: str
    qty: float
    avg_entry_price: float
    realized_pnl: float
    fees: float
    funding: float
    fill_count: int
    last_fill_ms: int | None


class ShadowPositionDTO(BaseModel):
    """A ``positions`` row (shadow or live book): an entry, a snapshot or a FINAL."""

    trade_group_id: str
    symbol: str
    ts_ms: int
    side: str
    event_type: str
    mode: str
    amt: float
    entry_price: float | None
    exit_price: float | None
    mark_price: float | None
    leverage: int | None
    liquidation_price: float | None
    notional: float | None
    sl_price: float | None
    tp_price: float | None
    unrealized_pnl: float | None
    realized_pnl: float | None
    fees: float | None
    funding: float | None
    exit_reason: str | None


class PositionsDTO(BaseModel):
    ledger: list[LedgerPositionDTO] = Field(description="open positions of the venue ledger")
    open: list[ShadowPositionDTO] = Field(description="entries of trade groups without a FINAL row")


class OrderDTO(BaseModel):
    symbol: str
    order_id: int
    client_order_id: str | None
    parent_algo_id: int | None
    trade_group_id: str | None
    engine: str | None
    side: str
    type: str
    status: str
    reduce_only: bool
    price: float | None
    stop_price: float | None
    qty: float
    filled_qty: float
    avg_price: float | None
    created_at_ms: int
    updated_at_ms: int


class AlgoOrderDTO(BaseModel):
    symbol: str
    algo_id: int
    client_algo_id: str
    type: str
    side: str
    status: str
    qty: float
    trigger_price: float
    price: float | None
    close_position: bool
    reduce_only: bool
    working_type: str | None
    child_order_id: int | None
    trade_group_id: str | None
    created_at_ms: int
    updated_at_ms: int


class OrdersDTO(BaseModel):
    orders: list[OrderDTO]
    algo_orders: list[AlgoOrderDTO]


class FillDTO(BaseModel):
    symbol: str
    trade_id: int
    order_id: int
    side: str | None
    price: float
    qty: float
    fee: float
    fee_asset: str | None
    realized_pnl: float | None
    is_maker: bool | None
    ts_ms: int


class SignalDTO(BaseModel):
    symbol: str
    ts_ms: int
    model_version: str | None
    ev_long: float
    ev_short: float
    er_long: float | None
    er_short: float | None
    q05_long: float | None
    q05_short: float | None
    e_mae_long: float | None = Field(None, description="expected maximum adverse excursion, long")
    e_mae_short: float | None = Field(None, description="expected maximum adverse excursion, short")
    decision: str
    size_notional: float | None
    leverage: int | None
    sl_price: float | None
    tp_price: float | None
    block_reasons: list[str] = Field(default_factory=list)
    explain: dict[str, Any] = Field(default_factory=dict)


class CandleDTO(BaseModel):
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class PositionLineDTO(BaseModel):
    """A horizontal line of a chart: a position's entry, stop, target or liquidation price, or the
    trigger of a working stop order (``stop``: the active stop on the venue)."""

    kind: Literal["entry", "sl", "tp", "liquidation", "stop"]
    price: float
    trade_group_id: str
    side: str
    from_ms: int
    to_ms: int | None = Field(description="when the position closed (None: still open)")


class MarkPointDTO(BaseModel):
    """A mark price at a time: the stored 1m mark (``premium_index``) or a position's snapshot."""

    ts_ms: int
    price: float
    source: Literal["premium_index", "position"]


class TradeRiskDTO(BaseModel):
    """What one trade risks: its size times the distance from the entry to its stop."""

    trade_group_id: str
    side: str
    from_ms: int
    to_ms: int | None = Field(description="when the position closed (None: still open)")
    qty: float
    entry_price: float
    sl_price: float
    risk_usdt: float = Field(description="qty × |entry − SL|: the loss if the stop fills at its price")
    risk_pct: float = Field(description="|entry − SL| / entry: the stop's distance, fraction of the price")


class SeriesDTO(BaseModel):
    symbol: str
    candles: list[CandleDTO]
    signals: list[SignalDTO]
    lines: list[PositionLineDTO]
    marks: list[MarkPointDTO] = Field(default_factory=list, description="mark prices, oldest first")
    risk: list[TradeRiskDTO] = Field(default_factory=list, description="risk per trade in the window")


class RiskEventDTO(BaseModel):
    id: int
    ts_ms: int
    event_type: str
    symbol: str | None
    severity: int
    message: str
    details: dict[str, Any] | None


class KillSwitchDTO(BaseModel):
    active: bool
    close_positions: bool
    reason: str | None
    reasons: list[str]
    since_ms: int | None
    detail: str
    holding: list[dict[str, Any]]
    recorded_ms: int | None = Field(description="time of the row that holds this state (None: never used)")
    recorded_by: str | None


class RiskStateDTO(BaseModel):
    kill_switch: KillSwitchDTO
    kill_file: bool = Field(description="whether the kill file is present")
    history: list[dict[str, Any]] = Field(description="newest kill-switch events first")
    risk_events: list[RiskEventDTO] = Field(description="newest risk events first")


class EventDTO(BaseModel):
    id: int
    ts_ms: int
    kind: str
    source: str
    symbol: str | None
    payload: dict[str, Any]


class CandleCoverageDTO(BaseModel):
    symbol: str
    rows: int
    first_ts_ms: int
    latest_ts_ms: int


class DataQualityDTO(BaseModel):
    counts: dict[str, int] = Field(description="data_quality.* events by kind")
    recent: list[EventDTO] = Field(description="the newest data_quality.* events")
    candles_1m: list[CandleCoverageDTO]


class DriftDTO(BaseModel):
    symbol: str
    ts_ms: int
    schema_version: int
    psi: float | None
    missing_rate: float | None
    latency_ms: float | None
    outlier_rate: float | None
    alarm_features: list[str] = Field(description="the features at alarm (PSI ≥ 0.25), worst first")
    insufficient_features: int = Field(description="features with too few independent samples to judge")


class FeatureDriftDTO(BaseModel):
    name: str
    psi: float | None
    status: DriftStatus
    effective_samples: float | None = Field(
        description="independent current-window samples; null: not estimated"
    )
    missing_rate: float | None
    outlier_rate: float | None


class DriftDetailDTO(DriftDTO):
    """A symbol's newest drift row with every feature, by PSI descending (no PSI last)."""

    features: list[FeatureDriftDTO]


class SettingsDTO(BaseModel):
    """What the API runs with; URLs have their passwords masked, the token is never shown."""

    bind_host: str
    database_url: str
    redis_url: str | None
    tracking_uri: str
    data_dir: str
    token_file: str
    killswitch: dict[str, Any]


class ModelSummaryDTO(BaseModel):
    name: str
    versions: int
    production: str | None
    previous: str | None


class ModelVersionDTO(BaseModel):
    version: str
    aliases: list[str]
    created_at_ms: int
    run_id: str | None
    model_id: str | None
    metrics: dict[str, float]
    label_spec_hash: str | None
    feature_schema_version: int | None
    promotion: dict[str, str]


class ModelDTO(BaseModel):
    name: str
    versions: list[ModelVersionDTO]


class JobDTO(BaseModel):
    job_id: str
    kind: str
    status: str
    progress: float
    created_at_ms: int
    started_at_ms: int | None
    ended_at_ms: int | None
    config: dict[str, Any]
    report_uri: str | None
    error: str | None
    attempts: int


class PnlRowDTO(BaseModel):
    symbol: str
    source: Literal["ledger", "shadow"]
    realized_pnl: float
    fees: float
    funding: float
    net: float
    trades: int


class PnlDTO(BaseModel):
    realized_pnl: float
    fees: float
    funding: float
    net: float = Field(description="realized PnL - fees + funding")
    by_symbol: list[PnlRowDTO]


# Requests ----------------------------------------------------------------------------------------
class KillSwitchRequest(_Request):
    active: bool = Field(description="true: stop new entries (kill); false: resume")
    close_positions: bool = Field(False, description="with active: also ask to cancel and flatten everything")
    reason: str = Field("", max_length=500, description="why (recorded with the event)")


class KillSwitchResultDTO(BaseModel):
    applied: bool = Field(description="false when a resume was refused because a condition holds")
    events: list[dict[str, Any]]
    kill_switch: KillSwitchDTO
    kill_file: bool


class PromoteRequest(_Request):
    version: str | None = Field(None, min_length=1, max_length=50, description="default: the newest")
    override: str | None = Field(
        None, min_length=1, max_length=500, description="promote despite failed gates, for this reason"
    )
    actor: str = Field("api", min_length=1, max_length=100)
    gates: dict[str, float] = Field(default_factory=dict, description="gate thresholds (PromotionConfig)")


class RollbackRequest(_Request):
    reason: str | None = Field(None, max_length=500)
    actor: str = Field("api", min_length=1, max_length=100)


class JobRequest(_Request):
    kind: Literal["label", "train", "backtest", "promote", "drift", "bootstrap_history"]
    config: dict[str, Any] = Field(
        default_factory=dict, description="the job's config (checked by the worker)"
    )


class JobQueuedDTO(BaseModel):
    job_id: str
    kind: str
    status: Literal["queued"] = "queued"
