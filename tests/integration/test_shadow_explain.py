"""Signals of a real shadow session carry the Predictor's feature contributions (LightGBM pred_contrib)
on the entries, and only on them: replay venue → ingest → Serve Predictor → policy → signals → execution."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from model_fixtures import SHADOW_MODEL, install_production_model, long_biased_model

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.model import REQUIRED_TARGETS
from core.synthetic import generate_market
from pipelines.market import write_synthetic_market
from raytrade.realtime import ShadowOptions, ShadowSession
from raytrade.settings import Settings
from storage import db
from storage.lake import Lake
from storage.schema import features_1m, signals

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
T0 = 1_736_121_600_000
MINUTE = 60_000
HISTORY = 600
REPLAY = 12
START = T0 + HISTORY * MINUTE
END = START + REPLAY * MINUTE


@pytest.fixture(scope="module")
def session(tmp_path_factory, redis_url: str) -> Settings:
    tmp = tmp_path_factory.mktemp("shadow_explain")
    settings = Settings(
        _env_file=None, data_dir=tmp, universe=SYMBOLS, ray_num_cpus=2, redis_url=redis_url,
        label=LabelSpec(k_sl=0.35, k_tp=0.5, risk_mae_atr=0.5),
        # mae_max_atr 0.2: BTC (ATR/price ≈ 0.0017) fails the MAE gate (0.0005 ≥ 0.2·0.0017), the others enter
        policy=PolicyConfig(max_positions=50, position_notional_pct=0.05, btc_high_vol_action="none", mae_max_atr=0.2),
        risk=RiskConfig(max_positions=50, max_orders_per_s=100),
    )  # fmt: skip
    write_synthetic_market(
        generate_market(list(SYMBOLS), T0, HISTORY + REPLAY + 5, seed=21), Lake(settings.lake_root)
    )
    install_production_model(settings, T0)
    options = ShadowOptions(symbols=SYMBOLS, model_name=SHADOW_MODEL, group_size=2, start_ms=START, end_ms=END,
                            mark_ticks_per_minute=2, predictor_poll_s=0.0, session_id=f"explain-{uuid.uuid4().hex[:6]}",
                            speed="step")  # fmt: skip
    run = ShadowSession(settings, options)
    try:
        run.start()
        assert run.wait(timeout_s=240), "the shadow session did not reach the end of the replay"
        run.stop()
    finally:
        run.shutdown()
    return settings


def _table(settings: Settings, t: sa.Table) -> pd.DataFrame:
    engine = db.make_engine(settings.database_url)
    with engine.connect() as c:
        frame = pd.DataFrame([dict(r._mapping) for r in c.execute(sa.select(t).where(t.c.ts >= START))])
    engine.dispose()
    return frame


def test_entry_signals_carry_the_contributions_of_every_output(session: Settings) -> None:
    sig = _table(session, signals)
    assert len(sig) == len(SYMBOLS) * REPLAY
    entries, flat = sig[sig.decision != "FLAT"], sig[sig.decision == "FLAT"]
    assert len(entries) > 0 and len(flat) > 0, sig.decision.value_counts()
    feats = _table(session, features_1m).set_index(["symbol", "ts"])
    model = long_biased_model()  # the production model the session served (version 1)
    for row in entries.itertuples():
        explain = row.explain
        assert "contributions" in explain, (row.symbol, row.ts, explain)
        assert explain["price"] is not None and "cost_long" in explain  # the cost/penalty parts stay
        contrib = explain["contributions"]
        assert explain["contributions_model_version"] == row.model_version == "1"
        assert set(REQUIRED_TARGETS) <= set(contrib)
        for target, part in contrib.items():
            # a constant label (e_mae here) grows trees without splits: nothing contributes, top is empty
            assert isinstance(part["base"], float) and len(part["top"]) <= 5
            assert all(t["feature"] in FEATURE_NAMES for t in part["top"])
            mags = [abs(t["contribution"]) for t in part["top"]]
            assert mags == sorted(mags, reverse=True), target
        assert len(contrib["er_long"]["top"]) == 5
        # the stored features of that minute give the same contributions
        stored = feats.loc[(row.symbol, row.ts), "features"]
        x = np.array([[np.nan if stored[n] is None else stored[n] for n in FEATURE_NAMES]], np.float64)
        again = model.contributions(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)[0]
        for target in REQUIRED_TARGETS:
            assert [t["feature"] for t in again[target]["top"]] == [
                t["feature"] for t in contrib[target]["top"]
            ]
            np.testing.assert_allclose(again[target]["base"], contrib[target]["base"], rtol=1e-12)


def test_non_entry_signals_carry_no_contributions(session: Settings) -> None:
    sig = _table(session, signals)
    flat = sig[sig.decision == "FLAT"]
    assert len(flat) > 0
    assert not flat["explain"].map(lambda e: "contributions" in e).any()
    assert flat["explain"].map(lambda e: "cost_long" in e).all()
