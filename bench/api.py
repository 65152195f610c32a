"""Benchmark of the API (issue 16): the state endpoints, the WebSocket and ``/predict`` while a shadow
replay runs, served by uvicorn in one Ray actor (``--server uvicorn-actor``, the default) or behind Ray
Serve's HTTP proxy (``--server serve``).

A synthetic market of ``--symbols`` symbols goes to a temporary lake, a real LightGBM multi-target
model is promoted in a temporary MLflow store, a temporary Redis (``raytrade.devservices``) is the
bus, and ``raytrade.realtime.ShadowSession`` runs the shadow loop on local Ray with the API on
(``ShadowOptions(api=True)``: the FastAPI app on 127.0.0.1, by ``Settings.api_server``). While the replay runs, a client process (its own interpreter, so the venue's thread in
this driver does not share its GIL) measures:

- state endpoints: an open-loop load at ``--rate`` requests/s for ``--seconds`` s over /api/status,
  /api/positions/latest, /api/signals/latest, /api/orders, /api/risk/state, /api/pnl, /api/fills,
  /api/safety-events, /api/data-quality/summary, with the bearer token. Request i is due at
  t0 + i/rate whatever happened before it (a fixed schedule), and its latency is taken from that due
  time, so a slow server's queue shows in the figures (no coordinated omission). httpx, one
  connection pool per sender thread;
- bus → WebSocket: a client subscribed to ``status_updates`` over /ws; a probe SystemStatus is
  published on the Redis bus every 1/``--ws-rate`` s with its publish time in ``details``; latency
  = receive time − publish time (same clock, same process);
- ``POST /predict`` with 50 rows (JSON form), ``--predict-calls`` sequential calls, after the load;
- a sequential, unloaded pass over every endpoint (and /api/health, which touches no database: the
  floor of the proxy → replica path), to say where the time goes.

Every wait has a timeout; a watchdog interrupts the run after ``--deadline`` s and exits hard a
minute later; Ray, Serve and Redis are stopped on every path out.

    nice -n 10 .venv/bin/python bench/api.py [--server uvicorn-actor|serve] [--speed 30] [--symbols 50]
        [--seconds 30] [--rate 200] [--quick]

Ends with one JSON line: api_p50_ms, api_p99_ms (target ≤ 50), ws_p99_ms (target ≤ 100),
predict_p99_ms, the request counts and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T0 = 1_736_121_600_000  # 2025-01-06 00:00 UTC
MINUTE = 60_000
MODEL = "raytrade-lgbm"
PROBE = "bench-api-probe"
ENDPOINTS = (
    "/api/status", "/api/positions/latest", "/api/signals/latest", "/api/orders", "/api/risk/state",
    "/api/pnl", "/api/fills", "/api/safety-events", "/api/data-quality/summary",
)  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


# --- the client (a separate process) ---------------------------------------------------------------


def _http_load(cfg: dict[str, Any]) -> dict[str, Any]:
    """Open-loop load: ``threads`` senders, each an asyncio loop with its own httpx pool, sharing one
    schedule (request i due at t0 + i/rate; thread k sends i ≡ k mod threads)."""
    import httpx

    rate, seconds, threads = cfg["rate"], cfg["seconds"], cfg["threads"]
    n = int(rate * seconds)
    headers = {"Authorization": f"Bearer {cfg['token']}"}
    t0 = time.perf_counter() + 0.5
    wall_t0 = time.time() + 0.5
    results: list[list[tuple[str, float, int]]] = [[] for _ in range(threads)]
    late_send: list[float] = []

    async def sender(k: int) -> None:
        # several small pools: httpx's pool costs more CPU per request the more requests wait in it, and
        # under queueing that cost fed back into the figures (the client itself saturating)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        clients = [httpx.AsyncClient(base_url=cfg["url"], headers=headers, limits=limits,
                                     timeout=cfg["request_timeout_s"]) for _ in range(cfg["pools"])]  # fmt: skip

        async def one(i: int, due: float) -> None:
            path = ENDPOINTS[i % len(ENDPOINTS)]
            try:
                r = await clients[(i // threads) % len(clients)].get(path)
                status = r.status_code
            except Exception:  # a timeout or a refused connection: an error, timed as well
                status = -1
            results[k].append((path, (time.perf_counter() - due) * 1000, status))

        try:
            tasks = []
            for i in range(k, n, threads):
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late_send.append(-delay * 1000)
                tasks.append(asyncio.create_task(one(i, due)))
            await asyncio.wait(tasks, timeout=cfg["request_timeout_s"] + 5)
        finally:
            for c in clients:
                await c.aclose()

    workers = [threading.Thread(target=asyncio.run, args=(sender(k),), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + cfg["request_timeout_s"] + 15)
    rows = [r for part in results for r in part]
    return {"requests": n, "rows": rows, "late_send_ms_max": max(late_send, default=0.0),
            "wall_s": time.perf_counter() - t0, "window": (wall_t0, time.time())}  # fmt: skip


def _ws_probe(cfg: dict[str, Any], stop: threading.Event, out: dict[str, Any]) -> None:
    """Subscribe to status_updates over /ws, publish probes on the bus at ``ws_rate``, time receive − publish."""
    import websockets.sync.client as wsc

    from core.messages import SystemStatus, Topic
    from storage.bus import open_bus

    latencies: list[float] = []
    sent = 0
    url = cfg["url"].replace("http://", "ws://") + "/ws"
    try:
        with wsc.connect(url, additional_headers={"Authorization": f"Bearer {cfg['token']}"},
                         open_timeout=20, close_timeout=5) as ws, open_bus(cfg["redis_url"]) as bus:  # fmt: skip
            ready = json.loads(ws.recv(timeout=20))
            if ready.get("op") != "ready":
                raise RuntimeError(f"WebSocket answered {ready!r} instead of ready")
            ws.send(json.dumps({"op": "subscribe", "channels": ["status_updates"]}))
            deadline = time.monotonic() + 20
            while True:
                msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                if msg.get("op") == "subscribed":
                    break
            out["subscribed"] = True

            def receive() -> None:
                while True:
                    try:
                        text = ws.recv(timeout=1.0)
                    except TimeoutError:
                        if stop.is_set() and out.get("drained"):
                            return
                        continue
                    except Exception:
                        return
                    now_ns = time.time_ns()
                    msg = json.loads(text)
                    if msg.get("op") == "ping":
                        ws.send(json.dumps({"op": "pong", "ts": msg.get("ts")}))
                        continue
                    data = msg.get("data") or {}
                    if msg.get("channel") == "status_updates" and data.get("component") == PROBE:
                        latencies.append((now_ns - int(data["details"]["sent_ns"])) / 1e6)

            reader = threading.Thread(target=receive, daemon=True)
            reader.start()
            period = 1.0 / cfg["ws_rate"]
            start = time.perf_counter()
            while not stop.is_set():
                due = start + sent * period
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent_ns = time.time_ns()
                bus.publish(Topic.SYSTEM_STATUS, SystemStatus(ts_ms=sent_ns // 1_000_000, component=PROBE, ok=True,
                                                              details={"sent_ns": sent_ns, "seq": sent}))  # fmt: skip
                sent += 1
            drain = time.monotonic() + 5
            while len(latencies) < sent and time.monotonic() < drain:
                time.sleep(0.05)
            out["drained"] = True
            reader.join(5)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out |= {"sent": sent, "latencies": latencies}


def _predict(cfg: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from core.features_schema import FEATURE_NAMES

    rows = np.random.default_rng(7).normal(size=(50, len(FEATURE_NAMES))).tolist()
    lat, errors, version = [], 0, None
    with httpx.Client(base_url=cfg["url"], headers={"Authorization": f"Bearer {cfg['token']}"},
                      timeout=cfg["request_timeout_s"]) as client:  # fmt: skip
        for _ in range(cfg["predict_calls"]):
            t = time.perf_counter()
            try:
                r = client.post("/predict", json={"rows": rows})
                ok = r.status_code == 200 and len(next(iter(r.json()["predictions"].values()))) == 50
                version = r.json().get("model_version") if ok else version
            except Exception:
                ok = False
            lat.append((time.perf_counter() - t) * 1000)
            errors += not ok
    return {"latencies": lat, "errors": errors, "model_version": version}


def _sequential(cfg: dict[str, Any]) -> dict[str, list[float]]:
    """Each endpoint (and /api/health) ``sequential_calls`` times, one request at a time."""
    import httpx

    out: dict[str, list[float]] = {}
    with httpx.Client(base_url=cfg["url"], headers={"Authorization": f"Bearer {cfg['token']}"},
                      timeout=cfg["request_timeout_s"]) as client:  # fmt: skip
        for path in ("/api/health", *ENDPOINTS):
            lat = []
            for _ in range(cfg["sequential_calls"]):
                t = time.perf_counter()
                with contextlib.suppress(Exception):
                    client.get(path)
                lat.append((time.perf_counter() - t) * 1000)
            out[path] = lat
    return out


def _in_process(cfg: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The same endpoints on the same database in this process, without Serve (ASGI in memory): per
    endpoint the p50 wall ms and the mean CPU ms of one call: the app's own cost (FastAPI, the
    handler, the queries, the DTOs), to set against the latency through the proxy."""
    import httpx

    from serve.api.app import ApiConfig, create_app

    app = create_app(ApiConfig(database_url=cfg["database_url"], redis_url=None, tracking_uri=cfg["tracking_uri"],
                               data_dir=Path(cfg["data_dir"]), token_file=Path(cfg["token_file"])))  # fmt: skip
    out: dict[str, tuple[float, float]] = {}

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers={"Authorization": f"Bearer {cfg['token']}"}) as client:  # fmt: skip
            for path in ("/api/health", *ENDPOINTS):
                await client.get(path)  # first call: imports, statement cache
                lat = []
                cpu0 = time.process_time()
                for _ in range(cfg["sequential_calls"]):
                    t = time.perf_counter()
                    await client.get(path)
                    lat.append((time.perf_counter() - t) * 1000)
                cpu = (time.process_time() - cpu0) * 1000 / cfg["sequential_calls"]
                out[path] = (pct(lat, 50), cpu)

    asyncio.run(go())
    return out


