"""Read-only endpoints: health, status, universe, positions, orders, fills, signals, series, risk,
safety events, data quality, drift, settings, training jobs and PnL (spec 001 §19.1)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Query, Request

from serve.api.dto import (
    AlgoOrderDTO,
    CandleCoverageDTO,
    CandleDTO,
    DataQualityDTO,
    DriftDetailDTO,
    DriftDTO,
    EventDTO,
    FeatureDriftDTO,
    FillDTO,
    HealthDTO,
    InstrumentDTO,
    JobDTO,
    LedgerPositionDTO,
    MarkPointDTO,
    OrderDTO,
    OrdersDTO,
    PnlDTO,
    PnlRowDTO,
    PositionLineDTO,
    PositionsDTO,
    RiskEventDTO,
    RiskStateDTO,
    SeriesDTO,
    SettingsDTO,
    ShadowPositionDTO,
    SignalDTO,
    StatusDTO,
    TradeRiskDTO,
)
from serve.api.routes_common import AUTH, EngineDep, json_object, kill_switch_dto, redact_url
from storage import jobs, killswitch_store
from storage.ledger import LedgerStore
from storage.schema import (
    algo_orders,
    candles_1m,
    drift_metrics,
    events,
    features_1m,
    fills,
    instruments,
    orders,
    positions,
    premium_index,
    risk_events,
    signals,
)

__all__ = ["health_router", "router"]

Row = Mapping[Any, Any]  # a result row's mapping

health_router = APIRouter(prefix="/api", tags=["health"])
router = APIRouter(prefix="/api", tags=["state"], **AUTH)

BAR_MS = 60_000
#: A collector is healthy while the newest 1m candle closed at most this long ago, ms.
COLLECTOR_STALE_MS = 3 * BAR_MS
DEFAULT_SERIES_MS = 6 * 3600 * 1000
#: Event kinds shown as safety events (prefixes).
SAFETY_PREFIXES = ("killswitch.", "reconcile.", "risk.", "safety.", "emergency.", "protection.")

NotFound: dict[int | str, dict[str, Any]] = {404: {"description": "no such symbol"}}
MAX_TS_MS = 10**14  # year ~5138: beyond it a time is no time (and overflows SQLite's 64-bit INTEGER)
FromMs = Annotated[
    int | None, Query(alias="from", ge=0, le=MAX_TS_MS, description="from this time, epoch ms")
]
ToMs = Annotated[int | None, Query(alias="to", ge=0, le=MAX_TS_MS, description="up to this time, epoch ms")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many rows")]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _window(from_ms: int | None, to_ms: int | None) -> None:
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise HTTPException(
            422, detail=[{"loc": ["query", "from"], "msg": "from is after to", "type": "value_error"}]
        )


def _max_ts(conn: sa.Connection, table: sa.Table) -> int | None:
    value = conn.execute(sa.select(sa.func.max(table.c.ts))).scalar()
    return None if value is None else int(value)


def _signal(r: Row) -> SignalDTO:
    reasons = r["block_reason_codes"]
    return SignalDTO(
        symbol=r["symbol"],
        ts_ms=int(r["ts"]),
        model_version=r["model_version"],
        ev_long=r["ev_long"],
        ev_short=r["ev_short"],
        er_long=r["er_long"],
        er_short=r["er_short"],
        q05_long=r["q05_long"],
        q05_short=r["q05_short"],
        e_mae_long=r["e_mae_long"],
        e_mae_short=r["e_mae_short"],
        decision=r["decision"],
        size_notional=r["size_notional"],
        leverage=r["leverage"],
        sl_price=r["sl_price"],
        tp_price=r["tp_price"],
        block_reasons=[str(x) for x in reasons] if isinstance(reasons, list) else [],
        explain=json_object(r["explain"]),
    )


def _shadow(r: Row) -> ShadowPositionDTO:
    fields = {k: r[k] for k in ShadowPositionDTO.model_fields if k != "ts_ms"}
    return ShadowPositionDTO(ts_ms=int(r["ts"]), **fields)


def _event(r: Row) -> EventDTO:
    return EventDTO(id=r["id"], ts_ms=int(r["ts"]), kind=r["kind"], source=r["source"], symbol=r["symbol"],
                    payload=json_object(r["payload"]))  # fmt: skip


def _open_entries(conn: sa.Connection, symbol: str | None = None) -> list[Row]:
    finals = sa.select(positions.c.trade_group_id).where(positions.c.event_type == "FINAL")
    q = sa.select(positions).where(
        positions.c.event_type == "entry", positions.c.trade_group_id.not_in(finals)
    )
    if symbol is not None:
        q = q.where(positions.c.symbol == symbol)
    return list(conn.execute(q.order_by(positions.c.ts, positions.c.symbol)).mappings())


@health_router.get("/health", response_model=HealthDTO)
def health() -> HealthDTO:
    """Liveness: answers without a token."""
    return HealthDTO()


@router.get("/status", response_model=StatusDTO)
def status(engine: EngineDep) -> StatusDTO:
    """Freshness of candles, features and signals, and whether the kill switch is active."""
    now = _now_ms()
    with engine.connect() as conn:
        candle, feature, signal = (_max_ts(conn, t) for t in (candles_1m, features_1m, signals))
    switch = kill_switch_dto(engine)
    latency: dict[str, float] = {}
    if candle is not None:
        latency["candle_close_age"] = float(now - (candle + BAR_MS))
    if feature is not None:
        latency["feature_age"] = float(now - feature)
    if signal is not None:
        latency["signal_age"] = float(now - signal)
    user_stream_holding = any(str(c.get("reason", "")).startswith("user_stream") for c in switch.holding)
    return StatusDTO(
        now_ms=now,
        collector_ok=candle is not None and now - (candle + BAR_MS) <= COLLECTOR_STALE_MS,
        userstream_ok=not user_stream_holding,
        kill_switch_active=switch.active,
        latest_candle_ts_ms=candle,
        latest_feature_ts_ms=feature,
        latest_signal_ts_ms=signal,
        queue_lag={},
        latency_ms=latency,
    )


@router.get("/universe", response_model=list[InstrumentDTO])
def universe(engine: EngineDep) -> list[InstrumentDTO]:
    """Every instrument with its status and filters."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(instruments).order_by(instruments.c.symbol)).mappings()
        return [
            InstrumentDTO(
                symbol=r["symbol"],
                status=r["status"],
                liquidity_tier=r["liquidity_tier"],
                tick_size=_float(r["tick_size"]),
                step_size=_float(r["step_size"]),
                min_notional=_float(r["min_notional"]),
            )  # fmt: skip
            for r in rows
        ]


