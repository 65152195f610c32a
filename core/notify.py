"""Operator notifications (issue 18, seeds 002/003): what is said, to whom, and how often. Pure.

``Notification`` is one message: a ``kind`` (``fill``, ``killswitch``, ``drift``, ``circuit_breaker``,
``health``, ``daily_report``), a title, a body, a severity and a ``key`` naming what it is about. The
``*_notification`` functions build them from the rows and events the system writes; ``slack_payload``
and ``telegram_payload`` give the JSON the Slack incoming webhook and the Telegram Bot API
``sendMessage`` take. ``Throttle`` decides which notifications go: kinds not enabled are dropped, a
repeat of the same ``key`` within ``dedup_window_s`` is dropped, and at most ``max_per_minute`` go in
any 60 s (the rest are counted as dropped, never queued: a burst of fills must not hold back a kill
switch message for minutes). Times are passed in (``ts_ms``); no clock is read here.

``NotifyConfig`` holds the channels' secrets (``SecretStr``; the sender in ``exchange.notify`` masks
them in every log line and error).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "KINDS",
    "Notification",
    "NotifyConfig",
    "Throttle",
    "breaker_notification",
    "daily_report_notification",
    "drift_notification",
    "fill_notification",
    "health_notification",
    "killswitch_notification",
    "slack_payload",
    "telegram_payload",
]

Kind = Literal["fill", "killswitch", "drift", "circuit_breaker", "health", "daily_report"]
KINDS: tuple[Kind, ...] = ("fill", "killswitch", "drift", "circuit_breaker", "health", "daily_report")
Severity = Literal["info", "warning", "critical"]
_ICON = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}


class NotifyConfig(BaseModel):
    """Slack and Telegram channels and which events they get. A channel is on when its secrets are set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming webhook URL (a secret)")
    telegram_bot_token: SecretStr | None = Field(None, description="Telegram bot token (a secret)")
    telegram_chat_id: SecretStr | None = Field(None, description="Telegram chat id the bot writes to")
    events: frozenset[Kind] = Field(frozenset(KINDS), description="which kinds of notification are sent")
    dedup_window_s: float = Field(
        300.0, ge=0, description="a repeat of the same subject within this is dropped, s"
    )
    max_per_minute: int = Field(
        20, ge=1, description="notifications sent at most per 60 s (the rest dropped)"
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="HTTP timeout of one request, s")
    retries: int = Field(
        3, ge=0, le=10, description="retries of a request answered 429 or 5xx (or not at all)"
    )
    retry_max_wait_s: float = Field(30.0, gt=0, description="a Retry-After longer than this is capped, s")
    daily_report_hour_utc: int = Field(
        0, ge=0, le=23, description="hour (UTC) the daily report of the day before goes"
    )

    @property
    def slack_enabled(self) -> bool:
        return self.slack_webhook_url is not None and bool(self.slack_webhook_url.get_secret_value())

    @property
    def telegram_enabled(self) -> bool:
        return (
            self.telegram_bot_token is not None
            and bool(self.telegram_bot_token.get_secret_value())
            and self.telegram_chat_id is not None
            and bool(self.telegram_chat_id.get_secret_value())
        )

    @property
    def enabled(self) -> bool:
        """Whether any channel is configured."""
        return self.slack_enabled or self.telegram_enabled

    def secrets(self) -> tuple[str, ...]:
        """The secret values, for redaction."""
        values = (self.slack_webhook_url, self.telegram_bot_token, self.telegram_chat_id)
        out = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        if self.slack_enabled and self.slack_webhook_url is not None:
            # the webhook's secret is its path (/services/T…/B…/…): an error page may echo it without the host
            url = self.slack_webhook_url.get_secret_value()
            path = url.split("://", 1)[-1].partition("/")[2]
            if path:
                out.append("/" + path)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to the operator; ``key`` names its subject (for de-duplication)."""

    kind: Kind
    ts_ms: int
    title: str
    body: str
    severity: Severity = "info"
    key: str = ""

    def text(self) -> str:
        """The plain text of the message: icon, title, body and the UTC time."""
        when = datetime.fromtimestamp(self.ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{_ICON[self.severity]} {self.title}\n{self.body}\n{when}".strip()


def slack_payload(n: Notification) -> dict[str, Any]:
    """The Slack incoming-webhook body: ``text`` (the fallback) and one section block in mrkdwn."""
    return {
        "text": n.text(),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{n.title}*\n{n.body}"}}],
    }


def telegram_payload(n: Notification, chat_id: str) -> dict[str, Any]:
    """The Telegram ``sendMessage`` body: plain text (no parse mode, so no escaping can break it)."""
    return {"chat_id": chat_id, "text": n.text(), "disable_web_page_preview": True}


class Throttle:
    """Which notifications go (module docstring). Not thread-safe: one owner."""

    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self._last_by_key: dict[tuple[str, str], int] = {}
        self._sent_ms: deque[int] = deque()
        self.dropped: dict[str, int] = {"disabled": 0, "duplicate": 0, "rate": 0}

    def allow(self, n: Notification) -> bool:
        """Whether ``n`` goes now; if so it counts toward the limits."""
        if n.kind not in self.config.events:
            self.dropped["disabled"] += 1
            return False
        subject = (n.kind, n.key or n.title)
        last = self._last_by_key.get(subject)
        if last is not None and n.ts_ms - last < self.config.dedup_window_s * 1000:
            self.dropped["duplicate"] += 1
            return False
        while self._sent_ms and self._sent_ms[0] <= n.ts_ms - 60_000:
            self._sent_ms.popleft()
        if len(self._sent_ms) >= self.config.max_per_minute:
            self.dropped["rate"] += 1
            return False
        self._sent_ms.append(n.ts_ms)
        self._last_by_key[subject] = n.ts_ms
        return True


def _num(value: Any, digits: int = 2) -> str:
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return "n/a"


def fill_notification(row: Mapping[str, Any]) -> Notification:
    """A position opened or closed: a ``positions`` row (``event_type`` entry or FINAL) as a dict."""
    symbol, side, ts = str(row.get("symbol")), str(row.get("side")), int(row.get("ts") or 0)
    mode = row.get("mode") or "shadow"
    if row.get("event_type") == "FINAL":
        pnl = row.get("realized_pnl")
        title = f"{symbol} {side} closed ({row.get('exit_reason') or 'exit'}) [{mode}]"
        body = f"exit {_num(row.get('exit_price'), 4)}, qty {_num(abs(float(row.get('amt') or 0)), 6)}, PnL {_num(pnl)} USDT"
        severity: Severity = "info"
    else:
        title = f"{symbol} {side} opened [{mode}]"
        body = (f"entry {_num(row.get('entry_price'), 4)}, qty {_num(abs(float(row.get('amt') or 0)), 6)}, "
                f"SL {_num(row.get('sl_price'), 4)}, TP {_num(row.get('tp_price'), 4)}")  # fmt: skip
        severity = "info"
    key = f"{row.get('trade_group_id')}:{symbol}:{row.get('event_type')}:{ts}"
    return Notification("fill", ts, title, body, severity, key)


def killswitch_notification(ts_ms: int, kind: str, payload: Mapping[str, Any]) -> Notification:
    """A ``killswitch.*`` events row: the switch on (``entries_blocked``), off (``resumed``) or a trigger."""
    what = kind.removeprefix("killswitch.")
    event = payload.get("event") if isinstance(payload.get("event"), Mapping) else payload
    detail = str(event.get("detail") or "") if isinstance(event, Mapping) else ""
    reason = event.get("reason") if isinstance(event, Mapping) else None
    titles = {"entries_blocked": "Kill switch ON: new entries blocked", "resumed": "Kill switch OFF: trading resumed",
              "close_requested": "Kill switch: flatten requested", "triggered": f"Kill switch trigger: {reason}",
              "resume_refused": "Kill switch: resume refused", "cleared": f"Kill switch condition cleared: {reason}"}  # fmt: skip
    severity: Severity = "info" if what in ("resumed", "cleared") else "critical"
    return Notification("killswitch", ts_ms, titles.get(what, f"Kill switch {what}"), detail, severity,
                        f"{what}:{reason}:{ts_ms}")  # fmt: skip


def drift_notification(ts_ms: int, symbol: str | None, payload: Mapping[str, Any]) -> Notification:
    """A ``drift.alarm`` events row."""
    parts = [
        f"{k} {_num(v, 3)}"
        for k, v in payload.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    return Notification("drift", ts_ms, f"Drift alarm: {symbol or 'universe'}", ", ".join(parts) or str(dict(payload)),
                        "warning", f"drift:{symbol}")  # fmt: skip


def breaker_notification(
    ts_ms: int, tripped: bool, trigger: str, symbol: str | None, detail: str
) -> Notification:
    """The circuit breaker tripped (entries paused) or reset."""
    if tripped:
        title = f"Circuit breaker tripped ({trigger}{' ' + symbol if symbol else ''}): entries paused"
        return Notification("circuit_breaker", ts_ms, title, detail, "critical", f"trip:{trigger}:{symbol}")
    return Notification("circuit_breaker", ts_ms, "Circuit breaker reset: entries resumed", detail, "info",
                        f"reset:{ts_ms}")  # fmt: skip


def health_notification(ts_ms: int, component: str, ok: bool | None, detail: str) -> Notification:
    """A component's health changed."""
    state = "OK" if ok else ("unknown" if ok is None else "FAILING")
    return Notification("health", ts_ms, f"Health: {component} {state}", detail, "info" if ok else "warning",
                        f"health:{component}:{state}")  # fmt: skip


def daily_report_notification(ts_ms: int, day: str, report: Mapping[str, Any]) -> Notification:
    """The daily report of UTC ``day``: ``pnl`` (realized, USDT), ``trades``, ``wins``, ``equity``,
    ``open_positions`` (symbols)."""
    trades, wins = int(report.get("trades") or 0), int(report.get("wins") or 0)
    rate = f"{wins / trades:.0%}" if trades else "n/a"
    open_positions = report.get("open_positions") or []
    body = "\n".join([
        f"PnL (realized): {_num(report.get('pnl'))} USDT",
        f"Trades: {trades}, win rate {rate}",
        f"Equity: {_num(report.get('equity'))} USDT",
        f"Open positions: {len(open_positions)}" + (f" ({', '.join(map(str, open_positions))})" if open_positions else ""),
    ])  # fmt: skip
    return Notification("daily_report", ts_ms, f"Daily report {day}", body, "info", f"daily:{day}")
