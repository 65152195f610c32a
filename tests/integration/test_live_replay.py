"""``mode="live"`` on the replay venue, end to end: ingest actors → Serve Predictor → policy → the live
book, whose orders go to the venue's paper broker through the signed client (protected entries, exits
on the venue, reconciliation). The ledger is then compared with the venue's own record: every fill
the venue made is in the ledger once, positions agree, and no protection rests on a flat position.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from model_fixtures import SHADOW_MODEL, install_production_model
from test_shadow import END, HISTORY, REPLAY, START, T0, settings_for

from core.synthetic import generate_market
from pipelines.market import write_synthetic_market
from raytrade.realtime import ShadowOptions, ShadowSession
from raytrade.settings import Settings
from storage import db
from storage.lake import Lake
from storage.ledger import LedgerStore
from storage.schema import engine_signals, risk_events

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")


@pytest.fixture(scope="module")
def live_data(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Settings:
    tmp: Path = tmp_path_factory.mktemp("live")
    settings = settings_for(tmp, redis_url).model_copy(update={"universe": SYMBOLS})
    write_synthetic_market(
        generate_market(list(SYMBOLS), T0, HISTORY + REPLAY + 5, seed=21), Lake(settings.lake_root)
    )
    install_production_model(settings, T0)
    return settings


def test_a_live_session_on_the_replay_venue_keeps_the_ledger_equal_to_the_venue(live_data: Settings) -> None:
    options = ShadowOptions(symbols=SYMBOLS, model_name=SHADOW_MODEL, group_size=2, start_ms=START, end_ms=END,
                            mark_ticks_per_minute=6, predictor_poll_s=0.0, speed="step", mode="live",
                            session_id="live-replay")  # fmt: skip
    session = ShadowSession(live_data, options)
    try:
        session.start()
        broker = session.venue.broker
        assert session.wait(timeout_s=300), "the live session did not reach the end of the replay"
        report = session.stop()
    finally:
        session.shutdown()
    ex = report["execution"]
    if not (ex["mode"] == "live" and ex["entries"] >= 3):  # say why: skips, refusals, trading state, events
        engine = db.make_engine(live_data.database_url)
        with engine.connect() as c:
            kinds = c.execute(
                sa.text("SELECT kind, ts, source, payload FROM events WHERE kind LIKE 'kill%'")
            ).all()
            risks = c.execute(
                sa.text("SELECT event_type, message, count(*) FROM risk_events GROUP BY event_type, message")
            ).all()
        engine.dispose()
        pytest.fail(
            f"too few live entries: {ex}; skips {report.get('skip_reasons')}; events {kinds}; risk {risks}"
        )
    assert ex["protected"] + ex["flattened"] == ex["entries"] - ex["rejected"] and ex["unresolved"] == 0
    assert ex["naked_ms_max"] <= 1_000.0

    engine = db.make_engine(live_data.database_url)
    store = LedgerStore(engine)
    venue_fills = sorted((f.symbol, f.trade_id, Decimal(f.qty)) for f in broker.order_state.fills)
    ledger_fills = sorted((f.symbol, f.trade_id, f.qty) for s in SYMBOLS for f in store.fills(s))
    assert ledger_fills == venue_fills and len(venue_fills) >= 2 * 3, (
        ledger_fills,
        venue_fills,
    )  # entries, exits
    venue_positions = {s: Decimal(p.amount) for s, p in broker.positions.items() if Decimal(p.amount) != 0}
    ledger_positions = {s: p.qty for s, p in store.positions().items() if p.qty != 0}
    assert ledger_positions == venue_positions == {}  # flattened at the end of the replay
    assert [a for a in broker.algos.values() if a.status == "NEW"] == []  # no orphan protection
    with engine.connect() as c:
        signals = c.execute(sa.select(sa.func.count()).select_from(engine_signals)
                            .where(engine_signals.c.engine == "policy")).scalar_one()  # fmt: skip
        engines = {
            r[0] for r in c.execute(sa.select(engine_signals.c.engine, engine_signals.c.reason).distinct())
        }
        naked = c.execute(sa.select(sa.func.count()).select_from(risk_events)
                          .where(risk_events.c.event_type == "entry_unresolved")).scalar_one()  # fmt: skip
    engine.dispose()
    assert signals == ex["entries"] and naked == 0, engines
