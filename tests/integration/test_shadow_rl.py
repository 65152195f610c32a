"""A real shadow session with ``--policy rl``: replay venue → ingest → Serve Predictor → RLPolicy (the
RLModule of ``<model>-rl@production``) → entries through the execution actor's guards, every decision in
``rl_decisions`` with its probabilities, value estimate, model predictions and positions; the agent's CLOSE
and reversals of held positions carried out by the book (``RL_CLOSE`` FINAL rows). The version is registered
with ``decision_every`` 2: the agent is asked only at bars whose index is even, the Predictor's signals
are still stored every bar."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from model_fixtures import SHADOW_MODEL, install_production_model
from rl_fixtures import build_module, make_checkpoint

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.synthetic import generate_market
from pipelines.market import write_synthetic_market
from raytrade.realtime import ShadowOptions, ShadowSession
from raytrade.settings import Settings
from storage import db
from storage.lake import Lake
from storage.registry import ModelRegistry
from storage.rl_registry import register_rl_checkpoint, rl_model_name, set_rl_production
from storage.schema import positions, rl_decisions, rl_models, signals

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
T0 = 1_736_121_600_000
MINUTE = 60_000
HISTORY = 600
REPLAY = 20
EVERY = 2  # the RL version's decision_every: decisions at even bar indices (START's is even)
START = T0 + HISTORY * MINUTE
END = START + REPLAY * MINUTE
SEED = 3


@pytest.fixture(scope="module")
def session(tmp_path_factory, redis_url: str) -> tuple[Settings, str, dict]:
    tmp = tmp_path_factory.mktemp("shadow_rl")
    settings = Settings(
        _env_file=None, data_dir=tmp, universe=SYMBOLS, ray_num_cpus=2, redis_url=redis_url,
        label=LabelSpec(k_sl=0.35, k_tp=0.5, risk_mae_atr=0.5),
        policy=PolicyConfig(max_positions=50, position_notional_pct=0.05, btc_high_vol_action="none"),
        risk=RiskConfig(max_positions=50, max_orders_per_s=100),
    )  # fmt: skip
    write_synthetic_market(
        generate_market(list(SYMBOLS), T0, HISTORY + REPLAY + 5, seed=21), Lake(settings.lake_root)
    )
    install_production_model(settings, T0)
    # the RL checkpoint registered without an engine: the session's start mirrors it into rl_models
    registry = ModelRegistry(settings.tracking_uri, artifact_root=settings.mlflow_artifact_root)
    name = rl_model_name(SHADOW_MODEL)
    version = register_rl_checkpoint(registry, name, make_checkpoint(tmp / "ckpt", SEED), symbol="BTCUSDT",
                                     train_start_ms=T0 - 86_400_000, train_end_ms=T0, decision_every=EVERY)  # fmt: skip
    set_rl_production(registry, name, version.version)
    session_id = f"rl-{uuid.uuid4().hex[:6]}"
    options = ShadowOptions(symbols=SYMBOLS, model_name=SHADOW_MODEL, group_size=2, start_ms=START, end_ms=END,
                            mark_ticks_per_minute=2, predictor_poll_s=0.0, session_id=session_id, speed="step",
                            policy="rl")  # fmt: skip
    run = ShadowSession(settings, options)
    try:
        run.start()
        assert run.wait(timeout_s=240), "the shadow session did not reach the end of the replay"
        report = run.stop()
    finally:
        run.shutdown()
    return settings, session_id, {"report": report, "model_id": version.model_id}


def _frame(settings: Settings, q: sa.Select) -> pd.DataFrame:
    engine = db.make_engine(settings.database_url)
    with engine.connect() as c:
        frame = pd.DataFrame([dict(r._mapping) for r in c.execute(q)])
    engine.dispose()
    return frame


def test_every_decision_is_recorded_with_the_modules_answer(session) -> None:
    import torch
    from ray.rllib.core.columns import Columns

    settings, _, info = session
    dec = _frame(
        settings, sa.select(rl_decisions).where(rl_decisions.c.ts >= START).order_by(rl_decisions.c.id)
    )
    # the agent decides at its cadence only: bars whose index (open time // 1 min) is a multiple of EVERY
    assert (START // MINUTE) % EVERY == 0
    assert sorted(set(dec.ts)) == [START + i * EVERY * MINUTE for i in range(REPLAY // EVERY)]
    assert len(dec) == len(SYMBOLS) * REPLAY // EVERY
    assert (dec.model_id == info["model_id"]).all()
    models = _frame(settings, sa.select(rl_models))
    assert models.model_id.tolist() == [info["model_id"]] and bool(models.is_production.iloc[0])
    obs = np.array([d["observation"] for d in dec.model_predictions], np.float32)
    assert obs.shape == (len(dec), 17) and np.isfinite(obs).all()
    module = build_module(SEED)  # the checkpoint's module, asked directly
    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: torch.from_numpy(obs)})[Columns.ACTION_DIST_INPUTS]
        probs = torch.softmax(logits, -1).double().numpy()
        values = module.compute_values({Columns.OBS: torch.from_numpy(obs)}).double().numpy()
    assert dec.action.tolist() == np.argmax(probs, axis=1).tolist()
    recorded = np.array([[p[n] for n in ("HOLD", "LONG", "SHORT", "CLOSE")] for p in dec.action_probs])
    np.testing.assert_allclose(recorded, probs, rtol=1e-5)
    # float32 forward passes differ with the batch's composition by ~1e-6
    np.testing.assert_allclose(dec.value_estimate.to_numpy(), values, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(dec.confidence.to_numpy(), probs.max(axis=1), rtol=1e-5)
    assert (dec.action_name == dec.action.map(dict(enumerate(("HOLD", "LONG", "SHORT", "CLOSE"))))).all()
    # the model predictions are the Predictor's outputs stored in the signals of the same minute
    sig = _frame(settings, sa.select(signals).where(signals.c.ts >= START)).set_index(["symbol", "ts"])
    assert len(sig) == len(SYMBOLS) * REPLAY  # the Predictor's record: every bar
    for row in dec.itertuples():
        s = sig.loc[(row.symbol, row.ts)]
        assert row.model_predictions["er_long"] == pytest.approx(s.er_long) and s.explain["policy"] == "rl"
        assert row.model_predictions["model_version"] == "1"
    assert len(set(dec.action)) > 1, dec.action.value_counts()


def test_entries_went_through_the_book_and_positions_are_consistent(session) -> None:
    settings, session_id, info = session
    dec = _frame(
        settings, sa.select(rl_decisions).where(rl_decisions.c.ts >= START).order_by(rl_decisions.c.ts)
    )
    pos = _frame(settings, sa.select(positions).where(positions.c.trade_group_id.like(f"{session_id}:%")))
    entries = pos[pos.event_type == "entry"] if len(pos) else pos
    entered = set(entries.trade_group_id) if len(pos) else set()
    executed = dec[dec.executed]
    assert len(executed) > 0, dec.action_name.value_counts()
    finals = pos[pos.event_type == "FINAL"] if len(pos) else pos
    rl_closes = finals[finals.exit_reason == "RL_CLOSE"] if len(pos) else pos
    closed_by: set[tuple[str, int]] = set()  # (symbol, decision bar) of each RL close: at the next bar's open
    for c in rl_closes.itertuples():
        bar = (int(c.ts) - MINUTE) // MINUTE * MINUTE
        assert (c.symbol, bar) not in closed_by
        closed_by.add((c.symbol, bar))
    for row in dec.itertuples():
        group = f"{session_id}:{row.symbol}:{row.ts}"
        closed = (row.symbol, row.ts) in closed_by
        # executed ⇔ the book opened the position that decision asked for, or closed the one held
        assert row.executed == (group in entered or closed), (row.symbol, row.ts, row.action_name)
        if group in entered:
            side = entries.set_index("trade_group_id").loc[group, "side"]
            assert row.action_name == side and row.position_after == (1.0 if side == "LONG" else -1.0)
            # flat before, or a reversal: the opposite position closed first, in the same submit
            assert row.position_before == 0.0 or (closed and row.position_before == -row.position_after)
        elif closed:  # CLOSE, or a reversal whose entry the guards refused
            assert row.position_after == 0.0 and row.position_before != 0.0
            assert row.action_name == "CLOSE" or row.position_before == (
                -1.0 if row.action_name == "LONG" else 1.0
            )
        else:
            assert row.position_after == row.position_before
    # a position held at a later close is seen by the agent (dims 14–16) and recorded as position_before
    held = dec[dec.position_before != 0.0]
    assert len(held) > 0
    for row in held.itertuples():
        obs = row.model_predictions["observation"]
        assert obs[14] == row.position_before and obs[15] > 0.0
        same = row.action_name == ("LONG" if row.position_before > 0 else "SHORT")
        assert not same or row.model_predictions.get("not_executed") == "already in position"
    # the agent's CLOSE and reversals of held positions were carried out by the book
    exits = held[held.action_name.isin(["CLOSE", "LONG", "SHORT"])]
    exits = exits[exits.action_name != exits.position_before.map({1.0: "LONG", -1.0: "SHORT"})]
    assert len(rl_closes) > 0 and len(exits) > 0, dec.action_name.value_counts()
    report = info["report"]
    rl = [h["rl"] for h in report["decider"]]
    assert sum(r["decisions"] for r in rl) == len(dec) and sum(r["executed"] for r in rl) == len(executed)
    # each group's closes off the cadence asked nothing
    assert [r["between"] for r in rl] == [REPLAY - REPLAY // EVERY] * len(rl) and len(rl) == 2
