"""The kill switch's state machine (core.killswitch): every trigger, no repeated events, resume rules."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.killswitch import (
    DAY_MS,
    KillSwitch,
    KillSwitchConfig,
    KillSwitchEvent,
    KillSwitchState,
)

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
CFG = KillSwitchConfig(
    user_stream_silence_ms=60_000,
    user_stream_closed_ms=30_000,
    market_data_stale_ms=30_000,
    order_failures_max=3,
    order_failure_window_ms=60_000,
)


def kinds(events: tuple[KillSwitchEvent, ...]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.reason) for e in events]


def fired(reason: str) -> list[tuple[str, str | None]]:
    return [("triggered", reason), ("entries_blocked", reason)]


@pytest.fixture
def ks() -> KillSwitch:
    return KillSwitch(CFG)


# Config ---------------------------------------------------------------------------------------------
def test_config_refuses_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="user_stream_silence_s"):
        KillSwitchConfig(user_stream_silence_s=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="order_failures_max"):
        KillSwitchConfig(order_failures_max=0)
    with pytest.raises(ValidationError, match="close_positions_on"):
        KillSwitchConfig(close_positions_on=frozenset({"moon_phase"}))


def test_a_fresh_switch_allows_entries_and_resume_does_nothing(ks: KillSwitch) -> None:
    assert ks.entries_allowed and not ks.active and ks.state() == KillSwitchState()
    assert ks.resume(T0, "cli") == ()


# Triggers -------------------------------------------------------------------------------------------
def test_user_stream_silent_fires_at_the_bound_and_not_before(ks: KillSwitch) -> None:
    assert ks.user_stream_silent(T0 + 59_999, T0) == ()
    assert ks.entries_allowed
    events = ks.user_stream_silent(T0 + 60_000, T0)
    assert kinds(events) == fired("user_stream_silent")
    assert "60000 ms" in events[0].detail and events[0].event_kind == "killswitch.triggered"
    state = ks.state()
    assert state.active and not state.close_positions and state.reason == "user_stream_silent"
    assert state.since_ms == T0 + 60_000 and not state.entries_allowed


def test_user_stream_closed_fires_after_the_grace_or_at_once_when_closed_for_good() -> None:
    ks = KillSwitch(CFG)
    assert ks.user_stream_closed(T0 + 29_999, T0) == ()
    assert kinds(ks.user_stream_closed(T0 + 30_000, T0)) == fired("user_stream_closed")
    other = KillSwitch(CFG)
    assert kinds(other.user_stream_closed(T0)) == fired("user_stream_closed")


def test_a_user_stream_message_after_the_close_clears_the_closed_condition(ks: KillSwitch) -> None:
    ks.user_stream_closed(T0)
    assert kinds(ks.user_stream_silent(T0 + 1_000, T0 - 5)) == []  # an old message: still closed
    assert kinds(ks.user_stream_silent(T0 + 2_000, T0 + 1_500)) == [("cleared", "user_stream_closed")]
    assert ks.active  # clearing a condition does not resume


def test_market_data_stale_fires(ks: KillSwitch) -> None:
    assert ks.market_data(T0 + 29_999, T0) == ()
    assert kinds(ks.market_data(T0 + 30_000, T0)) == fired("market_data_stale")


def test_order_failures_fire_on_a_spike_within_the_window_only(ks: KillSwitch) -> None:
    assert ks.order_result(T0, ok=False) == ()
    assert ks.order_result(T0 + 10_000, ok=False) == ()
    assert ks.order_result(T0 + 60_001, ok=False) == ()  # the first left the window: 2 in it
    assert ks.order_result(T0 + 60_002, ok=True) == ()
    assert ks.entries_allowed
    assert kinds(ks.order_result(T0 + 60_003, ok=False)) == fired("order_failures")
    assert "3 failed order requests" in ks.state().detail


def test_daily_loss_fires_and_holds_until_the_next_utc_day(ks: KillSwitch) -> None:
    at = T0 + 5 * 3_600_000
    assert kinds(ks.daily_loss(at)) == fired("daily_loss")
    refused = ks.resume(T0 + DAY_MS - 1, "cli")
    assert kinds(refused) == [("resume_refused", "daily_loss")]
    assert ks.active
    resumed = ks.resume(T0 + DAY_MS, "cli")
    assert kinds(resumed) == [("cleared", "daily_loss"), ("resumed", None)]
    assert ks.entries_allowed


def test_file_fires_while_present_and_clears_when_removed(ks: KillSwitch) -> None:
    assert ks.file(T0, path_present=False) == ()
    assert kinds(ks.file(T0 + 1, path_present=True)) == fired("file")
    assert ks.file(T0 + 2, path_present=True) == ()
    assert kinds(ks.file(T0 + 3, path_present=False)) == [("cleared", "file")]
    assert ks.active


def test_signal_fires_once(ks: KillSwitch) -> None:
    events = ks.signal(T0, signal.SIGTERM)
    assert kinds(events) == fired("signal") and f"signal {int(signal.SIGTERM)}" in events[0].detail
    assert ks.signal(T0 + 1, signal.SIGINT) == ()


def test_operator_kill_with_close_requests_the_flatten(ks: KillSwitch) -> None:
    events = ks.operator(T0, close_positions=True, source="cli:alice", detail="manual stop")
    assert kinds(events) == [*fired("operator"), ("close_requested", "operator")]
    assert all(e.source == "cli:alice" for e in events) and events[0].detail == "manual stop"
    assert ks.close_positions and ks.state().close_positions


def test_operator_escalating_to_close_adds_only_close_requested(ks: KillSwitch) -> None:
    ks.operator(T0, close_positions=False, source="cli")
    assert not ks.close_positions
    assert ks.operator(T0 + 1, close_positions=False, source="cli") == ()
    assert kinds(ks.operator(T0 + 2, close_positions=True, source="cli")) == [("close_requested", "operator")]
    assert ks.operator(T0 + 3, close_positions=True, source="cli") == ()


def test_a_reason_in_close_positions_on_requests_the_flatten() -> None:
    ks = KillSwitch(CFG.model_copy(update={"close_positions_on": frozenset({"daily_loss"})}))
    assert kinds(ks.market_data(T0 + 30_000, T0)) == fired("market_data_stale")
    assert not ks.close_positions
    assert kinds(ks.daily_loss(T0 + 30_000)) == [
        ("triggered", "daily_loss"),
        ("close_requested", "daily_loss"),
    ]
    assert ks.close_positions


# No spam --------------------------------------------------------------------------------------------
def test_repeated_triggers_while_active_produce_one_event_per_new_reason(ks: KillSwitch) -> None:
    all_events: list[KillSwitchEvent] = []
    for i in range(50):
        ts = T0 + 100_000 + i * 1_000
        all_events += ks.user_stream_silent(ts, T0)
        all_events += ks.market_data(ts, T0)
        all_events += ks.file(ts, path_present=True)
        all_events += ks.order_result(ts, ok=False)
        all_events += ks.daily_loss(ts)
        all_events += ks.signal(ts, signal.SIGTERM)
        all_events += ks.operator(ts, close_positions=False, source="cli")
    triggered = [str(e.reason) for e in all_events if e.kind == "triggered"]
    assert sorted(triggered) == sorted(
        [
            "user_stream_silent",
            "market_data_stale",
            "file",
            "order_failures",
            "daily_loss",
            "signal",
            "operator",
        ]
    )
    assert [e.kind for e in all_events].count("entries_blocked") == 1
    assert ks.state().reason == "user_stream_silent"
    assert ks.state().reasons[:3] == ("user_stream_silent", "market_data_stale", "file")


def test_a_condition_that_clears_and_returns_is_a_new_onset(ks: KillSwitch) -> None:
    ks.market_data(T0 + 30_000, T0)
    assert kinds(ks.market_data(T0 + 31_000, T0 + 30_500)) == [("cleared", "market_data_stale")]
    assert kinds(ks.market_data(T0 + 70_000, T0 + 30_500)) == [("triggered", "market_data_stale")]


# Resume ---------------------------------------------------------------------------------------------
def test_resume_is_refused_while_the_kill_file_is_present_and_says_why(ks: KillSwitch) -> None:
    ks.file(T0, path_present=True)
    (refused,) = ks.resume(T0 + 1, "cli:bob")
    assert refused.kind == "resume_refused" and refused.source == "cli:bob"
    assert "file" in refused.detail and "kill file is present" in refused.detail
    assert ks.active
    ks.file(T0 + 2, path_present=False)
    (resumed,) = ks.resume(T0 + 3, "cli:bob", "all clear")
    assert resumed.kind == "resumed" and "all clear" in resumed.detail and "file" in resumed.detail
    assert ks.state() == KillSwitchState()


def test_resume_is_refused_while_streams_are_silent_or_stale_until_seen_fresh(ks: KillSwitch) -> None:
    ks.user_stream_silent(T0 + 60_000, T0)
    ks.market_data(T0 + 60_000, T0)
    (refused,) = ks.resume(T0 + 61_000, "cli")
    assert "user_stream_silent" in refused.detail and "market_data_stale" in refused.detail
    ks.user_stream_silent(T0 + 62_000, T0 + 61_900)
    (refused,) = ks.resume(T0 + 62_000, "cli")
    assert "user_stream_silent" not in refused.detail and "market_data_stale" in refused.detail
    ks.market_data(T0 + 63_000, T0 + 62_900)
    assert kinds(ks.resume(T0 + 63_000, "cli")) == [("resumed", None)]


def test_resume_waits_for_failures_to_leave_the_window(ks: KillSwitch) -> None:
    for ts in (T0, T0 + 1_000, T0 + 2_000):
        ks.order_result(ts, ok=False)
    assert ks.active and ks.holding(T0 + 59_999)[0].until_ms == T0 + 60_000
    assert ks.holding(T0 + 60_000) == ()
    assert kinds(ks.resume(T0 + 59_999, "cli")) == [("resume_refused", "order_failures")]
    assert kinds(ks.resume(T0 + 60_000, "cli")) == [("cleared", "order_failures"), ("resumed", None)]


def test_one_shot_triggers_do_not_block_resume_and_resume_clears_close(ks: KillSwitch) -> None:
    ks.signal(T0, signal.SIGINT)
    ks.operator(T0 + 1, close_positions=True, source="api")
    assert kinds(ks.resume(T0 + 2, "cli")) == [("resumed", None)]
    assert not ks.close_positions and ks.entries_allowed
    assert kinds(ks.operator(T0 + 3, close_positions=False, source="api")) == fired("operator")


def test_state_round_trips_through_a_new_switch(ks: KillSwitch) -> None:
    ks.file(T0, path_present=True)
    ks.operator(T0 + 1, close_positions=True, source="cli")
    restored = KillSwitch(CFG, ks.state())
    assert restored.state() == ks.state() and not restored.entries_allowed
    assert restored.file(T0 + 2, path_present=True) == ()  # the held condition is not new
    assert kinds(restored.resume(T0 + 3, "cli")) == [("resume_refused", "file")]


# Property: entries are never allowed while active ---------------------------------------------------
_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "silent",
                "closed",
                "closed_for_good",
                "market",
                "order",
                "loss",
                "file",
                "signal",
                "operator",
                "resume",
            ]
        ),  # fmt: skip
        st.integers(0, 120_000),  # time step, ms
        st.integers(0, 120_000),  # age of the last event, ms
        st.booleans(),
    ),
    max_size=60,
)


def _apply(ks: KillSwitch, name: str, ts: int, age_ms: int, flag: bool) -> tuple[KillSwitchEvent, ...]:
    calls = {
        "silent": lambda: ks.user_stream_silent(ts, ts - age_ms),
        "closed": lambda: ks.user_stream_closed(ts, ts - age_ms),
        "closed_for_good": lambda: ks.user_stream_closed(ts),
        "market": lambda: ks.market_data(ts, ts - age_ms),
        "order": lambda: ks.order_result(ts, flag),
        "loss": lambda: ks.daily_loss(ts),
        "file": lambda: ks.file(ts, flag),
        "signal": lambda: ks.signal(ts, signal.SIGTERM),
        "operator": lambda: ks.operator(ts, flag, "cli"),
        "resume": lambda: ks.resume(ts, "cli"),
    }
    return calls[name]()


@settings(max_examples=300, deadline=None)
@given(_OPERATIONS)
def test_entries_are_never_allowed_while_active(operations: list[tuple[str, int, int, bool]]) -> None:
    ks = KillSwitch(CFG)
    ts = T0
    blocked = False  # the switch as its events tell it
    onsets: dict[str, int] = {}
    for name, step_ms, age_ms, flag in operations:
        ts += step_ms
        holding_before = ks.holding(ts)
        events = _apply(ks, name, ts, age_ms, flag)
        for event in events:
            assert event.ts_ms == ts
            if event.kind == "entries_blocked":
                assert not blocked
                blocked = True
            elif event.kind == "resumed":
                assert blocked and not ks.holding(ts)
                assert all(c.until_ms is not None and c.until_ms <= ts for c in holding_before)
                blocked = False
                onsets.clear()
            elif event.kind == "triggered":
                assert event.reason is not None
                onsets[event.reason] = onsets.get(event.reason, 0) + 1
                assert ks.active  # a trigger always leaves the switch on
            elif event.kind == "cleared":
                assert event.reason is not None
                onsets.pop(event.reason, None)
        assert all(count == 1 for count in onsets.values())  # no repeated trigger without a clear
        assert ks.active == blocked
        assert ks.entries_allowed == (not ks.active) == ks.state().entries_allowed
        assert not ks.close_positions or ks.active
        if ks.holding(ts):
            assert not ks.entries_allowed
