"""Database schema: every table of spec 001 §6 and §25.4, spec 004 §10 and the events log (spec 003 §7),
and the ledger's algo orders, sync cursors and income (issue 15).

SQLAlchemy Core tables that work on SQLite (embedded default) and PostgreSQL (production).
Timestamps are epoch ms in Python (storage.types.EpochMs: TIMESTAMPTZ on PostgreSQL).
Alembic migrations in storage/migrations build exactly this metadata; a test checks they agree.

Deliberate differences from the spec's DDL, each for a reason:
- ``orders`` and ``fills`` are keyed by (symbol, order_id) and (symbol, trade_id): Binance ids are
  unique per symbol only, so a global BIGINT key would collide across symbols.
- ``positions`` carries ``trade_group_id`` and ``event_type`` ('entry' / 'FINAL' / 'snapshot') as
  seed 000 §5 does, keyed by (trade_group_id, symbol, ts, side).
- ``risk_events`` has a surrogate id; the spec's key on COALESCE(symbol, '') is a unique index.
- candles carry nullable quote_volume, trade_count, taker_buy_volume where the source has them.
- algo (conditional) orders have their own table keyed by (symbol, algo_id): algoId and orderId are
  separate counters at Binance, so they cannot share ``orders``' key. The order an algo order places
  when it triggers is an ``orders`` row whose ``parent_algo_id`` names it.
- ``orders.client_order_id`` is neither unique nor required: Binance keeps client ids unique only
  among open orders, and a trade fetched over REST names its order but not the client id.
"""

from __future__ import annotations

import sqlalchemy as sa

from storage.types import EpochMs, Json, Uuid

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

Text = sa.Text
Float = sa.Float(precision=53)  # DOUBLE PRECISION on PostgreSQL, REAL on SQLite (both 8-byte)


def _symbol_fk(nullable: bool = False) -> sa.Column[str]:
    return sa.Column("symbol", Text, sa.ForeignKey("instruments.symbol"), nullable=nullable)


instruments = sa.Table(
    "instruments",
    metadata,
    sa.Column("symbol", Text, primary_key=True),
    sa.Column("status", Text, nullable=False, server_default="active"),
    sa.Column("liquidity_tier", Text, nullable=False, server_default="A"),
    sa.Column("tick_size", sa.Numeric(36, 18)),
    sa.Column("step_size", sa.Numeric(36, 18)),
    sa.Column("min_notional", sa.Numeric(36, 18)),
    sa.Column("created_at", EpochMs, nullable=False),
)


def _candles(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        _symbol_fk(),
        sa.Column("ts", EpochMs, nullable=False, comment="bar open time"),
        sa.Column("open", Float, nullable=False),
        sa.Column("high", Float, nullable=False),
        sa.Column("low", Float, nullable=False),
        sa.Column("close", Float, nullable=False),
        sa.Column("volume", Float, nullable=False, comment="base-asset volume"),
        sa.Column("quote_volume", Float),
        sa.Column("trade_count", sa.BigInteger),
        sa.Column("taker_buy_volume", Float),
        sa.PrimaryKeyConstraint("symbol", "ts"),
    )


candles_1m = _candles("candles_1m")
candles_15m = _candles("candles_15m")
candles_1h = _candles("candles_1h")
CANDLE_TABLES = {"1m": candles_1m, "15m": candles_15m, "1h": candles_1h}

premium_index = sa.Table(
    "premium_index",
    metadata,
    _symbol_fk(),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("mark_price", Float, nullable=False),
    sa.Column("index_price", Float),
    sa.Column("last_price", Float),
    sa.Column("last_funding_rate", Float),
    sa.Column("next_funding_time", EpochMs),
    sa.PrimaryKeyConstraint("symbol", "ts"),
)

funding_rates = sa.Table(
    "funding_rates",
    metadata,
    _symbol_fk(),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("funding_rate", Float, nullable=False),
    sa.Column("mark_price", Float),
    sa.PrimaryKeyConstraint("symbol", "ts"),
)

