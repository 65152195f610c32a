"""Ray Data pipelines over the lake: labels and features equal the kernels run directly, and reach the DB."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import typer

from core.config import LabelSpec
from core.errors import SchemaMismatchError
from core.features import compute_features
from core.labels import label_bars
from core.synthetic import generate_market
from pipelines.dbsink import DatabaseSink
from pipelines.features import compute_universe_features, lake_inputs, load_features
from pipelines.labels import label_symbol, label_universe, labels_lake
from pipelines.market import write_synthetic_market
from storage import db, schema
from storage.instruments import sync_universe
from storage.lake import Lake
from storage.writer import BatchedWriter

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START = 1_736_121_600_000
SPEC = LabelSpec(h_bars=120)


@pytest.fixture(scope="module")
def market_lake(tmp_path_factory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("lake"))
    write_synthetic_market(generate_market(SYMBOLS, START, 4 * 1440, seed=5), lake)
    return lake


def test_label_pipeline_equals_the_kernel_on_each_symbol(market_lake, ray_session):
    report = label_universe(market_lake.root, SYMBOLS, SPEC)
    assert report.spec_hash == SPEC.spec_hash()
    assert report.bars == dict.fromkeys(SYMBOLS, 4 * 1440)
    assert report.mark_bars == dict.fromkeys(SYMBOLS, 4 * 1440)  # the barriers watched the mark candles
    out = labels_lake(market_lake.root, SPEC)
    assert (out.root / "spec.json").exists()
    assert json.loads((out.root / "spec.json").read_text())["barrier_price"] == "mark"
    for symbol in SYMBOLS:
        candles = market_lake.read("candles_1m", symbol)
        funding = market_lake.read("funding", symbol)
        mark = market_lake.read("mark_1m", symbol)
        direct = label_bars(
            {c: candles[c].to_numpy() for c in ("ts", "open", "high", "low", "close")},
            {"ts": funding["ts"].to_numpy(), "funding_rate": funding["funding_rate"].to_numpy()},
            SPEC,
            mark={c: mark[c].to_numpy() for c in ("ts", "open", "high", "low", "close")},
        )
        stored = out.read("labels_1m", symbol)
        for name, values in direct.columns().items():
            np.testing.assert_array_equal(stored[name].to_numpy(), values, err_msg=name)
        assert report.labelled[symbol] == int(direct.valid.sum())
        # the last h_bars bars are marked incomplete, never labelled
        assert (stored["status"].to_numpy()[-SPEC.h_bars :] != 0).all()


def test_label_task_without_mark_candles_labels_on_last_price(market_lake, tmp_path):
    # A lake without mark_1m (e.g. klines only): every bar's barriers watch the last price, and the
    # labels equal the last-price spec's, under the mark spec's own hash.
    lake = Lake(tmp_path / "lake")
    for dataset in ("candles_1m", "funding"):
        lake.write(dataset, "ETHUSDT", market_lake.read(dataset, "ETHUSDT"), source="test")
    counts = label_symbol(str(lake.root), "ETHUSDT", SPEC.model_dump_json())
    assert counts["mark_bars"] == 0 and counts["bars"] == 4 * 1440
    last_spec = SPEC.model_copy(update={"barrier_price": "last"})
    assert label_symbol(str(lake.root), "ETHUSDT", last_spec.model_dump_json())["mark_bars"] == 0
    stored = labels_lake(lake.root, SPEC).read("labels_1m", "ETHUSDT")
    last = labels_lake(lake.root, last_spec).read("labels_1m", "ETHUSDT")
    assert labels_lake(lake.root, SPEC).root != labels_lake(lake.root, last_spec).root
    pd.testing.assert_frame_equal(stored, last)
    # with the mark candles the barriers move: some exits fall on other bars
    with_mark = label_symbol(str(market_lake.root), "ETHUSDT", SPEC.model_dump_json())
    assert with_mark["mark_bars"] == 4 * 1440
    marked = labels_lake(market_lake.root, SPEC).read("labels_1m", "ETHUSDT")
    ok = marked["status"] == 0
    assert (marked["long_time_to_event_min"][ok] != last["long_time_to_event_min"][ok]).any()


def test_feature_pipeline_equals_the_batch_kernel_and_refuses_other_schemas(market_lake, ray_session):
    report = compute_universe_features(market_lake.root, ["ETHUSDT", "SOLUSDT"], group_size=1)
    assert report.rows == {"ETHUSDT": 4 * 1440, "SOLUSDT": 4 * 1440}
    direct = compute_features({s: lake_inputs(market_lake, s) for s in SYMBOLS})
    stored = load_features(market_lake, "SOLUSDT")
    np.testing.assert_array_equal(
        stored.drop(columns=["ts", "schema_version"]).to_numpy(), direct["SOLUSDT"].values
    )
    # the btc_* cross features were computed with BTC's inputs in a group without BTC
    assert np.isfinite(stored["f_1m_btc_ret_60"].to_numpy()[100:]).all()

    bad = stored.head(10).assign(schema_version=2)
    market_lake.write("features_1m", "ETHUSDT", bad, source="test")
    with pytest.raises(SchemaMismatchError, match="schema version"):
        load_features(market_lake, "ETHUSDT")


def test_features_and_labels_reach_the_database_through_the_writer(market_lake, ray_session, db_url):
    compute_universe_features(market_lake.root, ["BTCUSDT"], group_size=1)
    label_universe(market_lake.root, ["BTCUSDT"], SPEC)
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sync_universe(engine, SYMBOLS)
    sink = DatabaseSink(BatchedWriter(engine, _writer_config()), SYMBOLS, "test", SPEC.spec_hash())
    sink("features_1m", "BTCUSDT", market_lake.read("features_1m", "BTCUSDT"))
    labels = labels_lake(market_lake.root, SPEC)
    sink("labels_1m", "BTCUSDT", labels.read("labels_1m", "BTCUSDT"))
    stats = sink.close()
    assert stats.rows_dead_lettered == 0
    stored = labels.read("labels_1m", "BTCUSDT")
    with engine.connect() as conn:
        n_features = conn.execute(sa.text("SELECT count(*) FROM features_1m")).scalar_one()
        n_long = conn.execute(sa.text("SELECT count(*) FROM labels_long_1m")).scalar_one()
        t = schema.features_1m
        q = sa.select(t.c.features, t.c.atr, t.c.schema_version).order_by(t.c.ts)
        first, last = (
            conn.execute(q.limit(1)).one(),
            conn.execute(q.order_by(None).order_by(t.c.ts.desc()).limit(1)).one(),
        )
        hashes = conn.execute(sa.text("SELECT DISTINCT spec_hash FROM labels_short_1m")).scalars().all()
    engine.dispose()
    assert n_features == 4 * 1440
    assert n_long == int((stored["status"] == 0).sum())
    assert hashes == [SPEC.spec_hash()]
    assert last.schema_version == 1 and len(last.features) == 132
    assert last.atr == last.features["f_15m_atr"] and last.atr > 0
    # NaN during warm-up is stored as JSON null, and the key column as SQL NULL
    assert first.features["f_1m_ret_60"] is None and first.atr is None


def _writer_config():
    from core.config import WriterConfig

    return WriterConfig(flush_interval_s=0.1)


def test_label_command_labels_the_lake_and_writes_the_database(tmp_path, monkeypatch, ray_session):
    """`raytrade label --to-db`: the command's own path, from settings to the lake and the database."""
    from typer.testing import CliRunner

    from raytrade import cmd_db, cmd_pipelines
    from raytrade.settings import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAYTRADE_UNIVERSE", ",".join(SYMBOLS))
    settings = load_settings()
    write_synthetic_market(generate_market(SYMBOLS[:2], START, 2 * 1440, seed=9), Lake(settings.lake_root))
    app = typer.Typer()
    cmd_db.register(app)
    cmd_pipelines.register(app)
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0

    refused = runner.invoke(app, ["label", "--symbols", "BTCUSDT,XRPUSDT", "--no-progress"])
    assert refused.exit_code == 2 and "no candles_1m in the lake for XRPUSDT" in refused.output

    result = runner.invoke(app, ["label", "--to-db", "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    spec = settings.label
    assert f"labels (spec {spec.spec_hash()}): {2 * 2 * 1440:,} bars" in result.output  # SOLUSDT skipped
    labels = labels_lake(settings.lake_root, spec)
    assert labels.symbols("labels_1m") == SYMBOLS[:2]
    engine = db.make_engine(settings.database_url)
    with engine.connect() as conn:
        rows = dict(
            conn.execute(sa.text("SELECT symbol, count(*) FROM labels_long_1m GROUP BY symbol")).all()
        )
        shorts = conn.execute(sa.text("SELECT count(*) FROM labels_short_1m")).scalar_one()
    engine.dispose()
    for symbol in SYMBOLS[:2]:
        stored = labels.read("labels_1m", symbol)
        assert rows[symbol] == int((stored["status"] == 0).sum()) > 0
    assert shorts == sum(rows.values())
