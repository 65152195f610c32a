"""Per-request CPU and latency of three ways to serve the API (issue 16), without a replay.

Each option runs in a fresh interpreter with its own local Ray (2 CPUs, loopback), SQLite and a
production model behind the Serve Predictor:

- ``serve``: the FastAPI app as a Serve deployment behind Serve's HTTP proxy (``serve.ingress.deploy_api``);
- ``direct``: the same deployment with Serve's experimental direct ingress
  (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` set before ``ray.init`` starts the local cluster, so the
  controller and the replicas inherit it; the replica's own uvicorn binds Serve's ``http_options.host``,
  127.0.0.1, on a port the controller allocates from ``RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT``,
  here pinned to one free port);
- ``uvicorn``: the same app under uvicorn in one Ray actor (``serve.api_server``), ``/predict`` through
  the Predictor's handle.

Load: open loop at ``--rate`` req/s for ``--seconds`` s from this interpreter (httpx, latency from
each request's scheduled time), alternating ``/api/health`` and ``/api/status`` with the token; CPU
per answered request of the serving processes (proxy + replica, or the API actor) from /proc.

    nice -n 10 .venv/bin/python bench/api_paths.py [--options serve,direct,uvicorn] [--rate 200] [--seconds 15]

Prints one JSON line per option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = ("/api/health", "/api/status")


def load(url: str, token: str, rate: float, seconds: float) -> list[tuple[str, float, int]]:
    import httpx

    n = int(rate * seconds)
    rows: list[tuple[str, float, int]] = []

    async def go() -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                     timeout=10.0) as client:  # fmt: skip
            t0 = time.perf_counter() + 0.2

            async def one(i: int, due: float) -> None:
                path = PATHS[i % 2]
                try:
                    status = (await client.get(path)).status_code
                except Exception:
                    status = -1
                rows.append((path, (time.perf_counter() - due) * 1000, status))

            tasks = []
            for i in range(n):
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, due)))
            await asyncio.wait(tasks, timeout=20)

    asyncio.run(go())
    return rows


def direct_url(first: int, timeout_s: float = 60.0) -> str:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for port in range(first, first + 20):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    return f"http://127.0.0.1:{port}"
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise RuntimeError("no direct-ingress replica answers /api/health")


def one_option(option: str, rate: float, seconds: float) -> dict[str, Any]:
    from raytrade.devservices import free_port

    di_port = free_port()
    if option == "direct":  # before ray.init: the local cluster's processes inherit the environment
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(di_port)
        os.environ["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(
            di_port + 20
        )  # the Predictor takes one too
    import numpy as np
    import ray
    from ray import serve

    from bench.api import MODEL, CpuSampler, bench_model
    from raytrade.cmd_serve import api_config
    from raytrade.rayinit import start_ray
    from raytrade.settings import Settings
    from serve.api.auth import ensure_token
    from serve.ingress import deploy_api, start_serve
    from serve.predictor import deploy_predictor
    from storage import db
    from storage.registry import ModelRegistry

    with tempfile.TemporaryDirectory(prefix="raytrade-bench-paths-") as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp), ray_num_cpus=2, ray_object_store_mb=256,
                            api_port=free_port())  # fmt: skip
        engine = db.make_engine(settings.database_url)
        db.upgrade(engine)
        registry = ModelRegistry(
            settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
        )
        info = registry.log_model(bench_model(), registered_name=MODEL, experiment="bench", train_start_ms=0,
                                  train_end_ms=86_400_000)  # fmt: skip
        registry.set_production(MODEL, info.version)
        engine.dispose()
        config = api_config(settings)
        token = ensure_token(config.token_file)
        start_ray(settings, progress=False)
        actor = None
        try:
            start_serve(None if option == "uvicorn" else settings.api_port)
            deploy_predictor(settings.tracking_uri, MODEL)
            if option == "uvicorn":
                from serve.api_server import start_api_server

                actor, url = start_api_server(config, settings.api_port)
            else:
                url = deploy_api(config, settings.api_port)
                if option == "direct":  # the port of the replica that answers the API
                    url = direct_url(di_port)
            import httpx

            deadline = time.monotonic() + 60
            while True:  # warm: every path answered once
                try:
                    if all(httpx.get(url + p, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
                           for p in PATHS):  # fmt: skip
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{option}: {url} does not answer")
                time.sleep(0.5)
            listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
            load(url, token, 50, 2)  # warm-up
            sampler = CpuSampler(period_s=0.25).start()
            t0 = time.time()
            rows = load(url, token, rate, seconds)
            t1 = time.time()
            time.sleep(0.3)
            sampler.finish()
            span, cpu = sampler.window(t0, t1)
        finally:
            if actor is not None:
                from serve.api_server import stop_api_server

                stop_api_server(actor)
            serve.shutdown()
            ray.shutdown()
    serving = {k: v for k, v in cpu.items() if k.startswith(("ray::ProxyActor", "ray::ServeReplica:raytrade-api",
                                                                "ray::ApiServer"))}  # fmt: skip
    answered = sum(1 for r in rows if r[2] == 200)
    lat = np.array([r[1] for r in rows])
    by_path = {p: np.array([r[1] for r in rows if r[0] == p]) for p in PATHS}
    bound = sorted({line.split()[3] for line in listening.splitlines()
                    if line.split()[3].endswith(tuple(f":{p}" for p in (settings.api_port, *range(di_port, di_port + 20))))})  # fmt: skip
    return {
        "option": option, "url": url, "bound": bound, "rate": rate, "seconds": seconds, "requests": len(rows),
        "errors": len(rows) - answered, "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        **{f"p99{p.replace('/api/', '_')}_ms": round(float(np.percentile(v, 99)), 1) for p, v in by_path.items()},
        "cpu_ms_per_request": round(1000 * sum(serving.values()) / max(1, answered), 2),
        "cpu_ms_by_process": {k: round(1000 * v / max(1, answered), 2) for k, v in serving.items()},
        "cpu_s_window": round(span, 1), "load_avg": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--options", default="serve,direct,uvicorn")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if args.one:
        print(json.dumps(one_option(args.one, args.rate, args.seconds)), flush=True)
        return
    for option in args.options.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", option, "--rate", str(args.rate), "--seconds",
                               str(args.seconds)], capture_output=True, text=True, timeout=400, cwd=ROOT)  # fmt: skip
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(json.dumps({"option": option, "error": proc.stderr.strip().splitlines()[-3:]}), flush=True)
        else:
            print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