features_1m = sa.Table(
    "features_1m",
    metadata,
    _symbol_fk(),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("features", Json, nullable=False),
    sa.Column("atr", Float),
    sa.Column("funding_z", Float),
    sa.Column("btc_regime", sa.Integer),
    sa.PrimaryKeyConstraint("symbol", "ts"),
)


def _labels(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        _symbol_fk(),
        sa.Column("ts", EpochMs, nullable=False),
        sa.Column("spec_hash", Text, nullable=False),
        sa.Column("y", sa.SmallInteger, nullable=False, comment="+1 TP, -1 SL/RISK, 0 TIME"),
        sa.Column("ret_net", Float, nullable=False),
        sa.Column("mae", Float, nullable=False),
        sa.Column("mfe", Float, nullable=False),
        sa.Column("time_to_event_min", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "ts", "spec_hash"),
    )


labels_long_1m = _labels("labels_long_1m")
labels_short_1m = _labels("labels_short_1m")

training_jobs = sa.Table(
    "training_jobs",
    metadata,
    sa.Column("job_id", Uuid, primary_key=True),
    sa.Column(
        "kind", Text, nullable=False, comment="bootstrap_history, label, train, backtest, drift, promote"
    ),
    sa.Column("created_at", EpochMs, nullable=False),
    sa.Column("started_at", EpochMs),
    sa.Column("ended_at", EpochMs),
    sa.Column("status", Text, nullable=False, comment="queued, running, done, failed"),
    sa.Column("progress", Float, nullable=False, server_default="0"),
    sa.Column("config", Json, nullable=False),
    sa.Column("report_uri", Text),
    sa.Column("error", Text),
    sa.Column(
        "attempts", sa.Integer, nullable=False, server_default="0", comment="times claimed by a worker"
    ),
    sa.Column("lease_until", EpochMs, comment="a running job whose lease passed has lost its worker"),
    sa.Column("worker", Text, comment="who holds the lease"),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
    sa.CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
    sa.Index(None, "status", "created_at"),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("model_id", Uuid, primary_key=True),
    sa.Column("created_at", EpochMs, nullable=False),
    sa.Column("algo", Text, nullable=False),
    sa.Column("strategy", Text, comment="registered model name in MLflow"),
    sa.Column("mlflow_version", Text),
    sa.Column("mlflow_run_id", Text),
    sa.Column("feature_schema_version", sa.Integer, nullable=False),
    sa.Column("label_spec_hash", Text, nullable=False),
    sa.Column("train_start", EpochMs, nullable=False),
    sa.Column("train_end", EpochMs, nullable=False),
    sa.Column("metrics", Json, nullable=False),
    sa.Column("artifact_uri", Text, nullable=False),
    sa.Column("is_production", sa.Boolean, nullable=False, server_default=sa.false()),
)

signals = sa.Table(
    "signals",
    metadata,
    _symbol_fk(),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("model_id", Uuid, sa.ForeignKey("models.model_id"), nullable=False),
    sa.Column("model_version", Text),
    sa.Column("ev_long", Float, nullable=False),
    sa.Column("ev_short", Float, nullable=False),
    sa.Column("er_long", Float),
    sa.Column("er_short", Float),
    sa.Column("q05_long", Float),
    sa.Column("q05_short", Float),
    sa.Column("e_mae_long", Float),
    sa.Column("e_mae_short", Float),
    sa.Column("e_hold_long_min", sa.Integer),
    sa.Column("e_hold_short_min", sa.Integer),
    sa.Column("decision", Text, nullable=False, comment="LONG, SHORT, FLAT"),
    sa.Column("size_notional", Float),
    sa.Column("leverage", sa.Integer),
    sa.Column("sl_price", Float),
    sa.Column("tp_price", Float),
    sa.Column("block_reason_codes", Json),
    sa.Column("explain", Json),
    sa.PrimaryKeyConstraint("symbol", "ts"),
    sa.CheckConstraint("decision IN ('LONG', 'SHORT', 'FLAT')", name="decision"),
)

