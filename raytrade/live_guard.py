"""The two-step guard in front of live trading (issue 15; spec 001 §16.2).

``check_live_allowed`` approves a live start only when all three hold:

1. **a confirmation token file** ``<data_dir>/LIVE_CONFIRM`` that the operator made with
   ``raytrade live-confirm`` (0600, a random token, at most ``LiveCriteria.confirm_token_max_age_s``
   old);
2. **the production model's shadow record meets spec 001 §16.2** — ``LiveCriteria``, defaults from
   the spec: at least two weeks of shadow; data missing below a threshold; the (virtual) order
   failure rate below a threshold; drawdown and the worst day's loss within the risk limits; drift
   warnings at a manageable rate — *or* a recorded override (an ``events`` row ``live.override``
   for that production model, written by ``raytrade live-confirm --override-criteria --reason``);
3. **a typed confirmation**: ``confirm(prompt)`` returns exactly ``LIVE <last 6 characters of the
   token>``. It is asked last, only when 1 and 2 hold; on success the token file is removed, so
   every live start needs a new ``live-confirm``.

Anything missing raises one ``FatalError`` listing every failure with its figures.

The shadow record is read from the database, by the production model's decisions: its ``signals``
rows (the decider writes one per symbol and 1m close with the model's id) are matched, on symbol
and decision time, to the ``positions`` rows of mode ``shadow`` (trade_group_id
``<session>:<symbol>:<decision ts>``: ``entry`` rows, and ``FINAL`` rows carrying realized PnL net
of fees and funding), to the execution actor's ``entry_blocked`` risk events, and the
``signal.skipped`` events and ``drift_metrics`` of the same span are counted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from core.errors import FatalError
from raytrade.settings import Settings
from storage.schema import drift_metrics, events, models, positions, risk_events, signals

__all__ = [
    "CONFIRM_FILE",
    "OVERRIDE_KIND",
    "CriterionResult",
    "LiveApproval",
    "LiveCriteria",
    "ShadowRecord",
    "check_live_allowed",
    "create_confirm_token",
    "evaluate_shadow_record",
    "load_shadow_record",
    "production_model",
    "record_override",
]

CONFIRM_FILE = "LIVE_CONFIRM"
OVERRIDE_KIND = "live.override"
_DAY_MS = 86_400_000
_BAR_MS = 60_000


class LiveCriteria(BaseModel):
    """Spec 001 §16.2's conditions for leaving shadow, as thresholds (the spec names them, not their values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_shadow_days: float = Field(
        14.0, ge=0, description="shadow record span at least, days (§16.2: 2 weeks)"
    )
    min_trades: int = Field(
        1, ge=0, description="closed shadow trades at least (an empty record proves nothing)"
    )
    max_data_missing_rate: float = Field(
        0.01, ge=0, le=1, description="symbol-closes without a decision (skipped or down) / expected, at most"
    )
    max_order_failure_rate: float = Field(
        0.02, ge=0, le=1, description="virtual entries that failed / attempted, at most"
    )
    order_failure_reasons: tuple[str, ...] = Field(
        ("SIGNAL_STALE", "INVALID_ORDER", "INSUFFICIENT_MARGIN", "MAX_SLIPPAGE", "FILTER_MIN_NOTIONAL",
         "FILTER_MARKET_LOT_SIZE", "FILTER_PRICE", "LEVERAGE_BRACKET", "NO_PROTECTION"),
        description="entry_blocked reasons that count as an order failure (risk-limit denials do not)",
    )  # fmt: skip
    max_drawdown_pct: float = Field(
        0.10, gt=0, le=1, description="max drawdown of shadow equity, fraction (as the promotion gate's)"
    )
    daily_loss_limit_pct: float | None = Field(
        None,
        gt=0,
        le=1,
        description="worst UTC day's realized loss / equity at most; None: risk.daily_loss_limit_pct",
    )
    equity_usdt: float = Field(
        10_000.0, gt=0, description="shadow book's starting equity (SimConfig default)"
    )
    drift_psi_warn: float = Field(
        0.2, gt=0, description="a drift_metrics row with PSI at least this is a warning"
    )
    max_drift_warnings_per_day: float = Field(1.0, ge=0, description="drift warnings per shadow day at most")
    confirm_token_max_age_s: int = Field(
        86_400, gt=0, description="LIVE_CONFIRM older than this is refused, s"
    )