def client_main(cfg_path: str) -> None:
    """The client process: HTTP load and WebSocket probes at once, then /predict, then the sequential
    pass; one JSON object on stdout's last line."""
    cfg = json.loads(Path(cfg_path).read_text())
    stop = threading.Event()
    ws_out: dict[str, Any] = {}
    probe = threading.Thread(target=_ws_probe, args=(cfg, stop, ws_out), daemon=True)
    probe.start()
    deadline = time.monotonic() + 30
    while not ws_out.get("subscribed") and "error" not in ws_out and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"client: WebSocket subscribed: {bool(ws_out.get('subscribed'))}; load for {cfg['seconds']} s "
          f"at {cfg['rate']} req/s", file=sys.stderr, flush=True)  # fmt: skip
    http = _http_load(cfg)
    stop.set()
    probe.join(15)
    print("client: load done; /predict", file=sys.stderr, flush=True)
    predict = _predict(cfg)
    print("client: sequential pass", file=sys.stderr, flush=True)
    sequential = _sequential(cfg)
    print("client: in-process pass", file=sys.stderr, flush=True)
    try:
        in_process = _in_process(cfg)
    except Exception as e:
        print(f"client: in-process pass failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        in_process = {}
    print(json.dumps({"http": http, "ws": ws_out, "predict": predict, "sequential": sequential,
                      "in_process": in_process}))  # fmt: skip


# --- the system (this process) ----------------------------------------------------------------------


def universe(count: int) -> list[str]:
    from core.synthetic import _REFERENCE

    names = list(_REFERENCE)
    names += [f"SYN{k:03d}USDT" for k in range(max(0, count - len(names)))]
    return names[:count]


def bench_model(seed: int = 0) -> Any:
    """A real 8-output LightGBM model (random features, labels with a long bias): it trades
    (bench/realtime.py's)."""
    import pandas as pd

    from core.config import LabelSpec
    from core.features_schema import FEATURE_NAMES
    from tune.train import fit_multi_target

    rng = np.random.default_rng(seed)
    n = 2000
    x = pd.DataFrame(rng.normal(size=(n, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))
    labels: dict[str, np.ndarray] = {"status": np.zeros(n, np.int8)}
    for side, mean in (("long", 0.004), ("short", -0.004)):
        ret = mean + 0.002 * rng.normal(size=n)
        labels |= {f"{side}_y": np.sign(ret).astype(np.int64), f"{side}_ret_net": ret,
                   f"{side}_mae": np.abs(0.001 + 0.0005 * rng.normal(size=n)),
                   f"{side}_time_to_event_min": rng.integers(1, 61, n).astype(np.float64)}  # fmt: skip
    params = {"num_leaves": 15, "min_data_in_leaf": 20, "learning_rate": 0.1}
    return fit_multi_target(x, pd.DataFrame(labels), label_spec_hash=LabelSpec().spec_hash(), params=params,
                            num_boost_round=50, seed=seed)  # fmt: skip


def watchdog(deadline_s: float, on_hard_exit: list[Any]) -> threading.Event:
    """Interrupt the main thread after ``deadline_s``; exit hard (after ``on_hard_exit`` callbacks)
    60 s later if it is still not out. Set the returned event to disarm."""
    import _thread

    done = threading.Event()

    def watch() -> None:
        if done.wait(deadline_s):
            return
        print(f"WATCHDOG: the bench ran past {deadline_s:.0f} s: interrupting", file=sys.stderr, flush=True)
        _thread.interrupt_main()
        if done.wait(60):
            return
        print("WATCHDOG: still not out after 60 s: exiting hard", file=sys.stderr, flush=True)
        for fn in on_hard_exit:
            with contextlib.suppress(Exception):
                fn()
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="watchdog").start()
    return done


class CpuSampler:
    """Every ``period_s``, the CPU seconds (user + system, from /proc) of this process and all its
    descendants (Ray's raylet and workers, Redis, the client), by process title."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self.stop = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._run, daemon=True, name="cpu-sampler")

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        stats: dict[int, tuple[int, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / self.tick)
        mine, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, _) in stats.items():
                if ppid == parent and pid not in mine:
                    mine.add(pid)
                    frontier.append(pid)
        out = {}
        for pid in mine:
            with contextlib.suppress(OSError):
                out[pid] = (self._name(pid), stats[pid][1])
        return out

    @staticmethod
    def _name(pid: int) -> str:
        if pid == os.getpid():
            return "driver (replay venue, bench)"
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        first = args[0].decode(errors="replace")
        if first.startswith("ray::"):
            return first.split(" ")[0]
        if "--client" in [a.decode(errors="replace") for a in args]:
            return "load client"
        return Path(first).name or "?"

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), self._snapshot()))
            if self.stop.wait(self.period_s):
                return

    def start(self) -> CpuSampler:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def window(self, t0: float, t1: float) -> tuple[float, dict[str, float]]:
        """CPU seconds per process title between the samples nearest ``t0`` and ``t1``; the window's length."""
        if not self.samples:
            return 0.0, {}
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        out: dict[str, float] = {}
        for pid, (name, cpu) in b[1].items():
            before = a[1].get(pid, (name, 0.0))[1]  # a process born inside the window counts from 0
            out[name] = out.get(name, 0.0) + cpu - before
        return b[0] - a[0], dict(sorted(out.items(), key=lambda kv: -kv[1]))


def prepare(settings: Any, symbols: list[str], history: int, minutes: int) -> None:
    from core.synthetic import generate_market
    from pipelines.market import write_synthetic_market
    from storage import db
    from storage.lake import Lake
    from storage.registry import ModelRegistry

    market = generate_market(symbols, T0, history + minutes + 5, seed=3)
    write_synthetic_market(market, Lake(settings.lake_root))
    engine = db.make_engine(settings.database_url)
    try:
        db.upgrade(engine)
        registry = ModelRegistry(
            settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
        )
        info = registry.log_model(bench_model(), registered_name=MODEL, experiment="bench",
                                  train_start_ms=T0 - 86_400_000, train_end_ms=T0)  # fmt: skip
        registry.set_production(MODEL, info.version)
    finally:
        engine.dispose()


def run(args: argparse.Namespace, tmp: Path, redis_url: str, db_url: str | None) -> dict[str, Any]:
    import ray

    from core.config import PolicyConfig, RiskConfig
    from raytrade.devservices import free_port
    from raytrade.realtime import ShadowOptions, ShadowSession
    from raytrade.settings import Settings
    from serve.api.auth import read_token

    symbols = universe(args.symbols)
    # the replay outlasts the load, /predict and the sequential pass (at speed× venue time)
    client_s = args.seconds + args.predict_calls * 0.2 + args.sequential_calls * 10 * 0.1 + 60
    minutes = math.ceil(client_s * args.speed / 60) + 2
    start_ms = T0 + args.history * MINUTE
    end_ms = start_ms + minutes * MINUTE
    settings = Settings(
        _env_file=None, data_dir=tmp, db_url=db_url, redis_url=redis_url, universe=tuple(symbols), ray_num_cpus=2,
        ray_object_store_mb=256, api_port=free_port(), api_server=args.server,
        policy=PolicyConfig(max_positions=50, position_notional_pct=0.02, btc_high_vol_action="none"),
        risk=RiskConfig(max_positions=50, max_orders_per_s=100),
    )  # fmt: skip
    t = time.perf_counter()
    prepare(settings, symbols, args.history, minutes)
    log(f"{len(symbols)} symbols, {args.history + minutes} minutes of market in the lake and a production model "
        f"in {time.perf_counter() - t:.1f} s; database {'PostgreSQL' if db_url else 'SQLite'}, Redis bus")  # fmt: skip
    options = ShadowOptions(symbols=tuple(symbols), model_name=MODEL, group_size=args.group_size, start_ms=start_ms,
                            end_ms=end_ms, speed=args.speed, mark_ticks_per_minute=args.ticks, predictor_poll_s=0.0,
                            session_id="bench-api", api=True)  # fmt: skip
    session = ShadowSession(settings, options)
    report: dict[str, Any] = {}
    client: dict[str, Any] = {}
    try:
        t = time.perf_counter()
        log(f"starting Ray, Serve, the Predictor, the API ({args.server}), the venue and the ingest actors")
        session.start()
        assert session.api_url is not None
        log(f"system up in {time.perf_counter() - t:.1f} s; API at {session.api_url}; replaying {minutes} "
            f"minutes at {args.speed:g}x ({minutes * 60 / args.speed:.0f} s)")  # fmt: skip
        token = read_token(settings.data_dir.resolve() / "api_token")
        cfg = {"url": session.api_url, "token": token, "redis_url": redis_url, "rate": args.rate,
               "seconds": args.seconds, "threads": args.threads, "pools": args.pools, "ws_rate": args.ws_rate,
               "predict_calls": args.predict_calls, "sequential_calls": args.sequential_calls,
               "request_timeout_s": 10.0, "database_url": settings.database_url,
               "tracking_uri": settings.tracking_uri, "data_dir": str(settings.data_dir.resolve()),
               "token_file": str(settings.data_dir.resolve() / "api_token")}  # fmt: skip
        cfg_path = tmp / "client.json"
        cfg_path.write_text(json.dumps(cfg))
        os.chmod(cfg_path, 0o600)
        time.sleep(args.warmup)  # a few minutes decided before the load: signals and positions exist
        log(f"client process: {args.seconds} s of load at {args.rate:g} req/s, WebSocket probes at "
            f"{args.ws_rate:g}/s, then {args.predict_calls} /predict calls")  # fmt: skip
        budget = client_s + 120
        sampler = CpuSampler().start()
        proc = subprocess.run([sys.executable, __file__, "--client", str(cfg_path)], capture_output=True, text=True,
                              timeout=budget, cwd=ROOT)  # fmt: skip
        for line in proc.stderr.splitlines()[-20:]:
            print(f"  {line}", flush=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"the client process failed (exit {proc.returncode})")
        client = json.loads(proc.stdout.strip().splitlines()[-1])
        sampler.finish()
        client["cpu"] = sampler.window(*client["http"]["window"])
        still = not session.venue.finished.is_set()
        log(f"client done; the replay was {'still running' if still else 'OVER (extend --speed or minutes)'}")
        client["replay_running_at_end"] = still
        t = time.perf_counter()
        report = session.stop()
        log(f"session stopped in {time.perf_counter() - t:.1f} s")
    finally:
        with contextlib.suppress(Exception):
            session.shutdown()
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
    return {"client": client, "report": report}


def summarize(out: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    client, report = out["client"], out["report"]
    http = client["http"]
    rows = http["rows"]
    lat = [r[1] for r in rows]
    errors = sum(1 for r in rows if r[2] != 200)
    missing = http["requests"] - len(rows)
    if report:
        ex = report.get("execution", {})
        print(f"replay: {report['closes']} group-minutes closed, {report['signals']} signals stored, entries "
              f"{ex.get('entries')}, exits {ex.get('exits')}; close -> signal p99 "
              f"{report['close_to_signal_p99_ms']:.0f} ms")  # fmt: skip
    print(f"state endpoints, open loop at {args.rate:g} req/s for {args.seconds:g} s ({args.threads} sender threads): "
          f"{len(rows)} answered of {http['requests']}, errors {errors + missing}; latency from the scheduled time "
          f"p50 {pct(lat, 50):.1f} ms, p90 {pct(lat, 90):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat, default=0):.0f} ms "
          f"(target p99 <= 50 ms); sender late by at most {http['late_send_ms_max']:.1f} ms")  # fmt: skip
    for path in ENDPOINTS:
        part = [r[1] for r in rows if r[0] == path]
        bad = sum(1 for r in rows if r[0] == path and r[2] != 200)
        print(
            f"  {path:<28} n {len(part):5d}  p50 {pct(part, 50):7.1f}  p99 {pct(part, 99):7.1f} ms  errors {bad}"
        )
    statuses: dict[str, int] = {}
    for r in rows:
        if r[2] != 200:
            key = "timeout/connection" if r[2] == -1 else str(r[2])
            statuses[key] = statuses.get(key, 0) + 1
    if statuses or missing:
        print(f"  errors by status: {statuses}, not answered by the end: {missing}")
    span, cpu = client.get("cpu", (0.0, {}))
    if span > 0:
        print(
            f"CPU during the load ({span:.1f} s; 2 cores = {2 * span:.0f} CPU-s), by process (CPU-s, % of one core):"
        )
        for name, used in list(cpu.items())[:12]:
            print(f"  {name:<48} {used:6.1f}  {100 * used / span:5.0f}%")
        answered = max(1, len(rows))
        per = {
            k: 1000 * v / answered
            for k, v in cpu.items()
            if k.startswith(("ray::ProxyActor", "ray::ServeReplica:raytrade-api", "ray::ApiServer"))
        }
        print("  CPU per answered request: " + ", ".join(f"{k} {v:.1f} ms" for k, v in per.items()))
        total = sum(cpu.values())
        print(f"  {'total of this bench':<48} {total:6.1f}  {100 * total / span:5.0f}%; load average now "
              f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    ws = client["ws"]
    wl = ws.get("latencies", [])
    print(f"bus -> WebSocket: {len(wl)} of {ws.get('sent', 0)} probes received at {args.ws_rate:g}/s; p50 "
          f"{pct(wl, 50):.1f} ms, p99 {pct(wl, 99):.1f} ms, max {max(wl, default=0):.0f} ms (target p99 <= 100 ms)"
          + (f"; error: {ws['error']}" if "error" in ws else ""))  # fmt: skip
    pr = client["predict"]
    pl = pr["latencies"]
    print(f"/predict, 50 rows JSON, {len(pl)} sequential calls (model version {pr['model_version']}): p50 "
          f"{pct(pl, 50):.1f} ms, p99 {pct(pl, 99):.1f} ms, errors {pr['errors']}")  # fmt: skip
    print(f"sequential, unloaded by this client (the replay still running), {args.sequential_calls} calls each, "
          f"through {args.server} | the same app in-process (no server): p50 wall, CPU per call")  # fmt: skip
    inproc = client.get("in_process", {})
    for path, part in client["sequential"].items():
        wall, cpu = inproc.get(path, (math.nan, math.nan))
        print(f"  {path:<28} p50 {pct(part, 50):7.1f}  p99 {pct(part, 99):7.1f} ms | in-process p50 {wall:6.1f} ms, "
              f"CPU {cpu:5.1f} ms")  # fmt: skip
    return {
        "api_p50_ms": round(pct(lat, 50), 1), "api_p99_ms": round(pct(lat, 99), 1),
        "ws_p50_ms": round(pct(wl, 50), 1), "ws_p99_ms": round(pct(wl, 99), 1),
        "predict_p50_ms": round(pct(pl, 50), 1), "predict_p99_ms": round(pct(pl, 99), 1),
        "api_requests": http["requests"], "api_errors": errors + missing, "ws_sent": ws.get("sent", 0),
        "ws_received": len(wl), "predict_calls": len(pl), "predict_errors": pr["errors"],
        "rate": args.rate, "seconds": args.seconds, "symbols": args.symbols, "speed": args.speed,
        "server": args.server,
    }  # fmt: skip


#: the keys of the final JSON line (issue 16: p50/p99 of the state endpoints, bus → WebSocket p99, /predict p99)
RESULT_KEYS = ("api_p50_ms", "api_p99_ms", "ws_p99_ms", "predict_p99_ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", choices=("uvicorn-actor", "serve"), default="uvicorn-actor",
                    help="what serves the API (Settings.api_server)")  # fmt: skip
    ap.add_argument("--symbols", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the open-loop load")
    ap.add_argument("--rate", type=float, default=200.0, help="state-endpoint requests per second")
    ap.add_argument(
        "--threads", type=int, default=2, help="sender threads of the load (one asyncio loop each)"
    )
    ap.add_argument(
        "--pools", type=int, default=4, help="httpx pools (32 connections each) per sender thread"
    )
    ap.add_argument("--ws-rate", type=float, default=20.0, help="bus probes per second")
    ap.add_argument("--predict-calls", type=int, default=200)
    ap.add_argument("--sequential-calls", type=int, default=30, help="unloaded calls per endpoint afterwards")
    ap.add_argument("--history", type=int, default=300, help="minutes of warm-up history in the lake")
    ap.add_argument("--speed", type=float, default=30.0, help="replay speed (venue ms per wall ms)")
    ap.add_argument("--ticks", type=int, default=6, help="markPrice and bookTicker updates per symbol-minute")
    ap.add_argument("--group-size", type=int, default=25)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of replay before the load")
    ap.add_argument("--postgres", action="store_true", help="PostgreSQL (devservices) instead of SQLite")
    ap.add_argument("--deadline", type=float, default=None, help="watchdog: interrupt after this many s")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 symbols, 5 s at 50 req/s")
    ap.add_argument("--client", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main(args.client)
        return
    if args.quick:
        args.symbols, args.seconds, args.rate, args.ws_rate = 4, 5.0, 50.0, 10.0
        args.predict_calls, args.sequential_calls, args.history, args.warmup = 10, 3, 120, 3.0
    deadline = args.deadline or 600.0 + 2 * args.seconds
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from raytrade.devservices import TempRedis, postgres_url

    redis = TempRedis()
    done = watchdog(deadline, [redis.stop])
    t0 = time.perf_counter()
    summary: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="raytrade-bench-api-") as tmp:
            redis.start()
            log(f"Redis at {redis.url}; load average {os.getloadavg()[0]:.2f}")
            with postgres_url() if args.postgres else contextlib.nullcontext(None) as db_url:
                out = run(args, Path(tmp), redis.url, db_url)
            summary = summarize(out, args)
    except BaseException:
        traceback.print_exc()
        raise SystemExit(1) from None
    finally:
        redis.stop()
        done.set()
        log(f"done in {time.perf_counter() - t0:.0f} s; Redis stopped")
    assert summary is not None
    print("all figures: " + json.dumps(summary))
    print(json.dumps({k: summary[k] for k in RESULT_KEYS}))  # the keys, exactly


if __name__ == "__main__":
    main()
