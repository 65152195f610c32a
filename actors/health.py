"""The health checker (issue 18, seed 002 HealthChecker): a background actor watching the running system.

Every ``interval_s`` ``HealthChecker.check`` judges each component and returns its status (``ok``
True / False / None for unknown, a detail and the measured figures):

- ``streams``: the age of the newest 1m candle of each active symbol in the database (the ingest
  writers' output), stale beyond ``stale_stream_ms``;
- ``database``: ``SELECT 1`` and its latency (slow beyond ``db_slow_ms``);
- ``bus``: a Redis ``PING`` (or the in-process bus);
- ``serve``: Ray Serve's application statuses (every one RUNNING), unknown when Serve is not running;
- ``mlflow``: a registry query on the tracking server (``search_registered_models``, one row);
- ``clock``: the venue's server time (``GET <rest_url>/fapi/v1/time``) against the local clock, off
  beyond ``clock_max_offset_ms``; unknown without a REST URL.

Each status goes on the bus as a ``SystemStatus`` (``system.status``); a change of a component's
``ok`` is written as one ``health.<component>`` events row (and notified). The same loop runs the
anomaly monitor (``core.anomaly``) on the newest 1m closes in the database and on the order errors
(``risk_events`` whose type names a failure, plus what ``record_errors`` is told): a trip writes
``circuit_breaker.trip`` and pauses entries through ``storage.trading_control``
(``entries_stopped``, source ``circuit_breaker``) so both books obey it; the spread trigger is fed by
the deciders' ``market.book_ticker`` messages (one per symbol and close), which the checker reads with
a consumer group of its own (``book_ticker_group``; on the Redis bus only: the in-process bus does not
cross the actor's process) into ``AnomalyMonitor.on_quote``; a reset writes
``circuit_breaker.reset`` and resumes only if the newest trading row is still the breaker's pause.
It syncs the universe (``storage.instruments.sync_universe``) every ``universe_sync_s``, and pumps
notifications: new ``positions`` entry/FINAL rows (fills), ``killswitch.*``, ``drift.alarm``,
``circuit_breaker.*`` and ``health.*`` events, and the daily report once a day.

Account snapshots are not written here: both books write ``account.snapshot`` events rows
(``storage.trading_control.account_row``) whenever their account changes, and ``account_snapshots``
rows at minute closes (``storage.account``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from core.anomaly import AnomalyConfig, AnomalyEvent, AnomalyMonitor
from core.errors import DataQualityError
from core.messages import BookTicker, SystemStatus, Topic
from core.notify import (
    Notification,
    NotifyConfig,
    breaker_notification,
    daily_report_notification,
    drift_notification,
    fill_notification,
    health_notification,
    killswitch_notification,
)
from storage import db, trading_control
from storage.instruments import sync_universe
from storage.schema import candles_1m, events, instruments, positions, risk_events

__all__ = ["BREAKER_SOURCE", "HEALTH_ACTOR_NAME", "HealthChecker", "HealthConfig", "start_health_actor"]

log = logging.getLogger(__name__)
HEALTH_ACTOR_NAME = "raytrade-health"
BREAKER_SOURCE = "circuit_breaker"
COMPONENTS = ("streams", "database", "bus", "serve", "mlflow", "clock")
_NOTIFIED_KINDS = ("killswitch.entries_blocked", "killswitch.resumed", "killswitch.close_requested",
                   "drift.alarm", "circuit_breaker.trip", "circuit_breaker.reset")  # fmt: skip


class HealthConfig(BaseModel):
    """The health checker's schedule and bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="run the health checker with `raytrade run`")
    interval_s: float = Field(10.0, gt=0, description="seconds between two checks")
    stale_stream_ms: int = Field(
        180_000, gt=0, description="a newest 1m candle older than this (after its close) is stale, ms"
    )
    db_slow_ms: float = Field(1000.0, gt=0, description="SELECT 1 slower than this is failing, ms")
    clock_max_offset_ms: int = Field(1000, gt=0, description="venue clock offset beyond this is failing, ms")
    universe_sync_s: float = Field(3600.0, gt=0, description="seconds between two universe syncs")
    check_serve: bool = Field(True, description="check Ray Serve's applications")
    check_mlflow: bool = Field(True, description="check the MLflow tracking server")
    circuit_breaker: bool = Field(True, description="let the anomaly monitor pause entries")
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    book_ticker_group: str = Field(
        "health", min_length=1, description="the bus consumer group the checker reads market.book_ticker with"
    )