@dataclass(frozen=True, slots=True)
class CriterionResult:
    name: str
    passed: bool
    value: float
    limit: float
    detail: str = ""

    def line(self) -> str:
        mark = "ok" if self.passed else "FAIL"
        return f"{mark:4} {self.name}: {self.value:.6g} (limit {self.limit:.6g}){' — ' + self.detail if self.detail else ''}"


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """The production model's shadow record, as counted from the database."""

    model_id: str
    first_ts: int | None
    last_ts: int | None
    decided: int  # signals rows (symbol-closes with a decision)
    skipped: int  # signal.skipped events in the span
    symbols: int
    entries: int
    blocked: int
    failed: int
    trades: tuple[tuple[int, float], ...]  # (exit ts, realized pnl) of FINAL rows, in time order
    drift_rows: int
    drift_warnings: int


@dataclass(frozen=True, slots=True)
class LiveApproval:
    """What allowed a live start: the token's tail, the model, each criterion with its figures, or the override."""

    token_tail: str
    model_id: str | None
    criteria: tuple[CriterionResult, ...]
    override: dict[str, Any] | None = None
    approved_ms: int = 0
    lines: tuple[str, ...] = field(default=())


# --- the confirmation token ----------------------------------------------------------------------


def confirm_path(settings: Settings) -> Path:
    return settings.data_dir / CONFIRM_FILE


def create_confirm_token(settings: Settings, now_ms: int) -> str:
    """Write a new random token to ``<data_dir>/LIVE_CONFIRM`` (mode 0600, replacing any); return it."""
    token = secrets.token_hex(16)
    path = confirm_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CONFIRM_FILE}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"token": token, "created_ms": int(now_ms)}, f)
    os.replace(tmp, path)
    return token


def confirmation_phrase(token: str) -> str:
    """The exact text the operator types: ``LIVE <last 6 characters of the token>``."""
    return f"LIVE {token[-6:]}"