@router.get("/positions/latest", response_model=PositionsDTO)
def positions_latest(engine: EngineDep) -> PositionsDTO:
    """Open positions: the venue ledger's (recomputed from fills) and the book's open entries."""
    ledger = [
        LedgerPositionDTO(
            symbol=p.symbol,
            side=p.side,
            qty=float(p.qty),
            avg_entry_price=float(p.avg_entry_price),
            realized_pnl=float(p.realized_pnl),
            fees=float(p.fees),
            funding=float(p.funding),
            fill_count=p.fill_count,
            last_fill_ms=p.last_fill_ms,
        )  # fmt: skip
        for p in sorted(LedgerStore(engine).positions().values(), key=lambda p: p.symbol)
        if p.qty != 0
    ]
    with engine.connect() as conn:
        return PositionsDTO(ledger=ledger, open=[_shadow(r) for r in _open_entries(conn)])


@router.get("/orders", response_model=OrdersDTO)
def list_orders(
    engine: EngineDep,
    open_only: bool = False,
    symbol: str | None = None,
    from_ms: FromMs = None,
    to_ms: ToMs = None,
    limit: Limit = 500,
) -> OrdersDTO:
    """Ledger orders and algo (conditional) orders alive in [from, to], newest first."""
    _window(from_ms, to_ms)
    from core.ledger import ALGO_TERMINAL, ORDER_TERMINAL

    out: dict[str, list[Any]] = {}
    for name, table, terminal in (
        ("orders", orders, ORDER_TERMINAL),
        ("algo_orders", algo_orders, ALGO_TERMINAL),
    ):
        q = sa.select(table)
        if open_only:
            q = q.where(table.c.status.not_in(sorted(terminal)))
        if symbol is not None:
            q = q.where(table.c.symbol == symbol)
        if from_ms is not None:
            q = q.where(table.c.updated_at >= from_ms)
        if to_ms is not None:
            q = q.where(table.c.created_at <= to_ms)
        with engine.connect() as conn:
            rows = conn.execute(q.order_by(table.c.created_at.desc()).limit(limit)).mappings().all()
        out[name] = [
            dict(r, created_at_ms=int(r["created_at"]), updated_at_ms=int(r["updated_at"])) for r in rows
        ]
    return OrdersDTO(
        orders=[OrderDTO.model_validate(r) for r in out["orders"]],
        algo_orders=[AlgoOrderDTO.model_validate(r) for r in out["algo_orders"]],
    )


