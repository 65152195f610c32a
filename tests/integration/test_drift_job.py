"""The ``drift`` and ``bootstrap_history`` jobs: queued, run by the batch worker, results stored and served."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from history_fixtures import DumpServer

from core.drift import DRIFT_FEATURES, psi
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from core.time import parse_utc
from raytrade.cmd_drift import ops_handlers
from raytrade.settings import Settings, load_settings
from serve.api import ApiConfig, create_app, ensure_token
from storage.jobs import get_job
from storage.lake import Lake
from storage.schema import drift_metrics, events
from tune.worker import BatchWorker, enqueue_job

MINUTE = 60_000
END = parse_utc("2026-03-08")
DAY = 86_400_000
START = END - 8 * DAY  # 7 days of reference + the current day
SHIFTED = list(FEATURE_NAMES[:3])  # planted drift on ETHUSDT in the current window
GAPPY = FEATURE_NAMES[5]  # BTCUSDT: NaN in the last 30 minutes


def _features(seed: int, shift: bool, gaps: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = np.arange(START, END, MINUTE, dtype=np.int64)
    values = rng.normal(size=(len(ts), len(FEATURE_NAMES)))
    current = ts >= END - DAY
    if shift:
        values[np.ix_(current, [FEATURE_NAMES.index(n) for n in SHIFTED])] += 1.5
    if gaps:
        values[ts >= END - 30 * MINUTE, FEATURE_NAMES.index(GAPPY)] = np.nan
    frame = pd.DataFrame(values, columns=list(FEATURE_NAMES))
    frame.insert(0, "schema_version", np.int64(FEATURE_SCHEMA_VERSION))
    frame.insert(0, "ts", ts)
    return frame


@pytest.fixture
def settings(db_url: str, engine: sa.Engine, tmp_path: Path) -> Settings:
    s = load_settings(environ={}, data_dir=tmp_path / "data", db_url=db_url, universe="BTCUSDT,ETHUSDT")
    lake = Lake(s.lake_root)
    frames = {
        "BTCUSDT": _features(1, shift=False, gaps=True),
        "ETHUSDT": _features(2, shift=True, gaps=False),
    }
    for symbol, frame in frames.items():
        lake.write("features_1m", symbol, frame, source="synthetic")
    return s


def _run_job(engine: sa.Engine, settings: Settings, kind: str, config: dict[str, Any]) -> Any:
    job_id = enqueue_job(engine, kind, config)
    worker = BatchWorker(engine, name="test-worker")
    for k, handler in ops_handlers(settings, engine).items():
        worker.register(k, handler)
    job = worker.run_once()
    assert job is not None and job.job_id == job_id
    return job


@pytest.fixture
def api(settings: Settings, db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    config = ApiConfig(
        database_url=db_url,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        data_dir=tmp_path / "api-data",
        token_file=tmp_path / "api" / "token",
    )
    with TestClient(create_app(config)) as client:
        client.headers["Authorization"] = f"Bearer {ensure_token(config.token_file)}"
        yield client


def test_drift_job_writes_metrics_once_per_key_records_the_alarm_and_the_api_shows_them(
    engine: sa.Engine, settings: Settings, api: TestClient
) -> None:
    config = {"symbols": ["BTCUSDT", "ETHUSDT"], "reference_days": 7, "current_hours": 24}
    started = time.perf_counter()
    job = _run_job(engine, settings, "drift", config)
    print(f"drift job over 2 symbols × {len(DRIFT_FEATURES)} features: {time.perf_counter() - started:.2f} s")
    assert job.status == "done", job.error
    report = json.loads(Path(job.report_uri.removeprefix("file://")).read_text())
    detail = {s["symbol"]: s for s in report["symbols"]}
    eth = detail["ETHUSDT"]["features"]
    assert sorted(n for n, f in eth.items() if f["status"] == "alarm") == sorted(SHIFTED)
    assert not [n for n, f in detail["BTCUSDT"]["features"].items() if f["status"] == "alarm"]
    # i.i.d. rows: a 1h feature is sampled once an hour, 24 values a day, too few to judge
    assert detail["BTCUSDT"]["features"]["f_1h_ret_1"]["status"] == "insufficient"

    with engine.connect() as conn:
        rows = {r.symbol: r for r in conn.execute(sa.select(drift_metrics))}
        alarms = conn.execute(sa.select(events).where(events.c.kind == "drift.alarm")).all()
    assert set(rows) == {"BTCUSDT", "ETHUSDT"}
    btc, eth_row = rows["BTCUSDT"], rows["ETHUSDT"]
    assert int(btc.ts) == int(eth_row.ts) == END  # as of the end of the newest bar
    assert btc.schema_version == FEATURE_SCHEMA_VERSION
    # the worst feature's PSI, as computed directly from the lake's values
    frame = _features(2, shift=True, gaps=False)
    values = frame[SHIFTED[0]].to_numpy()
    direct = psi(values[frame["ts"] >= END - DAY], values[frame["ts"] < END - DAY])
    assert eth_row.psi == pytest.approx(max(f["psi"] for f in eth.values()))
    assert eth_row.psi >= direct - 1e-6 and eth_row.psi > 0.25
    assert btc.psi < 0.25
    # 30 NaN minutes of one feature, among the drift features (the calendar ones are not checked)
    assert btc.missing_rate == pytest.approx(30 / (1440 * len(DRIFT_FEATURES)))
    assert "f_1m_hour_sin" not in detail["BTCUSDT"]["features"]
    assert eth_row.missing_rate == 0.0
    assert 0.0 <= btc.outlier_rate < 0.001
    assert btc.latency_ms is None  # no signals: nothing received live
    assert [(a.symbol, int(a.ts)) for a in alarms] == [("ETHUSDT", END)]
    assert sorted(alarms[0].payload["features"]) == sorted(SHIFTED)

    # the same pass again: the rows are rewritten on their key, the alarm is not recorded twice
    again = _run_job(engine, settings, "drift", {**config, "end": "2026-03-08T00:00"})
    assert again.status == "done", again.error
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(drift_metrics)).scalar_one() == 2
        assert (
            conn.execute(sa.select(sa.func.count()).where(events.c.kind == "drift.alarm")).scalar_one() == 1
        )

    shown = api.get("/api/drift")
    assert shown.status_code == 200, shown.text
    by_symbol = {d["symbol"]: d for d in shown.json()}
    assert by_symbol["ETHUSDT"]["psi"] == pytest.approx(eth_row.psi)
    assert by_symbol["ETHUSDT"]["ts_ms"] == END
    assert by_symbol["BTCUSDT"]["missing_rate"] == pytest.approx(btc.missing_rate)
    # the per-feature detail is stored with the row and shown: which features drift, which were too few
    stored = eth_row.features
    assert set(stored) == set(DRIFT_FEATURES)
    assert stored[SHIFTED[0]] == {
        k: (None if v is None else pytest.approx(v, abs=1e-6)) for k, v in eth[SHIFTED[0]].items()
    }
    assert btc.features["f_1h_ret_1"]["status"] == "insufficient"
    assert sorted(by_symbol["ETHUSDT"]["alarm_features"]) == sorted(SHIFTED)
    assert by_symbol["BTCUSDT"]["alarm_features"] == []
    insufficient = sum(f["status"] == "insufficient" for f in detail["BTCUSDT"]["features"].values())
    assert by_symbol["BTCUSDT"]["insufficient_features"] == insufficient >= 1
    one = api.get("/api/drift/ETHUSDT")
    assert one.status_code == 200, one.text
    shown_eth = one.json()
    assert shown_eth["ts_ms"] == END and shown_eth["psi"] == pytest.approx(eth_row.psi)
    features = shown_eth["features"]
    assert [f["name"] for f in features[: len(SHIFTED)]] == sorted(SHIFTED, key=lambda n: -eth[n]["psi"])
    judged = [f["psi"] for f in features if f["psi"] is not None and f["status"] != "insufficient"]
    assert judged == sorted(judged, reverse=True) and len(features) == len(DRIFT_FEATURES)
    kinds = [f["status"] == "insufficient" for f in features if f["psi"] is not None]
    assert kinds == sorted(kinds)  # the judged first (by PSI), then those on too few values
    missing = api.get("/api/drift/SOLUSDT")
    assert missing.status_code == 404 and "SOLUSDT" in missing.json()["detail"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_drift_job_fails_naming_a_symbol_without_features_and_bad_config_is_refused(
    engine: sa.Engine, settings: Settings
) -> None:
    job = _run_job(engine, settings, "drift", {"symbols": ["SOLUSDT"]})
    assert job.status == "failed" and "SOLUSDT" in job.error and "features_1m" in job.error
    with pytest.raises(ValueError, match="features"):
        enqueue_job(engine, "drift", {"symbols": ["BTCUSDT"], "features": ["f_1m_nope"]})
    with pytest.raises(ValueError, match="current_hours"):
        enqueue_job(engine, "drift", {"symbols": ["BTCUSDT"], "current_hours": 0})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bootstrap_history_job_downloads_the_recorded_month_into_the_lake(
    engine: sa.Engine, db_url: str, shared_data: Path, tmp_path: Path
) -> None:
    from exchange.dumps import monthly_file, parse_klines_csv
    from exchange.venue import BackgroundServer
    from exchange.venue import create_app as venue_app

    symbol = "ALGOUSDT"
    csv = shared_data / "payloads" / "dumps" / "ALGOUSDT-1m-2026-02.csv"
    truth = Lake(tmp_path / "truth")
    expected = parse_klines_csv(csv.read_bytes())
    truth.write("candles_1m", symbol, expected, source="binance")
    server = DumpServer()
    server.add_dump(monthly_file("klines", symbol, "2026-02", "1m"), csv.read_text())
    now = parse_utc("2026-03-05T12:34:56")
    with server.running() as dumps_url, BackgroundServer(venue_app(truth, lambda: now)) as venue_url:
        s = load_settings(
            environ={}, data_dir=tmp_path / "data", db_url=db_url, history_base_url=dumps_url, fapi_url=venue_url,
            universe=symbol,
        )  # fmt: skip
        started = time.perf_counter()
        job = _run_job(
            engine, s, "bootstrap_history",
            {"symbols": [symbol], "datasets": ["klines/1m"], "start": "2026-02-01", "end": "2026-03-01"},
        )  # fmt: skip
        print(f"bootstrap_history job: {time.perf_counter() - started:.2f} s")
    assert job.status == "done", job.error
    assert job.report_uri == s.lake_root.as_uri()
    stored = Lake(s.lake_root).read("candles_1m", symbol)
    assert stored["ts"].tolist() == expected["ts"].tolist()
    assert stored["close"].tolist() == expected["close"].tolist()
    assert get_job(engine, job.job_id).progress == 1.0
    with pytest.raises(ValueError, match="datasets"):
        enqueue_job(engine, "bootstrap_history", {"symbols": [symbol], "datasets": ["trades"]})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_drift_command_runs_one_pass_and_refuses_an_unknown_feature(
    engine: sa.Engine, settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from raytrade import cmd_drift

    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAYTRADE_DB_URL", db_url)
    app = typer.Typer()
    cmd_drift.register(app)
    app.command("noop")(lambda: None)  # two commands: the app takes the command name
    result = CliRunner().invoke(app, ["drift", "--symbols", "ETHUSDT", "--features", ",".join(SHIFTED)])
    assert result.exit_code == 0, result.output
    assert "ETHUSDT" in result.output and "alarm" in result.output
    with engine.connect() as conn:
        assert conn.execute(sa.select(drift_metrics.c.symbol)).scalars().all() == ["ETHUSDT"]
    bad = CliRunner().invoke(app, ["drift", "--features", "f_1m_nope"])
    assert bad.exit_code == 2 and "--features" in bad.output
    assert CliRunner().invoke(app, ["drift", "--every", "soon"]).exit_code == 2


def test_two_workers_schedule_one_drift_job_per_period_and_run_it(
    engine: sa.Engine, settings: Settings
) -> None:
    import threading

    from raytrade.cmd_drift import drift_schedule
    from storage.jobs import list_jobs

    assert drift_schedule(settings.model_copy(update={"drift_every_s": 0})) is None
    assert settings.drift_every_s == 3600  # the default
    every = settings.model_copy(update={"drift_every_s": 600})
    now = [END + 60_000]  # inside a period; both workers read the same clock
    workers = [BatchWorker(engine, name=f"w{k}", clock_ms=lambda: now[0]) for k in range(2)]
    for w in workers:
        schedule = drift_schedule(every)
        assert schedule is not None
        w.schedule(schedule)
    queued: list[str] = []
    for step_ms in (0, 200_000, 400_000, 600_000, 650_000, 1_200_000):  # periods: 1, 1, 2 (at 600 s), 2, 3
        now[0] = END + 60_000 + step_ms
        barrier = threading.Barrier(2)

        def race(w: BatchWorker, barrier: threading.Barrier) -> None:
            barrier.wait()
            queued.extend(w.enqueue_due())

        threads = [threading.Thread(target=race, args=(w, barrier)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    drift_jobs = [j for j in list_jobs(engine) if j.kind == "drift"]
    assert len(drift_jobs) == len(queued) == 3
    assert all(dict(j.config) == {"symbols": ["BTCUSDT", "ETHUSDT"]} for j in drift_jobs)
    # the worker runs them: the oldest first
    for kind, handler in ops_handlers(settings, engine).items():
        workers[0].register(kind, handler)
    job = workers[0].run_once()  # also checks the schedule: period 3 has its job already
    assert job is not None and job.kind == "drift" and job.status == "done", job
    assert len([j for j in list_jobs(engine) if j.kind == "drift"]) == 3