account_snapshots = sa.Table(
    "account_snapshots",
    metadata,
    sa.Column("ts", EpochMs, primary_key=True, autoincrement=False),
    sa.Column("mode", Text, nullable=False, server_default="shadow"),
    sa.Column("equity", Float, nullable=False),
    sa.Column("wallet_balance", Float, nullable=False),
    sa.Column("unrealized_pnl", Float, nullable=False),
    sa.Column("available_margin", Float, nullable=False),
    sa.Column("used_margin", Float, nullable=False),
    sa.Column("margin_ratio", Float, nullable=False),
)

positions = sa.Table(
    "positions",
    metadata,
    sa.Column("trade_group_id", Text, nullable=False),
    _symbol_fk(),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("side", Text, nullable=False, comment="LONG, SHORT"),
    sa.Column("event_type", Text, nullable=False, comment="entry, FINAL, snapshot"),
    sa.Column("mode", Text, nullable=False, server_default="shadow"),
    sa.Column("amt", Float, nullable=False),
    sa.Column("entry_price", Float),
    sa.Column("exit_price", Float),
    sa.Column("mark_price", Float),
    sa.Column("leverage", sa.Integer),
    sa.Column("margin_type", Text),
    sa.Column("liquidation_price", Float),
    sa.Column("notional", Float),
    sa.Column("sl_price", Float),
    sa.Column("tp_price", Float),
    sa.Column("unrealized_pnl", Float),
    sa.Column("realized_pnl", Float),
    sa.Column("fees", Float),
    sa.Column("funding", Float),
    sa.Column("exit_reason", Text),
    sa.Column("source", Text, comment="ws, rest, recompute, shadow"),
    sa.PrimaryKeyConstraint("trade_group_id", "symbol", "ts", "side"),
    sa.CheckConstraint("side IN ('LONG', 'SHORT')", name="side"),
    sa.CheckConstraint("event_type IN ('entry', 'FINAL', 'snapshot')", name="event_type"),
    sa.Index(None, "symbol", "event_type"),
)

