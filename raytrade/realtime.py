"""The realtime system in shadow mode on local Ray (seed 000; spec 001 §5, §15.2, §16).

``ShadowSession`` starts, in order: the Ray Serve ``Predictor`` on the production model; the
detached risk/execution actor (the paper exchange: ``core.sim``); one ingest actor per symbol group,
each with a ``Decider`` as its hook; and, for ``venue="replay"``, the replay venue serving the lake
on loopback. ``venue="binance"`` streams Binance's real public market data (shadow needs no keys).

A replay needs 1-minute mark prices (``mark_1m``): without them the venue sends no mark ticks and
every decision is skipped as stale. ``start`` refuses such a replay, naming the symbols and the
``raytrade history`` command that downloads Binance's mark-price klines, unless
``mark_fallback="last"`` replays the last price as a derived mark (said in the report's ``mark``).
The report always counts why decisions were skipped (``skip_reasons``).
With ``policy="rl"`` (``raytrade run --policy rl``) the ``RLPolicy`` deployment (``serve.rl_policy``) runs
beside the Predictor on ``<model>-rl@production`` (``storage.rl_registry``; its ``rl_models`` row is
made sure of at start) and the deciders take the hybrid decision (``actors.decide``).
``raytrade run`` drives it; the integration tests and ``bench/realtime.py`` use it the same way.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import ray
from pydantic import SecretStr

from actors.decide import DeciderConfig, decider_factory
from actors.execution import ExecutionConfig, execution_actor_class
from actors.ingest import IngestActor, IngestConfig
from core.errors import ConfigError
from core.features import BTC_SYMBOL
from core.messages import EXECUTION_ACTOR_NAME
from raytrade.cmd_backtest import sim_config
from raytrade.placement import execution_options, ingest_options
from raytrade.rayinit import start_ray
from raytrade.settings import Settings
from serve.predictor import APP_NAME, DEPLOYMENT_NAME, deploy_predictor
from storage import db
from storage.instruments import sync_universe
from storage.registry import ModelRegistry

BINANCE_REST = "https://fapi.binance.com"
BINANCE_WS = "wss://fstream.binance.com/"
TESTNET_REST = "https://testnet.binancefuture.com"
TESTNET_WS = "wss://fstream.binancefuture.com/"


@dataclass
class ShadowOptions:
    """What a shadow session runs on; times are epoch ms of the venue."""

    symbols: tuple[str, ...]
    model_name: str = "raytrade-lgbm"
    venue: Literal["replay", "binance", "binance-testnet"] = "replay"
    group_size: int = 25
    start_ms: int | None = None  # replay: first replayed minute
    end_ms: int | None = None  # replay: end of the replay
    speed: float | Literal["step"] = 60.0  # replay: venue ms per wall ms, or "step": lockstep (see wait)
    mark_ticks_per_minute: int = 60
    seed: int = 0
    session_id: str = field(default_factory=lambda: f"shadow-{uuid.uuid4().hex[:10]}")
    flatten_at_end: bool = True
    predictor_poll_s: float = 5.0
    close_deadline_ms: int = 3000
    mark_fallback: Literal["none", "last"] = "none"  # replay without mark_1m: refuse, or last price as mark
    mode: Literal["shadow", "live"] = "shadow"  # live: orders go to the venue (actors.live_book)
    api: bool = False  # also serve the API and dashboard on 127.0.0.1:settings.api_port (Settings.api_server)
    # supervised: core.policy decides on the Predictor's outputs; rl: the hybrid RL agent does (the RLPolicy
    # deployment on <model_name>-rl@production beside the Predictor, decisions in rl_decisions; actors.decide)
    policy: Literal["supervised", "rl"] = "supervised"


def binance_keys(settings: Settings) -> tuple[SecretStr, SecretStr]:
    """The Binance key and secret: from the settings (RAYTRADE_BINANCE_API_KEY/_SECRET), else decrypted
    from ``raytrade encrypt-keys``' file with RAYTRADE_KEYS_PASSPHRASE."""
    import os

    from raytrade.keystore import KeystoreError, keys_path, load_keys, read_passphrase

    if settings.binance_api_key is not None and settings.binance_api_secret is not None:
        return settings.binance_api_key, settings.binance_api_secret
    path = keys_path(settings)
    if not path.exists():
        raise ConfigError("live trading on Binance needs keys: run `raytrade encrypt-keys` "
                          "(or set RAYTRADE_BINANCE_API_KEY and RAYTRADE_BINANCE_API_SECRET)")  # fmt: skip
    try:
        return load_keys(path, read_passphrase(os.environ, None))
    except KeystoreError as e:
        raise ConfigError(str(e)) from None


