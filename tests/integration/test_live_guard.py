"""raytrade.live_guard on a migrated SQLite database: the token file, the typed phrase, the §16.2
criteria computed from the production model's shadow rows, and the recorded override."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.errors import FatalError
from raytrade.live_guard import (
    CONFIRM_FILE,
    LiveCriteria,
    check_live_allowed,
    confirmation_phrase,
    create_confirm_token,
    record_override,
)
from raytrade.settings import load_settings
from storage import db
from storage.bulk import write_rows
from storage.instruments import sync_universe
from storage.model_catalog import ModelRow, set_production_row, upsert_model_row

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
DAY, MIN = 86_400_000, 60_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    return load_settings()


@pytest.fixture
def engine(settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    e = db.make_engine(settings.database_url)
    db.upgrade(e)
    sync_universe(e, SYMBOLS)
    yield e
    e.dispose()


def _model(engine: sa.Engine, name: str = "lgbm_multi", version: str = "1", production: bool = True) -> str:
    model_id = str(uuid.uuid4())
    upsert_model_row(engine, ModelRow(
        model_id=model_id, created_at_ms=T0 - DAY, algo="lightgbm", strategy=name, mlflow_version=version,
        mlflow_run_id=None, feature_schema_version=1, label_spec_hash="h", train_start_ms=T0 - 90 * DAY,
        train_end_ms=T0 - DAY, artifact_uri="file:///x",
    ))  # fmt: skip
    if production:
        set_production_row(engine, name, model_id)
    return model_id


def _shadow(
    engine: sa.Engine,
    model_id: str,
    *,
    days: float = 15,
    pnls: tuple[float, ...] = (12.0, -5.0, 8.0),
    gap_minutes: int = 0,
    blocked: tuple[tuple[str, ...], ...] = (),
    session: str = "shadow-abc",
) -> None:
    """A shadow record: one signal per symbol and minute over ``days`` (less a gap), trades spread over it."""
    n = int(days * DAY // MIN) + 1
    minutes = [m for m in range(n) if not (n // 2 <= m < n // 2 + gap_minutes)]
    trade_minutes = [
        int(n * (k + 1) / (len(pnls) + len(blocked) + 1)) for k in range(len(pnls) + len(blocked))
    ]
    rows, pos, risk = [], [], []
    for m in minutes:
        for s in SYMBOLS:
            entry = s == "BTCUSDT" and m in trade_minutes
            rows.append({"symbol": s, "ts": T0 + m * MIN, "model_id": model_id, "model_version": "1",
                         "ev_long": 0.1, "ev_short": -0.1, "decision": "LONG" if entry else "FLAT"})  # fmt: skip
    for k, m in enumerate(trade_minutes):
        ts = T0 + m * MIN
        if k < len(pnls):
            group = f"{session}:BTCUSDT:{ts}"
            base = {
                "trade_group_id": group,
                "symbol": "BTCUSDT",
                "side": "LONG",
                "mode": "shadow",
                "amt": 0.01,
            }
            pos.append({**base, "ts": ts + MIN, "event_type": "entry", "realized_pnl": None})
            pos.append({**base, "ts": ts + 30 * MIN, "event_type": "FINAL", "realized_pnl": pnls[k]})
        else:
            reasons = list(blocked[k - len(pnls)])
            risk.append({"ts": ts + MIN, "event_type": "entry_blocked", "symbol": "BTCUSDT", "severity": 1,
                         "message": "blocked", "details": {"reasons": reasons, "session": session,
                                                           "intent": {"symbol": "BTCUSDT", "decision_ts": ts}}})  # fmt: skip
    write_rows(engine, "signals", rows)
    if pos:
        write_rows(engine, "positions", pos)
    if risk:
        write_rows(engine, "risk_events", risk)


def _confirm_with(token: str, asked: list[str] | None = None):
    def confirm(prompt: str) -> str:
        if asked is not None:
            asked.append(prompt)
        return confirmation_phrase(token)

    return confirm


NOW = T0 + 16 * DAY


def test_a_record_meeting_every_criterion_with_the_token_and_phrase_is_approved(settings, engine):
    model_id = _model(engine)
    _shadow(engine, model_id)
    token = create_confirm_token(settings, NOW - 60_000)
    path = settings.data_dir / CONFIRM_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and json.loads(path.read_text())["token"] == token
    asked: list[str] = []
    approval = check_live_allowed(settings, confirm=_confirm_with(token, asked), now_ms=NOW, engine=engine)
    assert f"Type 'LIVE {token[-6:]}'" in asked[0] and "lgbm_multi v1" in asked[0]
    assert approval.model_id == model_id and approval.override is None and approval.token_tail == token[-6:]
    figures = {r.name: r for r in approval.criteria}
    assert all(r.passed for r in approval.criteria)
    assert figures["shadow_days"].value == pytest.approx(15.0) and figures["trades"].value == 3
    assert figures["data_missing_rate"].value == 0.0 and figures["order_failure_rate"].value == 0.0
    assert figures["max_drawdown_pct"].value == pytest.approx(5.0 / 10_012.0)
    assert figures["worst_daily_loss_pct"].value == pytest.approx(5.0 / 10_012.0)
    assert "no drift metrics recorded" in figures["drift_warnings_per_day"].detail
    assert not path.exists()  # used once


def test_without_the_token_file_live_is_refused_before_any_prompt(settings, engine):
    _shadow(engine, _model(engine))

    def never(prompt: str) -> str:
        raise AssertionError("asked for the phrase although the token file is missing")

    with pytest.raises(FatalError, match=r"no confirmation token file .*LIVE_CONFIRM.*raytrade live-confirm"):
        check_live_allowed(settings, confirm=never, now_ms=NOW, engine=engine)


def test_a_wrong_typed_phrase_stale_or_open_token_is_refused(settings, engine):
    _shadow(engine, _model(engine))
    token = create_confirm_token(settings, NOW)
    with pytest.raises(FatalError, match="typed confirmation does not match"):
        check_live_allowed(settings, confirm=lambda _: f"live {token[-6:]}", now_ms=NOW, engine=engine)
    with pytest.raises(FatalError, match="typed confirmation does not match"):
        check_live_allowed(settings, confirm=lambda _: f"LIVE {token[-6:]} ", now_ms=NOW, engine=engine)
    with pytest.raises(FatalError, match=r"made 25\.0 h ago \(at most 24\.0 h\)"):
        check_live_allowed(settings, confirm=_confirm_with(token), now_ms=NOW + 25 * 3_600_000, engine=engine)
    os.chmod(settings.data_dir / CONFIRM_FILE, 0o644)
    with pytest.raises(FatalError, match="readable by others"):
        check_live_allowed(settings, confirm=_confirm_with(token), now_ms=NOW, engine=engine)


def test_a_short_lossy_gappy_record_lists_every_failed_criterion(settings, engine):
    model_id = _model(engine)
    # 10 days; a 3-hour outage; a 600 USDT loss in a day (6% > 2% limit) and a drawdown > 5%;
    # 1 of 4 entries failed on a venue filter, one more blocked by a risk limit (not a failure)
    _shadow(engine, model_id, days=10, pnls=(-600.0, 10.0), gap_minutes=180,
            blocked=(("FILTER_MIN_NOTIONAL",), ("MAX_POSITIONS",)))  # fmt: skip
    token = create_confirm_token(settings, NOW)
    with pytest.raises(FatalError) as e:
        check_live_allowed(
            settings, confirm=_confirm_with(token), now_ms=NOW, engine=engine,
            criteria=LiveCriteria(max_drawdown_pct=0.05),
        )  # fmt: skip
    text = str(e.value)
    assert "lgbm_multi v1 misses spec 001 §16.2" in text and "--override-criteria" in text
    assert "FAIL shadow_days: 10 (limit 14)" in text
    assert "FAIL data_missing_rate: 0.0124" in text  # 180 of 14401 closes
    assert "FAIL order_failure_rate: 0.25 (limit 0.02) — 1 failed of 4 entries tried (2 blocked)" in text
    assert "FAIL max_drawdown_pct: 0.06 (limit 0.05)" in text
    assert "FAIL worst_daily_loss_pct: 0.06 (limit 0.02)" in text
    assert "trades" not in text.split("misses")[1].split("FAIL shadow_days")[0]
    assert (settings.data_dir / CONFIRM_FILE).exists()  # not used up by a refusal


def test_the_record_of_another_model_does_not_count(settings, engine):
    other = _model(engine, name="other", production=False)
    _shadow(engine, other)
    _model(engine)  # production, with no shadow decisions
    create_confirm_token(settings, NOW)
    with pytest.raises(FatalError, match="FAIL shadow_days: 0 .*no shadow decisions recorded"):
        check_live_allowed(settings, confirm=lambda _: "", now_ms=NOW, engine=engine)


def test_no_production_model_or_several_are_refused(settings, engine):
    create_confirm_token(settings, NOW)
    with pytest.raises(FatalError, match=r"no production model \(raytrade promote\)"):
        check_live_allowed(settings, confirm=lambda _: "", now_ms=NOW, engine=engine)
    _model(engine, name="a")
    _model(engine, name="b")
    with pytest.raises(FatalError, match=r"several production models \(a v1, b v1\)"):
        check_live_allowed(settings, confirm=lambda _: "", now_ms=NOW, engine=engine)
    with pytest.raises(FatalError, match="FAIL shadow_days"):  # naming one picks it
        check_live_allowed(settings, confirm=lambda _: "", now_ms=NOW, engine=engine, model_name="b")


def test_a_recorded_override_for_the_production_model_allows_a_failing_record(settings, engine):
    model_id = _model(engine)
    _shadow(engine, model_id, days=3)
    record_override(engine, model_id=str(uuid.uuid4()), who="eve", why="another model", now_ms=NOW - 2)
    token = create_confirm_token(settings, NOW)
    with pytest.raises(
        FatalError, match="FAIL shadow_days: 3"
    ):  # an override of another model does not count
        check_live_allowed(settings, confirm=_confirm_with(token), now_ms=NOW, engine=engine)
    with pytest.raises(FatalError, match="who and why"):
        record_override(engine, model_id=model_id, who="alice", why=" ", now_ms=NOW - 1)
    record_override(engine, model_id=model_id, who="alice", why="risk desk approved 3 days", now_ms=NOW - 1)
    approval = check_live_allowed(settings, confirm=_confirm_with(token), now_ms=NOW, engine=engine)
    assert approval.override is not None and approval.override["who"] == "alice"
    assert not next(r for r in approval.criteria if r.name == "shadow_days").passed
    assert approval.lines[-1] == "override by alice: risk desk approved 3 days"


def test_the_guard_opens_the_settings_database_when_given_no_engine(settings, engine):
    _shadow(engine, _model(engine))
    token = create_confirm_token(settings, NOW)
    assert check_live_allowed(settings, confirm=_confirm_with(token), now_ms=NOW).model_id is not None