@dataclass
class HealthChecker:
    """The checks and their effects, without Ray (the actor below is a thread around ``check``)."""

    config: HealthConfig
    database_url: str
    redis_url: str | None = None
    tracking_uri: str | None = None
    universe: tuple[str, ...] = ()
    rest_url: str | None = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    wall_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    source: str = "health"

    def __post_init__(self) -> None:
        self.engine = db.make_engine(self.database_url)
        self.monitor = AnomalyMonitor(self.config.anomaly)
        self.status: dict[str, dict[str, Any]] = {}
        self.checks = 0
        self._bus: Any = None
        self._last_sync_s = -float("inf")
        self._candle_seen: dict[str, int] = {}
        self._risk_cursor = self._event_cursor = 0
        self._position_cursor_ms = 0
        self._report_day: str | None = None
        self.notifier: Any = None
        self.sent: list[Notification] = []
        try:
            with self.engine.connect() as c:  # notify only what happens from now on
                self._event_cursor = int(c.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)
                self._risk_cursor = int(c.execute(sa.select(sa.func.max(risk_events.c.id))).scalar() or 0)
            self._position_cursor_ms = self.wall_ms()
            self._report_day = _day(self.wall_ms())
        except Exception:
            log.exception("health: could not read the cursors at start")
        self._quotes_subscribed = False
        if self.redis_url:  # quotes from now on: the group is created at start (a restart keeps its place)
            self._guard(self._subscribe_quotes)
        if self.notify.enabled:
            from exchange.notify import Notifier

            self.notifier = Notifier(self.notify)

    # --- one round ----------------------------------------------------------------------------------
    def check(self) -> dict[str, dict[str, Any]]:
        """Run every check once, record changes, run the breaker and the notifications; return the statuses."""
        now = self.wall_ms()
        results = {
            "database": self._guard(self._database),
            "streams": self._guard(lambda: self._streams(now)),
            "bus": self._guard(self._bus_ping),
            "serve": self._guard(self._serve) if self.config.check_serve else (None, "not checked", {}),
            "mlflow": self._guard(self._mlflow) if self.config.check_mlflow else (None, "not checked", {}),
            "clock": self._guard(self._clock),
        }
        for component, (ok, detail, figures) in results.items():
            self._record(now, component, ok, detail, figures)
        db_ok = results["database"][0] is True
        if db_ok:
            self._guard(lambda: self._anomalies(now))
            self._guard(lambda: self._sync_universe())
            self._guard(lambda: self._pump_notifications(now))
        self.checks += 1
        return self.status

    def record_errors(self, count: int = 1) -> None:
        """Count order/REST errors seen by a caller (the anomaly monitor's error rate)."""
        self._apply(self.monitor.on_error(self.wall_ms(), count))

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
        if self._bus is not None:
            self._guard(self._bus.close)
        self.engine.dispose()

    # --- checks: each returns (ok, detail, figures) -------------------------------------------------
    @staticmethod
    def _guard(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:
            log.warning("health: %s failed: %s", getattr(fn, "__name__", "a step"), type(e).__name__)
            return (False, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", {})

    def _database(self) -> tuple[bool, str, dict[str, Any]]:
        t0 = time.perf_counter()
        with self.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
        ms = (time.perf_counter() - t0) * 1000
        ok = ms <= self.config.db_slow_ms
        return ok, f"SELECT 1 in {ms:.1f} ms", {"latency_ms": round(ms, 2)}

    def _symbols(self) -> list[str]:
        if self.universe:
            return list(self.universe)
        with self.engine.connect() as c:
            return list(
                c.execute(sa.select(instruments.c.symbol).where(instruments.c.status == "active")).scalars()
            )

    def _streams(self, now: int) -> tuple[bool | None, str, dict[str, Any]]:
        symbols = self._symbols()
        q = (sa.select(candles_1m.c.symbol, sa.func.max(candles_1m.c.ts))
             .where(candles_1m.c.symbol.in_(symbols)).group_by(candles_1m.c.symbol))  # fmt: skip
        with self.engine.connect() as c:
            newest = {s: int(ts) for s, ts in c.execute(q)}
        if not symbols:
            return None, "no active symbols", {}
        ages = {s: (now - (newest[s] + 60_000)) if s in newest else None for s in symbols}
        stale = sorted(s for s, a in ages.items() if a is None or a > self.config.stale_stream_ms)
        worst = max((a for a in ages.values() if a is not None), default=None)
        detail = (f"stale: {', '.join(stale)}" if stale else "every symbol fresh") + (
            f"; oldest newest-candle age {worst} ms" if worst is not None else "")  # fmt: skip
        return not stale, detail, {"age_ms": ages, "stale": stale}

    def _bus_open(self) -> Any:
        if self._bus is None:
            from storage.bus import open_bus

            self._bus = open_bus(self.redis_url)
        return self._bus

    def _bus_ping(self) -> tuple[bool | None, str, dict[str, Any]]:
        if not self.redis_url:
            return None, "in-process bus (nothing to ping)", {}
        t0 = time.perf_counter()
        ok = bool(self._bus_open().ping())
        return ok, f"PING in {(time.perf_counter() - t0) * 1000:.1f} ms", {}

    def _serve(self) -> tuple[bool | None, str, dict[str, Any]]:
        import ray
        from ray import serve

        if not ray.is_initialized():
            return None, "Ray is not running here", {}
        try:
            apps = serve.status().applications
        except Exception as e:  # Serve not started
            return None, f"Serve not running ({type(e).__name__})", {}
        states = {name: str(getattr(a.status, "value", a.status)) for name, a in apps.items()}
        if not states:
            return None, "no Serve application", {}
        bad = sorted(n for n, s in states.items() if s != "RUNNING")
        return (
            not bad,
            f"not running: {', '.join(bad)}" if bad else "every application RUNNING",
            {"apps": states},
        )

    def _mlflow(self) -> tuple[bool | None, str, dict[str, Any]]:
        if not self.tracking_uri:
            return None, "no tracking URI", {}
        from mlflow.tracking import MlflowClient

        t0 = time.perf_counter()
        MlflowClient(self.tracking_uri).search_registered_models(max_results=1)
        return True, f"registry query in {(time.perf_counter() - t0) * 1000:.0f} ms", {}

    def _clock(self) -> tuple[bool | None, str, dict[str, Any]]:
        if not self.rest_url:
            return None, "no venue REST URL: offset unknown", {}
        import httpx

        t0 = self.wall_ms()
        server = int(httpx.get(f"{self.rest_url.rstrip('/')}/fapi/v1/time", timeout=5.0).json()["serverTime"])
        t1 = self.wall_ms()
        offset = server - (t0 + t1) // 2
        ok = abs(offset) <= self.config.clock_max_offset_ms
        return ok, f"venue clock offset {offset} ms (round trip {t1 - t0} ms)", {"offset_ms": offset}

    # --- effects ------------------------------------------------------------------------------------
    def _record(
        self, now: int, component: str, ok: bool | None, detail: str, figures: dict[str, Any]
    ) -> None:
        previous = self.status.get(component)
        self.status[component] = {"ok": ok, "detail": detail, "ts_ms": now, **figures}
        if self.redis_url:
            self._guard(lambda: self._publish(now, component, ok, detail))
        if previous is not None and previous["ok"] == ok:
            return
        if previous is None and ok is not False:
            return  # the first look: only a failure is news
        self._guard(lambda: self._write_event(now, f"health.{component}", None,
                                              {"ok": ok, "detail": detail, "was": None if previous is None else previous["ok"]}))  # fmt: skip

    def _publish(self, now: int, component: str, ok: bool | None, detail: str) -> None:
        self._bus_open().publish(Topic.SYSTEM_STATUS, SystemStatus(ts_ms=now, component=component, ok=bool(ok),
                                                            details={"ok": ok, "detail": detail}))  # fmt: skip

    def _write_event(self, ts: int, kind: str, symbol: str | None, payload: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(
                events.insert().values(ts=ts, kind=kind, source=self.source, symbol=symbol, payload=payload)
            )

    def _anomalies(self, now: int) -> None:
        symbols = self._symbols()
        since = min(self._candle_seen.values(), default=now - 3_600_000)
        q = (sa.select(candles_1m.c.symbol, candles_1m.c.ts, candles_1m.c.close)
             .where(candles_1m.c.symbol.in_(symbols), candles_1m.c.ts > since).order_by(candles_1m.c.ts))  # fmt: skip
        with self.engine.connect() as c:
            rows = c.execute(q).all()
            errors = c.execute(
                sa.select(risk_events.c.id).where(
                    risk_events.c.id > self._risk_cursor,
                    sa.or_(risk_events.c.event_type.like("%fail%"), risk_events.c.event_type.like("%error%"),
                           risk_events.c.event_type.like("%reject%")),
                )
            ).scalars().all()  # fmt: skip
            top = c.execute(sa.select(sa.func.max(risk_events.c.id))).scalar()
        self._risk_cursor = int(top or self._risk_cursor)
        happened: list[AnomalyEvent] = []
        for symbol, ts, close in rows:
            if int(ts) <= self._candle_seen.get(symbol, -1):
                continue
            self._candle_seen[symbol] = int(ts)
            happened += self.monitor.on_tick(symbol, int(ts) + 60_000, float(close))
        if errors:
            happened += self.monitor.on_error(now, len(errors))
        happened += self._quotes()
        happened += self.monitor.check(now)
        self._apply(happened)

    def _subscribe_quotes(self) -> None:
        self._bus_open().subscribe(Topic.MARKET_BOOK_TICKER, self.config.book_ticker_group, self.source)
        self._quotes_subscribed = True

    def _quotes(self, max_reads: int = 20) -> list[AnomalyEvent]:
        """The book tickers published since the last read, through the monitor's spread check (a bus
        error is logged: the candle and error triggers go on)."""
        if not self.redis_url:
            return []
        happened: list[AnomalyEvent] = []
        topic, group = Topic.MARKET_BOOK_TICKER, self.config.book_ticker_group
        try:
            bus = self._bus_open()
            if not self._quotes_subscribed:
                self._subscribe_quotes()
            for _ in range(max_reads):
                try:
                    got = bus.read(topic, group, self.source, count=1000)
                except DataQualityError as e:  # set aside as dead letters; the good ones come next read
                    log.warning("health: %s", e)
                    continue
                if not got:
                    break
                for d in got:
                    q = d.message
                    if isinstance(q, BookTicker):
                        happened += self.monitor.on_quote(q.symbol, q.ts_ms, q.bid_price, q.ask_price)
                bus.ack(topic, group, [d.id for d in got])
        except Exception as e:
            log.warning("health: reading %s failed: %s", topic.value, type(e).__name__)
        return happened

    def _apply(self, happened: list[AnomalyEvent]) -> None:
        for e in happened:
            payload = {
                "trigger": e.trigger,
                "detail": e.detail,
                "value": e.value if e.value == e.value else None,
            }
            self._write_event(e.ts_ms, e.event_kind, e.symbol, payload)
            if not self.config.circuit_breaker:
                continue
            state = trading_control.latest_state(self.engine)
            if e.kind == "trip" and state.state == "running":
                trading_control.record_state(
                    self.engine, "entries_stopped", e.ts_ms, BREAKER_SOURCE, e.detail
                )
            elif e.kind == "reset" and state.state == "entries_stopped" and state.source == BREAKER_SOURCE:
                trading_control.record_state(self.engine, "running", e.ts_ms, BREAKER_SOURCE, e.detail)

    def _sync_universe(self) -> None:
        if not self.universe or time.monotonic() - self._last_sync_s < self.config.universe_sync_s:
            return
        self._last_sync_s = time.monotonic()
        sync_universe(self.engine, self.universe)

    # --- notifications ------------------------------------------------------------------------------
    def _send(self, n: Notification) -> None:
        self.sent = [*self.sent[-99:], n]
        if self.notifier is not None:
            self.notifier.send(n)

    def _pump_notifications(self, now: int) -> None:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(events.c.id, events.c.ts, events.c.kind, events.c.symbol, events.c.payload)
                .where(events.c.id > self._event_cursor,
                       sa.or_(events.c.kind.in_(_NOTIFIED_KINDS), events.c.kind.startswith("health.")))
                .order_by(events.c.id)
            ).all()  # fmt: skip
            fills = c.execute(
                sa.select(positions).where(positions.c.ts > self._position_cursor_ms,
                                           positions.c.event_type.in_(["entry", "FINAL"]))
                .order_by(positions.c.ts)
            ).mappings().all()  # fmt: skip
        for r in rows:
            self._event_cursor = max(self._event_cursor, int(r.id))
            payload = r.payload if isinstance(r.payload, dict) else {}
            if r.kind.startswith("killswitch."):
                self._send(killswitch_notification(int(r.ts), r.kind, payload))
            elif r.kind == "drift.alarm":
                self._send(drift_notification(int(r.ts), r.symbol, payload))
            elif r.kind.startswith("circuit_breaker."):
                self._send(breaker_notification(int(r.ts), r.kind.endswith("trip"), str(payload.get("trigger")),
                                                r.symbol, str(payload.get("detail") or "")))  # fmt: skip
            elif r.kind.startswith("health."):
                self._send(health_notification(int(r.ts), r.kind.removeprefix("health."), payload.get("ok"),
                                               str(payload.get("detail") or "")))  # fmt: skip
        for f in fills:
            self._position_cursor_ms = max(self._position_cursor_ms, int(f["ts"]))
            self._send(fill_notification(dict(f)))
        day = _day(now)
        if (
            self._report_day != day
            and datetime.fromtimestamp(now / 1000, UTC).hour >= self.notify.daily_report_hour_utc
        ):
            self._send(self.daily_report(now, self._report_day or day))
            self._report_day = day

    def daily_report(self, now: int, day: str) -> Notification:
        """The daily report of UTC ``day`` (YYYY-MM-DD): realized PnL and trades of the positions closed
        that day, the newest equity of the books' account snapshots, the positions still open."""
        start = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
        with self.engine.connect() as c:
            closed = c.execute(
                sa.select(positions.c.realized_pnl).where(positions.c.event_type == "FINAL",
                                                          positions.c.ts >= start, positions.c.ts < start + 86_400_000)
            ).scalars().all()  # fmt: skip
            snap = c.execute(
                sa.select(events.c.payload).where(events.c.kind == trading_control.ACCOUNT_KIND)
                .order_by(events.c.id.desc()).limit(1)
            ).scalar()  # fmt: skip
            finals = sa.select(positions.c.trade_group_id).where(positions.c.event_type == "FINAL")
            open_symbols = c.execute(
                sa.select(positions.c.symbol).where(positions.c.event_type == "entry",
                                                    positions.c.trade_group_id.not_in(finals)).distinct()
            ).scalars().all()  # fmt: skip
        pnls = [float(p or 0.0) for p in closed]
        report = {"pnl": sum(pnls), "trades": len(pnls), "wins": sum(p > 0 for p in pnls),
                  "equity": (snap or {}).get("equity") if isinstance(snap, dict) else None,
                  "open_positions": sorted(open_symbols)}  # fmt: skip
        return daily_report_notification(now, day, report)


def _day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def _actor_class() -> Any:
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1)
    class HealthActor:
        """A thread running ``HealthChecker.check`` every ``interval_s``."""

        def __init__(self, checker_kwargs: dict[str, Any]) -> None:
            from exchange.logging_safety import install_redaction

            notify = checker_kwargs.get("notify")
            install_redaction(notify.secrets() if notify is not None else ())
            self.checker = HealthChecker(**checker_kwargs)
            self._stop = threading.Event()
            self._lock = threading.Lock()
            self._thread = threading.Thread(target=self._run, name="health", daemon=True)
            self._thread.start()

        def _run(self) -> None:
            while not self._stop.is_set():
                with self._lock:
                    try:
                        self.checker.check()
                    except Exception:
                        log.exception("health: a check round failed")
                self._stop.wait(self.checker.config.interval_s)

        def status(self) -> dict[str, Any]:
            with self._lock:
                return {"checks": self.checker.checks, "components": dict(self.checker.status),
                        "tripped": self.checker.monitor.tripped,
                        "notifications": [n.title for n in self.checker.sent]}  # fmt: skip

        def record_errors(self, count: int = 1) -> None:
            with self._lock:
                self.checker.record_errors(count)

        def stop(self) -> None:
            self._stop.set()
            self._thread.join(timeout=30)
            self.checker.close()

    return HealthActor


def start_health_actor(name: str = HEALTH_ACTOR_NAME, **checker_kwargs: Any) -> Any:
    """Start (or return the running) named health actor with ``HealthChecker(**checker_kwargs)``."""
    return _actor_class().options(name=name, get_if_exists=True).remote(checker_kwargs)