orders = sa.Table(
    "orders",
    metadata,
    _symbol_fk(),
    sa.Column("order_id", sa.BigInteger, nullable=False),
    sa.Column(
        "client_order_id",
        Text,
        comment="unique only among open orders at the venue; NULL for an order known only from a REST trade",
    ),
    sa.Column("algo_id", sa.BigInteger, comment="conditional (algo) order id, when the order is one"),
    sa.Column(
        "parent_algo_id", sa.BigInteger, comment="ALGO_UPDATE 'ai': the algo order this child came from"
    ),
    sa.Column("trade_group_id", Text),
    sa.Column("engine", Text),
    sa.Column("side", Text, nullable=False),
    sa.Column("type", Text, nullable=False),
    sa.Column("status", Text, nullable=False),
    sa.Column("reduce_only", sa.Boolean, nullable=False),
    sa.Column("close_position", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("working_type", Text),
    sa.Column("price", Float),
    sa.Column("stop_price", Float),
    sa.Column("qty", Float, nullable=False),
    sa.Column("filled_qty", Float, nullable=False, server_default="0"),
    sa.Column("avg_price", Float),
    sa.Column("created_at", EpochMs, nullable=False),
    sa.Column("updated_at", EpochMs, nullable=False),
    sa.Column("raw_json", Json),
    sa.PrimaryKeyConstraint("symbol", "order_id"),
    sa.Index(None, "symbol", "client_order_id"),
    sa.Index(None, "symbol", "status"),
    sa.Index(None, "created_at", "symbol"),
)

fills = sa.Table(
    "fills",
    metadata,
    _symbol_fk(),
    sa.Column("trade_id", sa.BigInteger, nullable=False),
    sa.Column("order_id", sa.BigInteger, nullable=False),
    sa.Column("side", Text),
    sa.Column("price", Float, nullable=False),
    sa.Column("qty", Float, nullable=False),
    sa.Column("fee", Float, nullable=False),
    sa.Column("fee_asset", Text),
    sa.Column("realized_pnl", Float),
    sa.Column("is_maker", sa.Boolean),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("raw_json", Json),
    sa.PrimaryKeyConstraint("symbol", "trade_id"),
    sa.ForeignKeyConstraint(["symbol", "order_id"], ["orders.symbol", "orders.order_id"]),
    sa.Index(None, "ts", "symbol"),
    sa.Index(None, "symbol", "order_id"),
)

algo_orders = sa.Table(
    "algo_orders",
    metadata,
    _symbol_fk(),
    sa.Column("algo_id", sa.BigInteger, nullable=False),
    sa.Column("client_algo_id", Text, nullable=False),
    sa.Column("algo_type", Text, nullable=False, server_default="CONDITIONAL"),
    sa.Column("type", Text, nullable=False, comment="STOP_MARKET, TAKE_PROFIT_MARKET, …"),
    sa.Column("side", Text, nullable=False),
    sa.Column("status", Text, nullable=False, comment="NEW, TRIGGERING, TRIGGERED, FINISHED, CANCELED, …"),
    sa.Column("qty", Float, nullable=False, comment="0 for closePosition"),
    sa.Column("trigger_price", Float, nullable=False),
    sa.Column("price", Float),
    sa.Column("close_position", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("reduce_only", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("price_protect", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("working_type", Text),
    sa.Column(
        "child_order_id",
        sa.BigInteger,
        comment="orderId of the order placed at the trigger (ALGO_UPDATE 'ai')",
    ),
    sa.Column("executed_qty", Float, nullable=False, server_default="0"),
    sa.Column("avg_price", Float),
    sa.Column("reject_reason", Text),
    sa.Column("trade_group_id", Text),
    sa.Column("engine", Text),
    sa.Column("created_at", EpochMs, nullable=False),
    sa.Column("updated_at", EpochMs, nullable=False),
    sa.Column("triggered_at", EpochMs),
    sa.Column("raw_json", Json),
    sa.PrimaryKeyConstraint("symbol", "algo_id"),
    sa.Index(None, "symbol", "status"),
    sa.Index(None, "symbol", "client_algo_id"),
)

#: Per symbol, how far the venue's trades are known to be complete in ``fills`` (REST backfill).
sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("symbol", Text, sa.ForeignKey("instruments.symbol"), primary_key=True),
    sa.Column("last_trade_id", sa.BigInteger, nullable=False),
    sa.Column("last_trade_ms", EpochMs, nullable=False),
    sa.Column("updated_at", EpochMs, nullable=False),
)

#: ``/fapi/v1/income`` records (funding fees and the rest); ``symbol`` is '' for account records.
income = sa.Table(
    "income",
    metadata,
    sa.Column("income_type", Text, nullable=False, comment="FUNDING_FEE, REALIZED_PNL, COMMISSION, …"),
    sa.Column("tran_id", sa.BigInteger, nullable=False),
    sa.Column("asset", Text, nullable=False),
    sa.Column("symbol", Text, nullable=False, server_default=""),
    sa.Column("amount", Float, nullable=False),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("trade_id", sa.BigInteger),
    sa.Column("info", Text),
    sa.Column("raw_json", Json),
    sa.PrimaryKeyConstraint("income_type", "tran_id", "asset", "symbol"),
    sa.Index(None, "symbol", "ts"),
)

risk_events = sa.Table(
    "risk_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("event_type", Text, nullable=False),
    sa.Column("symbol", Text),
    sa.Column("severity", sa.Integer, nullable=False),
    sa.Column("message", Text, nullable=False),
    sa.Column("details", Json),
)
sa.Index(
    "uq_risk_events_ts_event_type_symbol",
    risk_events.c.ts,
    risk_events.c.event_type,
    sa.func.coalesce(risk_events.c.symbol, ""),
    unique=True,
)

drift_metrics = sa.Table(
    "drift_metrics",
    metadata,
    sa.Column("symbol", Text, nullable=False),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("psi", Float),
    sa.Column("missing_rate", Float),
    sa.Column("latency_ms", Float),
    sa.Column("outlier_rate", Float),
    sa.Column(
        "features",
        Json,
        comment='per feature: {"psi", "status", "effective_samples", "missing_rate", "outlier_rate"}',
    ),
    sa.PrimaryKeyConstraint("symbol", "ts", "schema_version"),
)

rl_models = sa.Table(
    "rl_models",
    metadata,
    sa.Column("model_id", sa.String(32), primary_key=True),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("algorithm", sa.String(20), nullable=False, server_default="PPO"),
    sa.Column("train_start", EpochMs, nullable=False),
    sa.Column("train_end", EpochMs, nullable=False),
    sa.Column("metrics", Json),
    sa.Column("model_path", sa.String(255)),
    sa.Column("is_production", sa.Boolean, server_default=sa.false()),
    sa.Column("created_at", EpochMs, nullable=False),
)

rl_decisions = sa.Table(
    "rl_decisions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("model_id", sa.String(32), sa.ForeignKey("rl_models.model_id")),
    sa.Column("action", sa.Integer, nullable=False, comment="0 HOLD, 1 LONG, 2 SHORT, 3 CLOSE"),
    sa.Column("action_name", sa.String(10), nullable=False),
    sa.Column("confidence", Float),
    sa.Column("action_probs", Json),
    sa.Column("value_estimate", Float),
    sa.Column("model_predictions", Json),
    sa.Column("position_before", Float),
    sa.Column("position_after", Float),
    sa.Column("executed", sa.Boolean, server_default=sa.false()),
    sa.Column("pnl_result", Float),
    sa.Column("created_at", EpochMs, nullable=False),
    sa.CheckConstraint("action IN (0, 1, 2, 3)", name="action"),
    sa.Index(None, "ts", "symbol"),
)

engine_signals = sa.Table(
    "engine_signals",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("symbol", Text, nullable=False),
    sa.Column("side", Text, nullable=False),
    sa.Column("engine", Text, nullable=False),
    sa.Column("reason", Text),
    sa.Column("trade_group_id", Text),
    sa.Column("client_order_id", Text, comment="the order the signal led to (spec 004 §3 A maps it back)"),
    sa.Column("meta_json", Json),
    sa.Index(None, "ts", "symbol"),
    sa.Index(None, "symbol", "client_order_id"),
)

cancels = sa.Table(
    "cancels",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("order_id", sa.BigInteger, nullable=False),
    sa.Column("symbol", Text, nullable=False),
    sa.Column("side", Text),
    sa.Column("reason", Text),
    sa.Column("raw_json", Json),
    sa.Index(None, "ts", "symbol"),
)

#: Append-only audit log (spec 003 §7): triggers in the migration refuse UPDATE and DELETE.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts", EpochMs, nullable=False),
    sa.Column("kind", Text, nullable=False, comment="e.g. data_quality.rejected, order.sent, risk.blocked"),
    sa.Column("source", Text, nullable=False),
    sa.Column("symbol", Text),
    sa.Column("payload", Json, nullable=False),
    sa.Index(None, "kind", "ts"),
    sa.Index(None, "symbol", "ts"),
)

#: Tables whose rows the batched writer upserts on their primary key.
UPSERT_TABLES: dict[str, sa.Table] = {
    t.name: t
    for t in (
        instruments,
        candles_1m,
        candles_15m,
        candles_1h,
        premium_index,
        funding_rates,
        features_1m,
        labels_long_1m,
        labels_short_1m,
        signals,
        account_snapshots,
        positions,
        orders,
        fills,
        algo_orders,
        sync_cursors,
        income,
        drift_metrics,
    )
}
#: Append-only tables (surrogate id): the writer inserts their rows.
APPEND_TABLES: dict[str, sa.Table] = {
    t.name: t for t in (events, risk_events, engine_signals, cancels, rl_decisions)
}
