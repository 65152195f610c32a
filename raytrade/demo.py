"""``raytrade demo``: the main job, offline, on the embedded default.

A synthetic market for the universe (labelled synthetic everywhere) with a planted edge of known
strength (``core.synthetic``; its oracle's Sharpe from ``core.synthetic_edge``) or, with
``--null-market``, without one (the negative control) → parquet lake (1m, 15m, 1h candles, mark,
premium, funding) → database through the batched writer and the data-quality door → candle-close
events on the bus → selftest; then the training half (``raytrade.demo_train`` wiring ``tune.flow``):
features and labels on Ray Data, walk-forward folds, a small Tune sweep with MLflow trial runs, the
best configuration retrained, registered and promoted only if every gate passes; a last-fold
portfolio backtest against the baselines; after a promotion, the market's last day replayed through
the realtime path and compared trade by trade with the backtest (``raytrade.demo_shadow``); and the
HTML report (``tune.training_report``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console

from core.messages import CandleClosed, Topic
from core.synthetic import PLANTED_EDGE_STRENGTH, SyntheticMarket, SyntheticParams, generate_market
from core.synthetic_edge import oracle_backtest
from core.time import DAY_MS, MINUTE_MS
from pipelines.dbsink import DatabaseSink
from pipelines.market import write_synthetic_market
from pipelines.shadow_parity import ShadowReplay
from raytrade.defaults import DEMO_ROUNDS
from raytrade.demo_shadow import SHADOW_MINUTES, run_shadow_replay
from raytrade.demo_train import TRAINING_STAGES, last_fold_backtests, train_and_promote
from raytrade.selftest import Check, run_selftest
from raytrade.settings import Settings, redact_url
from raytrade.training_progress import progress_bar, training_display
from storage import db
from storage.bus import open_bus
from storage.instruments import sync_universe
from storage.lake import Lake
from storage.writer import BatchedWriter
from tune.training_report import TrainSummary, write_demo_report

#: Fixed start of the demo market (2025-01-06 00:00 UTC, a Monday) so reruns are identical.
DEMO_START_MS = 1_736_121_600_000


@dataclass
class DemoSummary:
    """What the demo produced and where."""

    market_source: str
    #: The market's edge in words: planted (and its oracle Sharpe) or none (the null market).
    market_edge: str
    null_market: bool
    symbols: int
    days: float
    lake_rows: dict[str, int]
    db_rows_written: int
    db_rows_rejected: int
    db_dead_letters: int
    bus_messages: int
    checks: list[Check] = field(default_factory=list)
    lake_root: Path | None = None
    database: str = ""
    training: TrainSummary | None = None
    shadow: ShadowReplay | None = None
    #: Why there was no shadow replay (None when there was one, or no training).
    shadow_skipped: str | None = None

    @property
    def promoted(self) -> bool:
        """This run's model became ``production`` (every gate passed)."""
        t = self.training
        return t is not None and t.production_version == t.version and t.promotion_kind != "unchanged"

    @property
    def false_promotion(self) -> bool:
        """The negative control failed: a model trained on the edge-free market was promoted."""
        return self.null_market and self.promoted

    @property
    def ok(self) -> bool:
        """No dead letter, every selftest check passed, the shadow replay (if any) traded exactly as
        the backtest, and no model of the null market was promoted."""
        shadow_ok = self.shadow is None or self.shadow.parity.ok
        checks_ok = self.db_dead_letters == 0 and all(c.ok for c in self.checks)
        return checks_ok and shadow_ok and not self.false_promotion


def publish_closes(settings: Settings, market: SyntheticMarket) -> int:
    """Publish the last closed 1m candle of every symbol on the bus and read them back; return the count."""
    with open_bus(settings.redis_url, namespace="raytrade-demo") as bus:
        bus.subscribe(Topic.MARKET_CANDLE_CLOSED, "demo", "demo-1", start="latest")
        msgs = []
        for symbol in market.symbols:
            c = market.candles_1m[symbol]
            i = len(c["ts"]) - 1
            msgs.append(
                CandleClosed(
                    symbol=symbol,
                    interval="1m",
                    ts_ms=int(c["ts"][i]),
                    open=float(c["open"][i]),
                    high=float(c["high"][i]),
                    low=float(c["low"][i]),
                    close=float(c["close"][i]),
                    volume=float(c["volume"][i]),
                )
            )
        bus.publish_many(Topic.MARKET_CANDLE_CLOSED, msgs)
        got = bus.read(Topic.MARKET_CANDLE_CLOSED, "demo", "demo-1", count=len(msgs) + 10, block_ms=1000)
        bus.ack(Topic.MARKET_CANDLE_CLOSED, "demo", [d.id for d in got])
        return len(got)


