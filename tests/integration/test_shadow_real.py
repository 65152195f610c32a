"""A shadow replay of real Binance data (``../shared/data/binance_um``), which has no 1-minute mark
prices: the session refuses to start, naming the dataset and the command that downloads it, with
the stores untouched; with ``mark_fallback="last"`` it replays the last price as a derived mark,
trades, and its summary says the marks were derived and counts every skipped decision."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_fixtures import SHADOW_MODEL as MODEL
from model_fixtures import install_production_model

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.errors import ConfigError
from exchange.venue import ReplayVenue
from pipelines.importer import import_file
from raytrade.cmd_run import summary_notes
from raytrade.realtime import ShadowOptions, ShadowSession
from raytrade.settings import Settings
from storage.lake import Lake

SYMBOLS = ("BTCUSDT", "ETHUSDT")
MINUTE = 60_000
START = 1_748_736_000_000  # 2025-06-01 00:00 UTC, inside every symbol's span
REPLAY = 12
END = START + REPLAY * MINUTE

pytestmark = [
    pytest.mark.slow,
]


def settings_for(tmp: Path, redis_url: str | None = None) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp, universe=SYMBOLS, ray_num_cpus=2, redis_url=redis_url,
        label=LabelSpec(k_sl=0.35, k_tp=0.5, risk_mae_atr=0.5),
        policy=PolicyConfig(max_positions=50, position_notional_pct=0.05, btc_high_vol_action="none"),
        risk=RiskConfig(max_positions=50, max_orders_per_s=100),
    )  # fmt: skip


def lake_checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def real_lake(tmp_path_factory, shared_data: Path) -> Path:
    """A data folder whose lake holds the real 1m candles and funding of SYMBOLS (imported as a user
    would), and no mark_1m."""
    tmp = tmp_path_factory.mktemp("real")
    lake = Lake(settings_for(tmp).lake_root)
    for symbol in SYMBOLS:
        for folder, dataset in (("klines_1m", "candles_1m"), ("funding", "funding")):
            result = import_file(
                lake, shared_data / "binance_um" / folder / f"{symbol}.parquet", dataset, symbol
            )
            assert result.rows_rejected == 0, result
    assert lake.symbols("candles_1m") and not lake.symbols("mark_1m")
    return tmp


def test_replay_without_mark_prices_is_refused_naming_the_dataset_and_the_download(real_lake):
    settings = settings_for(real_lake)
    before = lake_checksums(settings.lake_root)
    session = ShadowSession(settings, ShadowOptions(symbols=SYMBOLS, start_ms=START, end_ms=END))
    with pytest.raises(ConfigError) as refused:
        session.start()
    assert str(refused.value) == (
        "the lake has no 1-minute mark prices (mark_1m) of BTCUSDT, ETHUSDT in the replay window: the venue "
        "would send no mark ticks and every decision would be skipped as stale. Download Binance's "
        "mark-price klines with `raytrade history --symbols BTCUSDT,ETHUSDT --datasets markPriceKlines/1m "
        "--start 2025-06-01 --end 2025-06-02`, or replay the last price as a derived mark with "
        "`--mark-fallback last`"
    )
    assert lake_checksums(settings.lake_root) == before
    assert not Path(settings.database_url.removeprefix("sqlite:///")).exists()  # refused before the database


def test_cli_refuses_the_replay_in_one_message_and_exit_code_2(real_lake):
    settings = settings_for(real_lake)
    before = lake_checksums(settings.lake_root)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAYTRADE_") or k.startswith("RAYTRADE_TEST_")
    }
    env |= {"RAYTRADE_DATA_DIR": str(real_lake), "RAYTRADE_UNIVERSE": ",".join(SYMBOLS), "COLUMNS": "300"}
    done = subprocess.run(
        [sys.executable, "-m", "raytrade.cli", "run", "--venue", "replay", "--symbols", ",".join(SYMBOLS),
         "--start", str(START), "--end", str(END)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    text = " ".join(done.stderr.split())
    assert "no 1-minute mark prices (mark_1m) of BTCUSDT, ETHUSDT" in text
    assert "raytrade history --symbols BTCUSDT,ETHUSDT --datasets markPriceKlines/1m" in text
    assert "Traceback" not in done.stderr
    assert lake_checksums(settings.lake_root) == before


@pytest.mark.usefixtures("ray_session")
def test_replay_with_the_derived_mark_trades_and_says_so(real_lake, redis_url):
    settings = settings_for(real_lake, redis_url)
    install_production_model(settings, START)
    options = ShadowOptions(symbols=SYMBOLS, model_name=MODEL, start_ms=START, end_ms=END, speed="step",
                            mark_ticks_per_minute=6, predictor_poll_s=0.0, mark_fallback="last")  # fmt: skip
    session = ShadowSession(settings, options)
    try:
        session.start()
        assert session.wait(timeout_s=240), "the shadow session did not reach the end of the replay"
        report = session.stop()
    finally:
        session.shutdown()
    assert report["mark"] == {"fallback": "last", "derived_symbols": list(SYMBOLS)}
    assert report["signals"] == len(SYMBOLS) * REPLAY  # no decision skipped as stale
    assert not any(why.startswith("mark older") for why in report["skip_reasons"])
    assert report["execution"]["entries"] > 0
    notes = summary_notes(report)
    assert (
        notes[0] == "mark prices DERIVED from the last price (no mark_1m) for 2 symbol(s): BTCUSDT, ETHUSDT"
    )
    assert not any(n.startswith("nothing traded") for n in notes)


def test_summary_of_a_run_that_skipped_every_decision_says_why():
    report = {"closes": 24, "signals": 0, "execution": {"entries": 0},
              "skip_reasons": {"mark older than 5000 ms": 24}, "mark": {"fallback": "none", "derived_symbols": []}}  # fmt: skip
    assert summary_notes(report) == [
        "skipped decisions: mark older than 5000 ms: 24",
        "nothing traded: every decision was skipped (see the reasons above)",
    ]


def _mark_ticks(lake: Lake, fallback: str) -> tuple[list[dict], dict]:
    """The BTCUSDT markPrice ticks of the first 3 replayed minutes, and the venue's stats."""
    venue = ReplayVenue(lake, ["BTCUSDT"], START, START + 3 * MINUTE, speed="step", mark_ticks_per_minute=4,
                        mark_fallback=fallback)  # type: ignore[arg-type]  # fmt: skip

    async def collect() -> list[dict]:
        import websockets

        urls = venue.start()
        async with websockets.connect(f"{urls.ws_url}market/ws/btcusdt@markPrice@1s") as ws:
            await asyncio.sleep(0.1)
            await asyncio.to_thread(venue.advance_to, START + 3 * MINUTE, 10)
            ticks = []
            while True:
                try:
                    ticks.append(json.loads(await asyncio.wait_for(ws.recv(), 1.5)))
                except TimeoutError:
                    return ticks

    try:
        return asyncio.run(collect()), venue.stats()
    finally:
        venue.stop()


def test_the_venue_sends_no_mark_without_mark_1m_and_the_candle_as_a_labelled_mark_with_the_fallback(
    real_lake,
):
    lake = Lake(settings_for(real_lake).lake_root)
    none, none_stats = _mark_ticks(lake, "none")
    assert none == [] and none_stats["mark"] == {"fallback": "none", "derived_symbols": []}
    derived, stats = _mark_ticks(lake, "last")
    assert stats["mark"] == {"fallback": "last", "derived_symbols": ["BTCUSDT"]}
    candles = lake.read("candles_1m", "BTCUSDT", START, START + 3 * MINUTE)
    assert len(derived) == 3 * 4
    closes = [float(t["p"]) for t in derived[3::4]]  # each minute's last tick is its close
    assert closes == pytest.approx(candles["close"].tolist(), rel=1e-12)
