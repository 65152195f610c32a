"""The kill switch: a pure state machine that stops new entries (and may ask for a flatten) on a trigger.

Triggers (issue 15, seed 003 §5): the user data stream silent or closed beyond a bound, market data
stale, a spike of failed orders, the daily loss limit, a kill file, a signal, and the operator (CLI,
API). Each is a method taking the time as ``ts_ms`` (no clock is read here) and returning the
``KillSwitchEvent``s it produced, so the caller records every trigger and every effect.

Two kinds of trigger:

- Conditions (``user_stream_silent``, ``user_stream_closed``, ``market_data_stale``,
  ``order_failures``, ``daily_loss``, ``file``) are judged on every call. The onset of one (it did
  not hold at the previous call) is a ``triggered`` event; calls while it keeps holding produce
  nothing; when it stops holding a ``cleared`` event says so, and the switch stays active.
- One-shot triggers (``signal``, ``operator``) produce ``triggered`` once per activation; a repeat
  while active produces nothing, unless it asks to close positions that were not yet to be closed.

The first trigger activates the switch (``entries_blocked``); a trigger whose reason is in
``KillSwitchConfig.close_positions_on``, or an operator asking for it, also requests a flatten
(``close_requested``, once per activation). ``resume`` lifts the switch only when no condition still
holds at its ``ts_ms`` (time-bound conditions — the daily loss until the next UTC day, a failure
spike until its failures leave the window — expire by themselves; the others need a fresh
observation that they are over); otherwise it returns a ``resume_refused`` event naming each.

``state()`` is a ``KillSwitchState`` snapshot (persisted by ``storage.killswitch_store``);
``KillSwitch(config, state)`` restores one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

DAY_MS = 86_400_000

Reason = Literal[
    "user_stream_silent",
    "user_stream_closed",
    "market_data_stale",
    "order_failures",
    "daily_loss",
    "file",
    "signal",
    "operator",
]
REASONS: tuple[Reason, ...] = get_args(Reason)
#: Reasons that are conditions: they hold until observed over (or, for some, until a time passes).
CONDITION_REASONS: tuple[Reason, ...] = REASONS[:6]
EventKind = Literal["triggered", "cleared", "entries_blocked", "close_requested", "resumed", "resume_refused"]


class KillSwitchConfig(BaseModel):
    """When the kill switch fires (defaults for 1m trading) and which triggers also flatten."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_stream_silence_ms: int = Field(
        60_000,
        gt=0,
        description="no user-stream message and no pong for this long fires the switch, ms (the stream's "
        "own watchdog replaces a connection after 30 s)",
    )
    user_stream_closed_ms: int = Field(
        30_000, ge=0, description="a user stream closed (not reconnected) for this long fires the switch, ms"
    )
    market_data_stale_ms: int = Field(
        30_000,
        gt=0,
        description="no market tick for this long fires the switch, ms (markPrice comes every 1 s)",
    )
    order_failures_max: int = Field(
        5, ge=1, description="this many failed order requests within order_failure_window_ms fire the switch"
    )
    order_failure_window_ms: int = Field(60_000, gt=0, description="window of the order-failure count, ms")
    close_positions_on: frozenset[Reason] = Field(
        frozenset(),
        description="reasons whose trigger also asks to cancel every order and flatten (the operator asks "
        "by itself); default none: the exchange-side stops protect what is open",
    )


@dataclass(frozen=True, slots=True)
class Condition:
    """A trigger condition that holds: since ``since_ms``; it expires at ``until_ms`` when that is known."""

    reason: Reason
    since_ms: int
    detail: str
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class KillSwitchEvent:
    """One trigger or effect of the kill switch.

    ``kind``: ``triggered`` (``reason`` fired), ``cleared`` (condition ``reason`` stopped holding),
    ``entries_blocked`` (the switch became active), ``close_requested`` (cancel everything and
    flatten), ``resumed``, ``resume_refused`` (``detail`` says which conditions hold).
    """

    kind: EventKind
    ts_ms: int
    reason: Reason | None
    detail: str
    source: str

    @property
    def event_kind(self) -> str:
        """The ``events`` table kind of this event: ``killswitch.<kind>``."""
        return f"killswitch.{self.kind}"


@dataclass(frozen=True, slots=True)
class KillSwitchState:
    """The switch at one moment: active since ``since_ms`` for ``reason`` (the first) and ``reasons``."""

    active: bool = False
    close_positions: bool = False
    reason: Reason | None = None
    reasons: tuple[Reason, ...] = ()
    since_ms: int | None = None
    detail: str = ""
    holding: tuple[Condition, ...] = field(default=())

    @property
    def entries_allowed(self) -> bool:
        """Whether new entries may be sent."""
        return not self.active