def run_demo(
    settings: Settings,
    *,
    days: float,
    seed: int,
    console: Console,
    progress: bool = True,
    train: bool = False,
    num_samples: int = 4,
    num_boost_round: int = DEMO_ROUNDS,
    null_market: bool = False,
    shadow_minutes: int = SHADOW_MINUTES,
) -> DemoSummary:
    """Run the demo and return its summary. Deterministic in (universe, days, seed, null_market).

    The market has a planted edge (``core.synthetic.PLANTED_EDGE_STRENGTH``) or, with ``null_market``,
    none: the negative control. Either way the gates alone decide the promotion (no override). After a promotion the production model replays the market's last ``shadow_minutes`` through the
    realtime path (``raytrade.demo_shadow``); 0 skips that replay."""
    n_minutes = int(days * DAY_MS // MINUTE_MS)
    params = SyntheticParams(edge_strength=0.0 if null_market else PLANTED_EDGE_STRENGTH)
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    sync_universe(engine, settings.universe)
    lake = Lake(settings.lake_root)
    with progress_bar(console, progress) as bar:
        task = bar.add_task("generate market", total=1)
        market = generate_market(settings.universe, DEMO_START_MS, n_minutes, seed, params)
        edge = market_edge(market, settings)
        bar.advance(task)
        console.print(
            f"[bold yellow]SYNTHETIC MARKET[/bold yellow] ({edge}): {len(settings.universe)} symbols × {days:g} days "
            f"of 1m bars, seed {seed} — generated, not real Binance data"
        )
        task = bar.add_task("lake", total=len(market.symbols))
        written = write_synthetic_market(market, lake, on_symbol=lambda _s: bar.advance(task))
        task = bar.add_task("database", total=len(market.symbols))
        sink = DatabaseSink(BatchedWriter(engine, settings.writer), settings.universe, source="demo")
        for symbol in market.symbols:
            for dataset in ("candles_1m", "candles_15m", "candles_1h", "funding", "mark_1m"):
                sink(dataset, symbol, lake.read(dataset, symbol, market.start_ms, market.end_ms + 1))
            bar.advance(task)
        stats = sink.close()
    engine.dispose()
    bus_messages = publish_closes(settings, market)
    checks = run_selftest(settings)
    summary = DemoSummary(
        market_source=market.source,
        market_edge=edge,
        null_market=null_market,
        symbols=len(market.symbols),
        days=days,
        lake_rows=written.rows,
        db_rows_written=stats.rows_written,
        db_rows_rejected=stats.rows_rejected,
        db_dead_letters=stats.rows_dead_lettered,
        bus_messages=bus_messages,
        checks=checks,
        lake_root=lake.root,
        database=redact_url(settings.database_url),
    )
    if train:
        plan = TrainPlan(seed, num_samples, num_boost_round, shadow_minutes=shadow_minutes)
        _train(settings, summary, plan, console, progress)
    return summary


@dataclass(frozen=True)
class TrainPlan:
    """The training half's arguments."""

    seed: int
    num_samples: int
    num_boost_round: int
    shadow_minutes: int


def _train(
    settings: Settings, summary: DemoSummary, plan: TrainPlan, console: Console, progress: bool
) -> None:
    """Train, promote, backtest the last fold, replay the last day in shadow (after a promotion) and
    write the report; fill ``summary.training`` and ``summary.shadow``."""
    stages = (*TRAINING_STAGES, "last-fold backtest", "shadow replay", "report")
    with training_display(console, progress, stages, plan.num_samples) as display:
        step = display.step
        training, data, folds, _cfg = train_and_promote(
            settings, seed=plan.seed, num_samples=plan.num_samples, num_boost_round=plan.num_boost_round,
            step=step, flow_progress=display.flow_progress(),
        )  # fmt: skip
        summary.training = training
        results = last_fold_backtests(settings, data, folds[-1], training.model)
        step("last-fold backtest")
        if training.production_version != training.version:
            summary.shadow_skipped = "no model was promoted by this run, so there is nothing to replay"
        elif plan.shadow_minutes <= 0:
            summary.shadow_skipped = "turned off (--shadow-minutes 0)"
        else:
            summary.shadow = run_shadow_replay(
                settings, data, training.model, model_name=training.model_name, model_version=training.version,
                minutes=plan.shadow_minutes, seed=plan.seed,
            )  # fmt: skip
        step("shadow replay")
        note = f"{summary.market_source} market {summary.market_edge}, {summary.symbols} symbols × {summary.days:g} days, seed {plan.seed}"
        out_dir = (settings.data_dir / "reports" / "demo").resolve()
        training.report_path = write_demo_report(
            training, results, summary_frame(summary), out_dir, note, settings.tracking_uri,
            shadow=summary.shadow, shadow_skipped=summary.shadow_skipped,
        )  # fmt: skip
        step("report")


def market_edge(market: SyntheticMarket, settings: Settings) -> str:
    """The market's edge in words: "with a planted edge, oracle Sharpe X" (``core.synthetic_edge``'s
    oracle over the whole market with the installation's label preset, policy sizing and risk) or
    "edge-free (the null market: negative control)"."""
    strength = market.params.edge_strength
    if strength <= 0:
        return "edge-free (the null market: the negative control, nothing to find)"
    oracle = oracle_backtest(market, label=settings.label, policy=settings.policy, risk=settings.risk)
    return (
        f"with a planted edge (lead-lag from BTC, strength {strength:g}), oracle Sharpe {oracle.sharpe:.2f} "
        f"after costs over {oracle.trades:,} trades"
    )


def summary_frame(summary: DemoSummary) -> pd.DataFrame:
    """Rows of the demo's result table."""
    rows = [
        (
            "market",
            f"{summary.market_source}, {summary.market_edge} ({summary.symbols} symbols, {summary.days:g} days)",
        )
    ]
    rows += [(f"lake {k}", f"{v:,} rows") for k, v in summary.lake_rows.items()]
    rows += [
        ("database", summary.database),
        ("database rows written", f"{summary.db_rows_written:,}"),
        ("data-quality rejects", f"{summary.db_rows_rejected:,}"),
        ("dead letters", f"{summary.db_dead_letters:,}"),
        ("bus candle-close messages", f"{summary.bus_messages:,}"),
    ]
    rows += [(f"selftest {c.component}", ("ok: " if c.ok else "FAILED: ") + c.detail) for c in summary.checks]
    return pd.DataFrame(rows, columns=["item", "value"])