@router.get("/fills", response_model=list[FillDTO])
def list_fills(
    engine: EngineDep,
    symbol: str | None = None,
    from_ms: FromMs = None,
    to_ms: ToMs = None,
    limit: Limit = 500,
) -> list[FillDTO]:
    """Ledger fills in [from, to], newest first."""
    _window(from_ms, to_ms)
    q = sa.select(fills)
    if symbol is not None:
        q = q.where(fills.c.symbol == symbol)
    if from_ms is not None:
        q = q.where(fills.c.ts >= from_ms)
    if to_ms is not None:
        q = q.where(fills.c.ts <= to_ms)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(fills.c.ts.desc(), fills.c.trade_id.desc()).limit(limit)).mappings()
        return [FillDTO.model_validate(dict(r, ts_ms=int(r["ts"]))) for r in rows]


@router.get("/signals/latest", response_model=list[SignalDTO])
def signals_latest(
    engine: EngineDep,
    sort: Annotated[Literal["ev", "symbol"], Query(description="ev: best side's EV first")] = "ev",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[SignalDTO]:
    """Each symbol's newest signal, with its block reasons and explanation."""
    newest = (
        sa.select(signals.c.symbol, sa.func.max(signals.c.ts).label("ts"))
        .group_by(signals.c.symbol)
        .subquery()
    )
    q = sa.select(signals).join(
        newest, sa.and_(signals.c.symbol == newest.c.symbol, signals.c.ts == newest.c.ts)
    )
    with engine.connect() as conn:
        found = [_signal(r) for r in conn.execute(q).mappings()]
    if sort == "ev":
        found.sort(key=lambda s: (-max(s.ev_long, s.ev_short), s.symbol))
    else:
        found.sort(key=lambda s: s.symbol)
    return found[:limit]


@router.get("/symbol/{symbol}/series", response_model=SeriesDTO, responses=NotFound)
def symbol_series(engine: EngineDep, symbol: str, from_ms: FromMs = None, to_ms: ToMs = None) -> SeriesDTO:
    """1m candles, mark prices, signals (EV, ER, q05, expected MAE), position lines (entry, SL, TP,
    liquidation, and the trigger of each working stop order) and each trade's risk, of one symbol.

    Default window: the 6 hours up to the newest candle.
    """
    _window(from_ms, to_ms)
    with engine.connect() as conn:
        if (
            conn.execute(sa.select(instruments.c.symbol).where(instruments.c.symbol == symbol)).first()
            is None
        ):
            raise HTTPException(404, detail=f"unknown symbol {symbol!r}")
        if to_ms is None:
            latest = conn.execute(
                sa.select(sa.func.max(candles_1m.c.ts)).where(candles_1m.c.symbol == symbol)
            )
            to_ms = int(latest.scalar() or _now_ms())
        if from_ms is None:
            from_ms = max(0, to_ms - DEFAULT_SERIES_MS)
        c = candles_1m.c
        candle_rows = conn.execute(
            sa.select(candles_1m)
            .where(c.symbol == symbol, c.ts >= from_ms, c.ts <= to_ms)
            .order_by(c.ts)
            .limit(20_000)
        ).mappings()
        candles = [CandleDTO(ts_ms=int(r["ts"]), open=r["open"], high=r["high"], low=r["low"], close=r["close"],
                             volume=r["volume"]) for r in candle_rows]  # fmt: skip
        s = signals.c
        signal_rows = conn.execute(
            sa.select(signals)
            .where(s.symbol == symbol, s.ts >= from_ms, s.ts <= to_ms)
            .order_by(s.ts)
            .limit(20_000)
        ).mappings()
        found_signals = [_signal(r) for r in signal_rows]
        p = positions.c
        group_rows = conn.execute(
            sa.select(positions)
            .where(p.symbol == symbol, p.event_type.in_(("entry", "FINAL")))
            .order_by(p.ts)
        ).mappings()
        entries: dict[str, Row] = {}
        closed_at: dict[str, int] = {}
        for r in group_rows:
            if r["event_type"] == "entry":
                entries.setdefault(r["trade_group_id"], r)
            else:
                closed_at[r["trade_group_id"]] = int(r["ts"])
        marks = _marks(conn, symbol, from_ms, to_ms)
        stops = _working_stops(conn, symbol, to_ms)
    lines: list[PositionLineDTO] = []
    risk: list[TradeRiskDTO] = []
    for group, entry in entries.items():
        start, end = int(entry["ts"]), closed_at.get(group)
        if start > to_ms or (end is not None and end < from_ms):
            continue
        for kind, column in (("entry", "entry_price"), ("sl", "sl_price"), ("tp", "tp_price"),
                             ("liquidation", "liquidation_price")):  # fmt: skip
            if entry[column] is not None:
                lines.append(PositionLineDTO(kind=kind, price=entry[column], trade_group_id=group, side=entry["side"],
                                             from_ms=start, to_ms=end))  # fmt: skip
        price, sl, qty = entry["entry_price"], entry["sl_price"], entry["amt"]
        if price and sl is not None and qty is not None:
            distance = abs(float(price) - float(sl))
            risk.append(TradeRiskDTO(trade_group_id=group, side=entry["side"], from_ms=start, to_ms=end, qty=abs(qty),
                                     entry_price=price, sl_price=sl, risk_usdt=abs(qty) * distance,
                                     risk_pct=distance / float(price)))  # fmt: skip
    lines.extend(stops)
    return SeriesDTO(
        symbol=symbol, candles=candles, signals=found_signals, lines=lines, marks=marks, risk=risk
    )


def _marks(conn: sa.Connection, symbol: str, from_ms: int, to_ms: int) -> list[MarkPointDTO]:
    """The stored 1m mark prices of ``symbol``, else the mark prices of its position rows."""
    m = premium_index.c
    rows = conn.execute(
        sa.select(m.ts, m.mark_price)
        .where(m.symbol == symbol, m.ts >= from_ms, m.ts <= to_ms)
        .order_by(m.ts)
        .limit(20_000)
    ).all()
    if rows:
        return [MarkPointDTO(ts_ms=int(r.ts), price=r.mark_price, source="premium_index") for r in rows]
    p = positions.c
    rows = conn.execute(
        sa.select(p.ts, p.mark_price)
        .where(p.symbol == symbol, p.ts >= from_ms, p.ts <= to_ms, p.mark_price.is_not(None))
        .order_by(p.ts)
        .limit(20_000)
    ).all()
    return [MarkPointDTO(ts_ms=int(r.ts), price=r.mark_price, source="position") for r in rows]


def _working_stops(conn: sa.Connection, symbol: str, to_ms: int) -> list[PositionLineDTO]:
    """The trigger of each stop order of ``symbol`` still working on the venue (the active stop)."""
    from core.ledger import ALGO_TERMINAL

    a = algo_orders.c
    rows = conn.execute(
        sa.select(algo_orders)
        .where(
            a.symbol == symbol,
            a.type.in_(("STOP_MARKET", "STOP")),
            a.status.not_in(sorted(ALGO_TERMINAL)),
            a.created_at <= to_ms,
        )
        .order_by(a.created_at)
    ).mappings()
    return [
        PositionLineDTO(
            kind="stop",
            price=r["trigger_price"],
            trade_group_id=r["trade_group_id"] or r["client_algo_id"],
            side=r["side"],
            from_ms=int(r["created_at"]),
            to_ms=None,
        )  # fmt: skip
        for r in rows
    ]


@router.get("/risk/state", response_model=RiskStateDTO)
def risk_state(request: Request, engine: EngineDep, limit: Limit = 50) -> RiskStateDTO:
    """The kill switch's state and history, whether the kill file is present, recent risk events."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(risk_events).order_by(risk_events.c.id.desc()).limit(limit)).mappings()
        recent = [
            RiskEventDTO(
                id=r["id"],
                ts_ms=int(r["ts"]),
                event_type=r["event_type"],
                symbol=r["symbol"],
                severity=r["severity"],
                message=r["message"],
                details=None if r["details"] is None else json_object(r["details"]),
            )  # fmt: skip
            for r in rows
        ]
    path = killswitch_store.kill_file(request.app.state.config.data_dir.resolve())
    return RiskStateDTO(
        kill_switch=kill_switch_dto(engine),
        kill_file=path.exists(),
        history=killswitch_store.history(engine, limit),
        risk_events=recent,
    )


@router.get("/safety-events", response_model=list[EventDTO])
def safety_events(
    engine: EngineDep, from_ms: FromMs = None, to_ms: ToMs = None, limit: Limit = 200
) -> list[EventDTO]:
    """Kill-switch, reconciliation, risk and protection events, newest first."""
    _window(from_ms, to_ms)
    q = sa.select(events).where(
        sa.or_(*(events.c.kind.startswith(p, autoescape=True) for p in SAFETY_PREFIXES))
    )
    if from_ms is not None:
        q = q.where(events.c.ts >= from_ms)
    if to_ms is not None:
        q = q.where(events.c.ts <= to_ms)
    with engine.connect() as conn:
        return [_event(r) for r in conn.execute(q.order_by(events.c.id.desc()).limit(limit)).mappings()]


@router.get("/data-quality/summary", response_model=DataQualityDTO)
def data_quality(engine: EngineDep) -> DataQualityDTO:
    """Counts of data-quality events by kind, the newest of them, and 1m candle coverage per symbol."""
    dq = events.c.kind.startswith("data_quality.", autoescape=True)
    c = candles_1m.c
    with engine.connect() as conn:
        counts = {r.kind: int(r.n) for r in conn.execute(
            sa.select(events.c.kind, sa.func.count().label("n")).where(dq).group_by(events.c.kind))}  # fmt: skip
        recent = [
            _event(r)
            for r in conn.execute(
                sa.select(events).where(dq).order_by(events.c.id.desc()).limit(50)
            ).mappings()
        ]
        coverage = [
            CandleCoverageDTO(
                symbol=r.symbol, rows=int(r.n), first_ts_ms=int(r.first), latest_ts_ms=int(r.last)
            )
            for r in conn.execute(
                sa.select(
                    c.symbol,
                    sa.func.count().label("n"),
                    sa.func.min(c.ts).label("first"),
                    sa.func.max(c.ts).label("last"),
                )
                .group_by(c.symbol)
                .order_by(c.symbol)  # fmt: skip
            )
        ]
    return DataQualityDTO(counts=counts, recent=recent, candles_1m=coverage)


def _drift_features(row: Mapping[str, Any]) -> list[FeatureDriftDTO]:
    """The row's per-feature JSON (null on rows older than it): the judged features by PSI descending,
    then the ``insufficient`` ones (a PSI on too few values, not to be read as drift), no PSI last."""
    stored = row["features"] if isinstance(row["features"], dict) else {}
    features = [FeatureDriftDTO.model_validate({**f, "name": name}) for name, f in stored.items()]
    return sorted(
        features, key=lambda f: (f.psi is None, f.status == "insufficient", -(f.psi or 0.0), f.name)
    )


def _drift_dto(row: Mapping[str, Any], features: list[FeatureDriftDTO]) -> dict[str, Any]:
    fields = {k: v for k, v in row.items() if k in DriftDTO.model_fields}
    return {
        **fields, "ts_ms": int(row["ts"]),
        "alarm_features": [f.name for f in features if f.status == "alarm"],
        "insufficient_features": sum(f.status == "insufficient" for f in features),
    }  # fmt: skip


@router.get("/drift", response_model=list[DriftDTO])
def drift(engine: EngineDep) -> list[DriftDTO]:
    """Each symbol's newest drift metrics (PSI, missing rate, latency, outliers), with the features at
    alarm and the count of features with too few samples to judge."""
    d = drift_metrics.c
    newest = sa.select(d.symbol, sa.func.max(d.ts).label("ts")).group_by(d.symbol).subquery()
    q = sa.select(drift_metrics).join(newest, sa.and_(d.symbol == newest.c.symbol, d.ts == newest.c.ts))
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(d.symbol, d.schema_version)).mappings().all()
    return [DriftDTO.model_validate(_drift_dto(r, _drift_features(r))) for r in rows]


@router.get(
    "/drift/{symbol}",
    response_model=DriftDetailDTO,
    responses={404: {"description": "no drift measured for the symbol"}},
)
def drift_detail(engine: EngineDep, symbol: str) -> DriftDetailDTO:
    """A symbol's newest drift row with every feature's PSI, status, effective samples, missing and
    outlier rate: the judged features by PSI descending, then the insufficient ones."""
    d = drift_metrics.c
    q = sa.select(drift_metrics).where(d.symbol == symbol).order_by(d.ts.desc(), d.schema_version.desc())
    with engine.connect() as conn:
        row = conn.execute(q.limit(1)).mappings().first()
    if row is None:
        raise HTTPException(404, detail=f"no drift measured for {symbol!r}")
    features = _drift_features(row)
    return DriftDetailDTO.model_validate({**_drift_dto(row, features), "features": features})


@router.get("/settings", response_model=SettingsDTO)
def settings(request: Request) -> SettingsDTO:
    """The API's settings, read-only: URLs with passwords masked, never the token."""
    config = request.app.state.config
    return SettingsDTO(
        bind_host=config.bind_host,
        database_url=redact_url(config.database_url),
        redis_url=None if config.redis_url is None else redact_url(config.redis_url),
        tracking_uri=redact_url(config.tracking_uri),
        data_dir=str(config.data_dir),
        token_file=str(config.token_file),
        killswitch=config.killswitch.model_dump(mode="json"),
    )


@router.get("/training/jobs", response_model=list[JobDTO])
def training_jobs(
    engine: EngineDep,
    status: Annotated[Literal["queued", "running", "done", "failed"] | None, Query()] = None,
    limit: Limit = 50,
) -> list[JobDTO]:
    """The newest batch jobs with status and progress."""
    return [
        JobDTO(
            job_id=j.job_id,
            kind=j.kind,
            status=j.status,
            progress=j.progress,
            created_at_ms=j.created_at_ms,
            started_at_ms=j.started_at_ms,
            ended_at_ms=j.ended_at_ms,
            config=dict(j.config),
            report_uri=j.report_uri,
            error=j.error,
            attempts=j.attempts,
        )  # fmt: skip
        for j in jobs.list_jobs(engine, status=status, limit=limit)
    ]


@router.get("/pnl", response_model=PnlDTO)
def pnl(engine: EngineDep) -> PnlDTO:
    """Realized PnL, fees and funding: per symbol from the ledger (venue fills and income) and from
    the book's FINAL rows (shadow), and their totals."""
    rows: list[PnlRowDTO] = []
    for p in sorted(LedgerStore(engine).positions().values(), key=lambda p: p.symbol):
        realized, fees, funding = float(p.realized_pnl), float(p.fees), float(p.funding)
        rows.append(PnlRowDTO(symbol=p.symbol, source="ledger", realized_pnl=realized, fees=fees, funding=funding,
                              net=realized - fees + funding, trades=p.fill_count))  # fmt: skip
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    with engine.connect() as conn:
        for r in conn.execute(sa.select(positions).where(positions.c.event_type == "FINAL")).mappings():
            t = totals[r["symbol"]]
            t[0] += r["realized_pnl"] or 0.0
            t[1] += r["fees"] or 0.0
            t[2] += r["funding"] or 0.0
            t[3] += 1
    for symbol, (realized, fees, funding, n) in sorted(totals.items()):
        rows.append(PnlRowDTO(symbol=symbol, source="shadow", realized_pnl=realized, fees=fees, funding=funding,
                              net=realized - fees + funding, trades=int(n)))  # fmt: skip
    realized, fees, funding = (sum(getattr(r, f) for r in rows) for f in ("realized_pnl", "fees", "funding"))
    return PnlDTO(
        realized_pnl=realized, fees=fees, funding=funding, net=realized - fees + funding, by_symbol=rows
    )