def _read_token(settings: Settings, now_ms: int, criteria: LiveCriteria) -> tuple[str | None, str | None]:
    """(token, None) or (None, what is wrong)."""
    path = confirm_path(settings)
    if not path.exists():
        return None, f"no confirmation token file {path}: run `raytrade live-confirm` first"
    if os.stat(path).st_mode & 0o077:
        return (
            None,
            f"{path} is readable by others (mode {oct(os.stat(path).st_mode & 0o777)}); make a new one",
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        token, created_ms = str(doc["token"]), int(doc["created_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{path} is not a confirmation token file: run `raytrade live-confirm` again"
    if len(token) < 16:
        return None, f"{path} holds a token too short: run `raytrade live-confirm` again"
    age_s = (now_ms - created_ms) / 1000
    if age_s > criteria.confirm_token_max_age_s or age_s < -60:
        return None, (
            f"{path} was made {age_s / 3600:.1f} h ago (at most {criteria.confirm_token_max_age_s / 3600:.1f} h): "
            "run `raytrade live-confirm` again"
        )
    return token, None


# --- the production model and its shadow record ---------------------------------------------------


def production_model(engine: sa.Engine, model_name: str | None = None) -> tuple[str | None, str]:
    """(model_id, description) of the production model (of ``model_name`` when given), or (None, why not)."""
    q = sa.select(models.c.model_id, models.c.strategy, models.c.mlflow_version).where(models.c.is_production)
    if model_name is not None:
        q = q.where(models.c.strategy == model_name)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(models.c.strategy)).all()
    if not rows:
        return None, f"no production model{' of ' + model_name if model_name else ''} (raytrade promote)"
    if len(rows) > 1:
        names = ", ".join(f"{r.strategy} v{r.mlflow_version}" for r in rows)
        return None, f"several production models ({names}): name the one to trade"
    r = rows[0]
    return str(r.model_id), f"{r.strategy} v{r.mlflow_version}"


def _decision_key(trade_group_id: str) -> tuple[str, int] | None:
    parts = trade_group_id.rsplit(":", 2)
    if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
        return None
    return parts[1], int(parts[2])


def load_shadow_record(engine: sa.Engine, model_id: str, criteria: LiveCriteria) -> ShadowRecord:
    """Count the shadow record of ``model_id`` (see the module docstring for what is matched to what)."""
    own = signals.c.model_id == model_id
    with engine.connect() as conn:
        first_ts, last_ts, decided = conn.execute(
            sa.select(sa.func.min(signals.c.ts), sa.func.max(signals.c.ts), sa.func.count()).where(own)
        ).one()
        if decided == 0:
            return ShadowRecord(model_id, None, None, 0, 0, 0, 0, 0, 0, (), 0, 0)
        symbols = {r[0] for r in conn.execute(sa.select(signals.c.symbol).where(own).distinct())}
        entered = {
            (r.symbol, int(r.ts))
            for r in conn.execute(
                sa.select(signals.c.symbol, signals.c.ts).where(own, signals.c.decision != "FLAT")
            )
        }
        in_span = (first_ts, last_ts + _BAR_MS)
        skipped_rows = conn.execute(
            sa.select(events.c.symbol).where(events.c.kind == "signal.skipped", events.c.ts.between(*in_span))
        ).all()
        pos_rows = conn.execute(
            sa.select(
                positions.c.trade_group_id, positions.c.event_type, positions.c.ts, positions.c.realized_pnl
            )
            .where(positions.c.mode == "shadow", positions.c.event_type.in_(("entry", "FINAL")))
            .where(positions.c.ts >= first_ts)
        ).all()
        blocked_rows = conn.execute(
            sa.select(risk_events.c.symbol, risk_events.c.details).where(
                risk_events.c.event_type == "entry_blocked", risk_events.c.ts.between(*in_span)
            )
        ).all()
        drift_rows, drift_warnings = conn.execute(
            sa.select(
                sa.func.count(), sa.func.count().filter(drift_metrics.c.psi >= criteria.drift_psi_warn)
            ).where(drift_metrics.c.ts.between(*in_span), drift_metrics.c.symbol.in_(symbols))
        ).one()
    skipped = sum(1 for r in skipped_rows if r.symbol is None or r.symbol in symbols)
    entries, trades = 0, []
    for r in pos_rows:
        if _decision_key(r.trade_group_id) not in entered:
            continue
        if r.event_type == "entry":
            entries += 1
        else:
            trades.append((int(r.ts), float(r.realized_pnl or 0.0)))
    blocked = failed = 0
    failure_reasons = set(criteria.order_failure_reasons)
    for b in blocked_rows:
        details = b.details if isinstance(b.details, dict) else {}
        intent = details.get("intent") or {}
        if (b.symbol, int(intent.get("decision_ts", -1))) not in entered:
            continue
        blocked += 1
        failed += bool(failure_reasons & set(details.get("reasons") or ()))
    return ShadowRecord(
        model_id, int(first_ts), int(last_ts), int(decided), skipped, len(symbols), entries, blocked, failed,
        tuple(sorted(trades)), int(drift_rows), int(drift_warnings),
    )  # fmt: skip


def _drawdown_and_worst_day(
    trades: Sequence[tuple[int, float]], equity_usdt: float
) -> tuple[float, float, str]:
    equity = peak = equity_usdt
    max_dd = 0.0
    day_start: dict[int, float] = {}
    day_pnl: dict[int, float] = {}
    for ts, pnl in trades:
        day = ts // _DAY_MS
        day_start.setdefault(day, equity)
        day_pnl[day] = day_pnl.get(day, 0.0) + pnl
        equity += pnl
        peak = max(peak, equity)
        max_dd = max(max_dd, (peak - equity) / peak if peak > 0 else 1.0)
    worst, worst_day = 0.0, ""
    for day, pnl in day_pnl.items():
        loss = -pnl / day_start[day] if day_start[day] > 0 else 1.0
        if loss > worst:
            worst, worst_day = loss, dt.datetime.fromtimestamp(day * 86_400, tz=dt.UTC).date().isoformat()
    return max_dd, worst, worst_day


def evaluate_shadow_record(
    record: ShadowRecord, criteria: LiveCriteria, daily_loss_limit_pct: float
) -> tuple[CriterionResult, ...]:
    """Judge ``record`` against each §16.2 criterion; return every result with its figure and limit."""
    if record.first_ts is None or record.last_ts is None:
        return (
            CriterionResult(
                "shadow_days", False, 0.0, criteria.min_shadow_days, "no shadow decisions recorded"
            ),
        )
    days = (record.last_ts - record.first_ts) / _DAY_MS
    expected = ((record.last_ts - record.first_ts) // _BAR_MS + 1) * max(record.symbols, 1)
    missing = max(0.0, 1.0 - record.decided / expected)
    attempts = record.entries + record.blocked
    failure_rate = record.failed / attempts if attempts else 0.0
    max_dd, worst, worst_day = _drawdown_and_worst_day(record.trades, criteria.equity_usdt)
    limit = criteria.daily_loss_limit_pct or daily_loss_limit_pct
    drift_per_day = record.drift_warnings / max(days, 1.0)
    return (
        CriterionResult("shadow_days", days >= criteria.min_shadow_days, days, criteria.min_shadow_days,
                        f"decisions from {_iso(record.first_ts)} to {_iso(record.last_ts)}"),
        CriterionResult("trades", len(record.trades) >= criteria.min_trades, len(record.trades), criteria.min_trades,
                        "closed shadow trades"),
        CriterionResult("data_missing_rate", missing <= criteria.max_data_missing_rate, missing,
                        criteria.max_data_missing_rate,
                        f"{record.decided} of {expected} symbol-closes decided, {record.skipped} skipped"),
        CriterionResult("order_failure_rate", failure_rate <= criteria.max_order_failure_rate, failure_rate,
                        criteria.max_order_failure_rate,
                        f"{record.failed} failed of {attempts} entries tried ({record.blocked} blocked)"),
        CriterionResult("max_drawdown_pct", max_dd <= criteria.max_drawdown_pct, max_dd, criteria.max_drawdown_pct,
                        f"on {criteria.equity_usdt:g} USDT"),
        CriterionResult("worst_daily_loss_pct", worst <= limit, worst, limit, worst_day and f"on {worst_day}"),
        CriterionResult("drift_warnings_per_day", drift_per_day <= criteria.max_drift_warnings_per_day, drift_per_day,
                        criteria.max_drift_warnings_per_day,
                        f"{record.drift_warnings} of {record.drift_rows} drift_metrics rows with PSI ≥ "
                        f"{criteria.drift_psi_warn:g}" + ("" if record.drift_rows else " (no drift metrics recorded)")),
    )  # fmt: skip


def _iso(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


# --- the override -------------------------------------------------------------------------------


def record_override(engine: sa.Engine, *, model_id: str, who: str, why: str, now_ms: int) -> None:
    """Record that ``who`` allows live trading of ``model_id`` without the §16.2 record, because ``why``."""
    if not who.strip() or not why.strip():
        raise FatalError("an override needs who and why (--reason)")
    with engine.begin() as conn:
        conn.execute(events.insert(), [{
            "ts": int(now_ms), "kind": OVERRIDE_KIND, "source": "cli", "symbol": None,
            "payload": {"who": who.strip(), "why": why.strip(), "model_id": model_id},
        }])  # fmt: skip


def _latest_override(engine: sa.Engine, model_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.ts, events.c.payload)
            .where(events.c.kind == OVERRIDE_KIND)
            .order_by(events.c.ts.desc())
        ).all()
    for r in rows:
        payload = r.payload if isinstance(r.payload, dict) else {}
        if payload.get("model_id") == model_id and payload.get("who") and payload.get("why"):
            return {"ts": int(r.ts), **payload}
    return None


# --- the guard ----------------------------------------------------------------------------------


def check_live_allowed(
    settings: Settings,
    *,
    confirm: Callable[[str], str],
    now_ms: int,
    criteria: LiveCriteria | None = None,
    model_name: str | None = None,
    engine: sa.Engine | None = None,
) -> LiveApproval:
    """Approve a live start or raise FatalError listing every unmet condition (see the module docstring).

    ``confirm`` is asked (last, once) for the typed phrase; on approval the token file is removed.
    """
    criteria = criteria or LiveCriteria()
    problems: list[str] = []
    token, why = _read_token(settings, now_ms, criteria)
    if why:
        problems.append(why)
    own_engine = engine is None
    eng = engine if engine is not None else _engine(settings)
    try:
        model_id, model_text = production_model(eng, model_name)
        results: tuple[CriterionResult, ...] = ()
        override = None
        if model_id is None:
            problems.append(model_text)
        else:
            record = load_shadow_record(eng, model_id, criteria)
            results = evaluate_shadow_record(record, criteria, settings.risk.daily_loss_limit_pct)
            if not all(r.passed for r in results):
                override = _latest_override(eng, model_id)
                if override is None:
                    failed = "\n".join("  " + r.line() for r in results if not r.passed)
                    problems.append(
                        f"the shadow record of {model_text} misses spec 001 §16.2:\n{failed}\n"
                        "  (or record an override: raytrade live-confirm --override-criteria --reason TEXT)"
                    )
    finally:
        if own_engine:
            eng.dispose()
    if problems or token is None:
        raise FatalError("live trading refused:\n- " + "\n- ".join(problems))
    phrase = confirmation_phrase(token)
    answer = confirm(f"Trading real money with {model_text}. Type '{phrase}' to go on: ")
    if answer != phrase:
        raise FatalError("live trading refused: the typed confirmation does not match the token")
    confirm_path(settings).unlink(missing_ok=True)
    lines = [r.line() for r in results]
    if override is not None:
        lines.append(f"override by {override['who']}: {override['why']}")
    return LiveApproval(token[-6:], model_id, results, override, int(now_ms), tuple(lines))


def _engine(settings: Settings) -> sa.Engine:
    from storage import db

    return db.make_engine(settings.database_url)


def criteria_lines(results: Iterable[CriterionResult]) -> list[str]:
    return [r.line() for r in results]