class KillSwitch:
    """The kill switch's state machine (module docstring). Not thread-safe: one owner."""

    def __init__(self, config: KillSwitchConfig | None = None, state: KillSwitchState | None = None) -> None:
        self.config = config or KillSwitchConfig()
        state = state or KillSwitchState()
        self._active = state.active
        self._close = state.close_positions
        self._reason = state.reason
        self._reasons: list[Reason] = list(state.reasons)
        self._since_ms = state.since_ms
        self._detail = state.detail
        self._holding: dict[Reason, Condition] = {c.reason: c for c in state.holding}
        self._failures_ms: deque[int] = deque()

    # State ------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the switch is on (no new entries)."""
        return self._active

    @property
    def entries_allowed(self) -> bool:
        """Whether new entries may be sent."""
        return not self._active

    @property
    def close_positions(self) -> bool:
        """Whether a flatten (cancel every order, close every position) was requested."""
        return self._close

    def state(self) -> KillSwitchState:
        """A snapshot of the switch."""
        return KillSwitchState(
            self._active, self._close, self._reason, tuple(self._reasons), self._since_ms, self._detail,
            tuple(self._holding.values()),
        )  # fmt: skip

    def holding(self, ts_ms: int) -> tuple[Condition, ...]:
        """The conditions that still hold at ``ts_ms`` (time-bound ones expire by themselves)."""
        return tuple(c for c in self._holding.values() if c.until_ms is None or ts_ms < c.until_ms)

    # Conditions -------------------------------------------------------------------------------------
    def user_stream_silent(self, ts_ms: int, last_event_ms: int) -> tuple[KillSwitchEvent, ...]:
        """Judge the user stream's silence: ``last_event_ms`` is its last message or pong.

        A message after a close (``user_stream_closed``) also clears that condition.
        """
        events: list[KillSwitchEvent] = []
        closed = self._holding.get("user_stream_closed")
        if closed is not None and last_event_ms > closed.since_ms:
            events += self._clear(
                ts_ms, "user_stream_closed", "a user-stream message arrived after the close"
            )
        silent_ms = ts_ms - last_event_ms
        limit = self.config.user_stream_silence_ms
        detail = f"no user-stream message or pong for {silent_ms} ms (limit {limit} ms)"
        return (*events, *self._judge(ts_ms, "user_stream_silent", silent_ms >= limit, detail, "watchdog"))

    def user_stream_closed(
        self, ts_ms: int, closed_since_ms: int | None = None
    ) -> tuple[KillSwitchEvent, ...]:
        """Judge a closed user stream: closed since ``closed_since_ms``, or for good when None (fires now)."""
        if closed_since_ms is None:
            return self._judge(
                ts_ms, "user_stream_closed", True, "the user stream is closed for good", "watchdog"
            )
        closed_ms = ts_ms - closed_since_ms
        limit = self.config.user_stream_closed_ms
        detail = f"the user stream has been closed for {closed_ms} ms (limit {limit} ms)"
        return self._judge(ts_ms, "user_stream_closed", closed_ms >= limit, detail, "watchdog")

    def market_data(self, ts_ms: int, last_tick_ms: int) -> tuple[KillSwitchEvent, ...]:
        """Judge market data staleness: ``last_tick_ms`` is the oldest symbol's latest tick."""
        stale_ms = ts_ms - last_tick_ms
        limit = self.config.market_data_stale_ms
        detail = f"no market tick for {stale_ms} ms (limit {limit} ms)"
        return self._judge(ts_ms, "market_data_stale", stale_ms >= limit, detail, "watchdog")

    def order_result(self, ts_ms: int, ok: bool) -> tuple[KillSwitchEvent, ...]:
        """Count an order request's result; ``order_failures_max`` failures within the window fire."""
        window_ms, limit = self.config.order_failure_window_ms, self.config.order_failures_max
        if not ok:
            self._failures_ms.append(ts_ms)
        while self._failures_ms and self._failures_ms[0] <= ts_ms - window_ms:
            self._failures_ms.popleft()
        count = len(self._failures_ms)
        holds = count >= limit
        # with no further failure, the count drops below the limit when this one leaves the window
        until_ms = self._failures_ms[count - limit] + window_ms if holds else None
        detail = f"{count} failed order requests within {window_ms} ms (limit {limit})"
        return self._judge(ts_ms, "order_failures", holds, detail, "orders", until_ms)

    def daily_loss(self, ts_ms: int) -> tuple[KillSwitchEvent, ...]:
        """Fire on the daily loss limit; the condition holds until the next UTC day."""
        until_ms = (ts_ms // DAY_MS + 1) * DAY_MS
        return self._judge(ts_ms, "daily_loss", True, "the daily loss limit was reached", "risk", until_ms)

    def file(self, ts_ms: int, path_present: bool) -> tuple[KillSwitchEvent, ...]:
        """Judge the kill file: present fires, absent clears the condition."""
        detail = "the kill file is present" if path_present else "the kill file is gone"
        return self._judge(ts_ms, "file", path_present, detail, "file")

    # One-shot triggers ------------------------------------------------------------------------------
    def signal(self, ts_ms: int, signum: int) -> tuple[KillSwitchEvent, ...]:
        """Fire on signal ``signum`` (SIGTERM, SIGINT …)."""
        return self._fire(ts_ms, "signal", f"signal {signum}", "signal", close=False)

    def operator(
        self, ts_ms: int, close_positions: bool, source: str, detail: str = ""
    ) -> tuple[KillSwitchEvent, ...]:
        """Fire on the operator's request (``source``: who or what, e.g. ``cli:alice``), closing positions if asked."""
        text = detail or "operator kill" + (" with close positions" if close_positions else "")
        return self._fire(ts_ms, "operator", text, source, close=close_positions)

    def resume(self, ts_ms: int, source: str, detail: str = "") -> tuple[KillSwitchEvent, ...]:
        """Lift the switch unless a condition still holds (then one ``resume_refused`` event says which).

        Expired time-bound conditions are cleared first. Nothing happens when the switch is off.
        """
        events = [
            event
            for condition in list(self._holding.values())
            if condition.until_ms is not None and ts_ms >= condition.until_ms
            for event in self._clear(ts_ms, condition.reason, "expired")
        ]
        if not self._active:
            return tuple(events)
        still = self.holding(ts_ms)
        if still:
            why = "; ".join(f"{c.reason}: {c.detail}" for c in still)
            events.append(
                KillSwitchEvent("resume_refused", ts_ms, still[0].reason, f"still holds: {why}", source)
            )
            return tuple(events)
        reasons = ", ".join(self._reasons)
        text = f"resumed (was active since {self._since_ms} for {reasons})" + (
            f": {detail}" if detail else ""
        )
        self._active, self._close, self._reason, self._reasons = False, False, None, []
        self._since_ms, self._detail = None, ""
        events.append(KillSwitchEvent("resumed", ts_ms, None, text, source))
        return tuple(events)

    # Internals --------------------------------------------------------------------------------------
    def _judge(
        self, ts_ms: int, reason: Reason, holds: bool, detail: str, source: str, until_ms: int | None = None
    ) -> tuple[KillSwitchEvent, ...]:
        if not holds:
            return self._clear(ts_ms, reason, detail) if reason in self._holding else ()
        held = self._holding.get(reason)
        if held is not None:  # still holding: no new event, but a time bound may move
            if until_ms is not None and held.until_ms != until_ms:
                self._holding[reason] = Condition(reason, held.since_ms, held.detail, until_ms)
            return ()
        self._holding[reason] = Condition(reason, ts_ms, detail, until_ms)
        return self._fire(ts_ms, reason, detail, source, close=False, onset=True)

    def _clear(self, ts_ms: int, reason: Reason, detail: str) -> tuple[KillSwitchEvent, ...]:
        if self._holding.pop(reason, None) is None:
            return ()
        return (KillSwitchEvent("cleared", ts_ms, reason, detail, "watchdog"),)

    def _fire(
        self, ts_ms: int, reason: Reason, detail: str, source: str, *, close: bool, onset: bool = False
    ) -> tuple[KillSwitchEvent, ...]:
        events: list[KillSwitchEvent] = []
        if onset or reason not in self._reasons:
            events.append(KillSwitchEvent("triggered", ts_ms, reason, detail, source))
        if reason not in self._reasons:
            self._reasons.append(reason)
        if not self._active:
            self._active, self._reason, self._since_ms, self._detail = True, reason, ts_ms, detail
            events.append(KillSwitchEvent("entries_blocked", ts_ms, reason, detail, source))
        if (close or reason in self.config.close_positions_on) and not self._close:
            self._close = True
            events.append(KillSwitchEvent("close_requested", ts_ms, reason, detail, source))
        return tuple(events)