def symbol_groups(symbols: Sequence[str], group_size: int) -> list[tuple[str, ...]]:
    """Split ``symbols`` into groups of at most ``group_size`` (in order)."""
    if group_size < 1:
        raise ConfigError(f"group size must be ≥ 1, got {group_size}")
    return [tuple(symbols[i : i + group_size]) for i in range(0, len(symbols), group_size)]


class ShadowSession:
    """Start, run and stop the realtime system in shadow mode (see the module docstring)."""

    def __init__(self, settings: Settings, options: ShadowOptions) -> None:
        self.settings = settings
        self.options = options
        self.venue: Any = None
        self._venue_keys: tuple[SecretStr, SecretStr] = (
            SecretStr(""),
            SecretStr(""),
        )  # live on the replay venue
        self.execution: Any = None
        self.execution_name = ""
        self.ingest: list[Any] = []
        self.ingest_args: list[tuple[Any, Any]] = []  # (config, hook) of each group: a lost one restarts
        testnet = options.venue == "binance-testnet"
        self.rest_url = TESTNET_REST if testnet else BINANCE_REST
        self.ws_url = TESTNET_WS if testnet else BINANCE_WS
        self.started_wall_s = math.nan
        self.api_url: str | None = None
        self.api: Any = None  # raytrade.cmd_serve.RunningApi
        self.promotion_watch: Any = None  # with the API: production moves made in the MLflow UI, recorded
        self.health: Any = None  # actors.health: checks, circuit breaker, notifications (Settings.health)

    # --- start -------------------------------------------------------------------------------------
    def start(self) -> None:
        s, o = self.settings, self.options
        if not o.symbols:
            raise ConfigError("a shadow session needs at least one symbol")
        if o.venue == "replay" and o.start_ms is not None and o.end_ms is not None:
            missing = symbols_without_mark(
                s.lake_root, sorted({*o.symbols, BTC_SYMBOL}), o.start_ms, o.end_ms
            )
            if missing and o.mark_fallback == "none":
                raise ConfigError(missing_mark_message(missing, o.start_ms, o.end_ms))
        engine = db.make_engine(s.database_url)
        if not db.is_current(engine):
            raise ConfigError("the database is not at the current schema: run `raytrade db upgrade` first")
        sync_universe(engine, sorted({*o.symbols, BTC_SYMBOL}))
        registry = ModelRegistry(s.tracking_uri, artifact_root=s.mlflow_artifact_root, engine=engine)
        if registry.production_version(o.model_name) is None:
            raise ConfigError(
                f"model {o.model_name!r} has no production version: run `raytrade promote` first"
            )
        registry.sync(o.model_name)  # the models rows the signals refer to
        if o.policy == "rl":
            from storage.rl_registry import rl_model_name, sync_rl_production

            if sync_rl_production(registry, rl_model_name(o.model_name), engine=engine) is None:
                raise ConfigError(
                    f"RL model {rl_model_name(o.model_name)!r} has no production version: train and promote one first"
                )
        engine.dispose()
        start_ray(s, progress=False)
        if o.api:
            from raytrade.cmd_serve import prepare_api

            prepare_api(s)  # before the Predictor: Serve's HTTP options are fixed at its start
        deploy_predictor(
            s.tracking_uri, o.model_name, poll_s=o.predictor_poll_s, num_replicas=s.predictor_replicas
        )
        if o.policy == "rl":
            from serve.rl_policy import deploy_rl_policy

            deploy_rl_policy(s.tracking_uri, o.model_name, poll_s=o.predictor_poll_s)
        if o.api:
            from raytrade.cmd_serve import launch_api, start_promotion_watch

            self.api = launch_api(s)  # Settings.api_server: uvicorn in a Ray actor, or Serve's proxy
            self.api_url = self.api.url
            self.promotion_watch = start_promotion_watch(s)
        if o.venue == "replay":
            self._start_venue()  # before the book: a live book connects to the venue as it starts
        self.execution_name = f"{EXECUTION_ACTOR_NAME}-{o.session_id}"
        # placement (raytrade.placement): on the head where the cluster defines `execution`
        self.execution = (
            execution_actor_class()
            .options(**execution_options(self.execution_name))
            .remote(self.execution_config())
        )
        ray.get(self.execution.summary.remote())  # constructed (book recovered) before anyone looks it up
        decider = DeciderConfig(
            session_id=o.session_id, database_url=s.database_url, redis_url=s.redis_url, model_name=o.model_name,
            predictor_app=APP_NAME, predictor_deployment=DEPLOYMENT_NAME, execution_actor=self.execution_name,
            policy=s.policy, label=s.label, decision_policy=o.policy,
        )  # fmt: skip
        for gid, group in enumerate(symbol_groups(o.symbols, o.group_size)):
            cfg = IngestConfig(
                group_id=gid, symbols=group, rest_url=self.rest_url, ws_url=self.ws_url,
                database_url=s.database_url, lake_path=str(s.lake_root), bus_url=s.redis_url,
                close_deadline_ms=o.close_deadline_ms, writer=s.writer,
            )  # fmt: skip
            # every group streams BTC for its cross features; each decides its own symbols only
            hook = decider_factory(decider.model_copy(update={"trade_symbols": group}))
            self.ingest_args.append((cfg, hook))  # spread over the nodes' ingest slots (raytrade.placement)
            self.ingest.append(IngestActor.options(**ingest_options()).remote(cfg, hook))
        ray.get([a.start.remote() for a in self.ingest])
        self._wait_connected(timeout_s=60.0)
        self._start_health()
        self.started_wall_s = time.monotonic()
        if self.venue is not None:
            self.venue.resume()

    def execution_config(self) -> Any:
        """The execution actor's config: the session's book on the installation's simulator
        (``raytrade.cmd_backtest.sim_config``, the backtest's) and risk preset; in live mode the live
        book of the venue (``live_config``)."""
        s, o = self.settings, self.options
        if o.mode == "live":
            return self.live_config()
        return ExecutionConfig(
            session_id=o.session_id, symbols=tuple(o.symbols), database_url=s.database_url,
            redis_url=s.redis_url, sim=sim_config(s), risk=s.risk,
        )  # fmt: skip

    def live_config(self) -> Any:
        """The live book's config: the replay venue's paper broker with this session's keys (its clock
        asked of the venue, a replay's time not being the wall's), or Binance with the settings' keys."""
        from actors.live_book import LiveConfig
        from exchange.binance.signed import TradingConfig
        from exchange.binance.user_stream import UserStreamConfig

        s, o = self.settings, self.options
        if o.venue == "replay":
            trading = TradingConfig(base_url=self.rest_url, api_key=self._venue_keys[0], api_secret=self._venue_keys[1],
                                    sync_clock=False)  # fmt: skip
            venue_clock = "query"
        else:
            key, secret = binance_keys(s)
            trading = TradingConfig(base_url=self.rest_url, api_key=key, api_secret=secret)
            venue_clock = "estimate"
        return LiveConfig(
            session_id=o.session_id, symbols=tuple(o.symbols), database_url=s.database_url, trading=trading,
            sim=sim_config(s), risk=s.risk, kill_file=s.data_dir.resolve() / "KILL",
            audit_dir=s.data_dir.resolve() / "audit", venue_clock=venue_clock, killswitch=s.killswitch,
            user_stream=UserStreamConfig(ws_url=self.ws_url),  # exits heard as they happen, not at the next sweep
        )  # fmt: skip

    def _wait_connected(self, timeout_s: float) -> None:
        """Wait until every ingest connection is up, so a replay starts with nobody listening late."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = ray.get([a.stats.remote() for a in self.ingest])
            if all(c["connected"] for st in stats for c in st["connections"].values()):
                return
            time.sleep(0.05)
        raise ConfigError(f"the ingest streams did not connect to {self.ws_url} within {timeout_s:.0f} s")

    def _start_venue(self) -> None:
        from exchange.venue.replay import ReplayVenue
        from storage.lake import Lake

        o = self.options
        if o.start_ms is None or o.end_ms is None:
            raise ConfigError("a replay needs --start and --end")
        venue_symbols = sorted({*o.symbols, BTC_SYMBOL})
        keys: dict[str, Any] = {}
        if o.mode == "live":  # the venue's paper broker takes the orders, with keys of this session
            self._venue_keys = (SecretStr(secrets.token_hex(16)), SecretStr(secrets.token_hex(32)))
            keys = {"api_key": self._venue_keys[0].get_secret_value(),
                    "api_secret": self._venue_keys[1].get_secret_value(), "sim_config": sim_config(self.settings)}  # fmt: skip
        self.venue = ReplayVenue(
            Lake(self.settings.lake_root), venue_symbols, o.start_ms, o.end_ms, speed=o.speed,
            mark_ticks_per_minute=o.mark_ticks_per_minute, seed=o.seed,
            weight_limit_1m=None,  # a fast replay squeezes hours of REST into wall minutes
            mark_fallback=o.mark_fallback, **keys,
        )  # fmt: skip
        urls = self.venue.start(paused=True)
        self.rest_url, self.ws_url = urls.rest_url, urls.ws_url

    # --- run / stop --------------------------------------------------------------------------------
    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the replay has finished and the last minute was decided (replay), or forever."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if self.venue is None:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(1.0)
            return False
        end_minute = (self.options.end_ms or 0) // 60_000 * 60_000 - 60_000
        if self.options.speed == "step":
            return self._lockstep(end_minute, deadline)
        remaining = 7 * 86_400.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.venue.wait_until(int(self.options.end_ms or 0), remaining):
            return False
        return self._decided(end_minute, deadline)  # the last minute decided by every group

    def _decided(self, minute: int, deadline: float | None) -> bool:
        while deadline is None or time.monotonic() < deadline:
            last = ray.get([a.hook_stats.remote() for a in self.ingest])
            if all((st.get("last_close_ms") or 0) >= minute for st in last):
                return True
            time.sleep(0.005)
        return False

    def _lockstep(self, end_minute: int, deadline: float | None) -> bool:
        """Step mode: release one venue minute at a time and wait until every group has decided it and
        the execution actor has taken the entries, so results do not depend on how fast this machine
        is (parity tests); a fast replay trades at whatever book its latency reaches."""
        minute = int(self.options.start_ms or 0)
        while minute <= end_minute:
            remaining = 60.0 if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.venue.advance_to(minute + 60_000, remaining) or not self._decided(minute, deadline):
                return False
            ray.get(self.execution.summary.remote())  # queued behind the entries the groups sent
            minute += 60_000
        return True

    def stop(self) -> dict[str, Any]:
        """Stop ingest (flushing the writers), flatten if asked, stop the venue; return the session report."""
        report: dict[str, Any] = {"session_id": self.options.session_id}
        self._stop_promotion_watch()
        if self.health is not None:
            report["health"] = ray.get(self.health.status.remote(), timeout=60)
        self._stop_health()
        wall = time.monotonic() - self.started_wall_s
        ingest_stats = ray.get([a.stop.remote() for a in self.ingest]) if self.ingest else []
        hooks = ray.get([a.hook_stats.remote() for a in self.ingest]) if self.ingest else []
        if self.execution is not None:
            if self.options.flatten_at_end:
                ray.get(self.execution.flatten.remote("END"))
            report["execution"] = ray.get(self.execution.summary.remote())
        if self.venue is not None:
            report["venue"] = self.venue.stats()
            self.venue.stop()
        latencies = np.concatenate(
            [np.asarray(h.get("latencies_ms", []), np.float64) for h in hooks] or [np.empty(0)]
        )
        messages = sum(sum(st.get("messages", {}).values()) for st in ingest_stats)
        skip_reasons: dict[str, int] = {}
        for h in hooks:
            for why, n in h.get("skip_reasons", {}).items():
                skip_reasons[why] = skip_reasons.get(why, 0) + n
        report["skip_reasons"] = dict(sorted(skip_reasons.items(), key=lambda kv: -kv[1]))
        if "venue" in report:
            report["mark"] = report["venue"]["mark"]
        report |= {
            "wall_s": wall, "messages": messages, "messages_per_s": messages / wall if wall > 0 else math.nan,
            "close_to_signal_p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else math.nan,
            "close_to_signal_p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else math.nan,
            "closes": sum(h.get("closes", 0) for h in hooks), "signals": sum(h.get("signals", 0) for h in hooks),
            "ingest": ingest_stats, "decider": hooks,
        }  # fmt: skip
        for actor in self.ingest:
            ray.kill(actor)
        self.ingest.clear()
        self.ingest_args.clear()
        self.stop_api()
        return report

    def _start_health(self) -> None:
        """The health checker (``actors.health``) with the session's universe and venue clock, notifying
        through ``Settings.notify`` when a channel is configured; off with RAYTRADE_HEALTH__ENABLED=false."""
        s = self.settings
        if not s.health.enabled:
            return
        from actors.health import HEALTH_ACTOR_NAME, start_health_actor

        self.health = start_health_actor(
            name=f"{HEALTH_ACTOR_NAME}-{self.options.session_id}", config=s.health, database_url=s.database_url,
            redis_url=s.redis_url, tracking_uri=s.tracking_uri, universe=tuple(sorted({*self.options.symbols, BTC_SYMBOL})),
            rest_url=self.rest_url, notify=s.notify, source=f"health:{self.options.session_id}",
        )  # fmt: skip

    def _stop_health(self) -> None:
        if self.health is not None:
            try:
                ray.get(self.health.stop.remote(), timeout=60)
            finally:
                ray.kill(self.health, no_restart=True)
                self.health = None

    def _stop_promotion_watch(self) -> None:
        if self.promotion_watch is not None:
            self.promotion_watch.stop()
            self.promotion_watch = None

    def stop_api(self) -> None:
        """Stop serving the API (graceful; the port is freed). ``shutdown`` does it too."""
        if self.api is not None:
            self.api.stop()
            self.api = None

    def shutdown(self) -> None:
        """Remove the Predictor and the execution actor (tests; a real session keeps the actor)."""
        from ray import serve

        self._stop_promotion_watch()
        self._stop_health()
        self.stop_api()
        if self.execution is not None:
            ray.kill(self.execution, no_restart=True)
            self.execution = None
        serve.delete(APP_NAME)
        if self.options.policy == "rl":
            from serve.rl_policy import APP_NAME as RL_APP_NAME

            serve.delete(RL_APP_NAME)


def symbols_without_mark(lake_root: Path, symbols: Sequence[str], start_ms: int, end_ms: int) -> list[str]:
    """The ``symbols`` whose lake holds no 1-minute mark price (``mark_1m``) in [start_ms, end_ms)."""
    from storage.lake import Lake

    lake = Lake(lake_root)
    return [s for s in symbols if not len(lake.read("mark_1m", s, start_ms, end_ms, columns=["ts"]))]


def missing_mark_message(symbols: Sequence[str], start_ms: int, end_ms: int) -> str:
    """What a user reads when a replay has no 1-minute mark prices: the dataset, the symbols, the fix."""
    import pandas as pd

    first = pd.Timestamp(start_ms, unit="ms", tz="UTC").strftime("%Y-%m-%d")
    last = pd.Timestamp(end_ms + 86_400_000 - 1, unit="ms", tz="UTC").strftime("%Y-%m-%d")
    return (
        f"the lake has no 1-minute mark prices (mark_1m) of {', '.join(symbols)} in the replay window: "
        "the venue would send no mark ticks and every decision would be skipped as stale. Download "
        f"Binance's mark-price klines with `raytrade history --symbols {','.join(symbols)} "
        f"--datasets markPriceKlines/1m --start {first} --end {last}`, or replay the last price as a "
        "derived mark with `--mark-fallback last`"
    )


def default_replay_window(lake_root: Path, symbols: Sequence[str], minutes: int) -> tuple[int, int]:
    """The last ``minutes`` of the lake's 1m candles common to ``symbols``: (start_ms, end_ms)."""
    from storage.lake import Lake

    lake = Lake(lake_root)
    ends = []
    for sym in symbols:
        frame = lake.read("candles_1m", sym, columns=["ts"])
        if not len(frame):
            raise ConfigError(f"the lake at {lake_root} has no 1m candles of {sym}")
        ends.append(int(frame["ts"].max()) + 60_000)
    end = min(ends)
    return end - minutes * 60_000, end
