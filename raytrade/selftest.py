"""``raytrade selftest``: is this installation able to run? One row per component.

Every check runs in a thread of its own and is given ``timeout_s`` (Ray, which starts processes,
at least ``RAY_TIMEOUT_S``): a server that does not answer fails its check with "timed out" instead
of hanging the selftest (MLflow alone retries an unreachable server for minutes). A failure's text
is one line with URL passwords and ``key=value`` secrets masked.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from raytrade.rayinit import start_ray
from raytrade.settings import Settings, redact_url
from storage.jobs import error_text

#: Seconds each check may take, unless the caller gives another bound.
DEFAULT_TIMEOUT_S = 10.0
#: Seconds the Ray check may take at least: starting local Ray takes a while on a busy machine.
RAY_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Check:
    """Outcome of one check: component, whether it passed, and what was seen or what failed."""

    component: str
    ok: bool
    detail: str
    seconds: float


def check_configuration(settings: Settings) -> str:
    return f"mode={settings.mode}, {len(settings.universe)} symbols, label spec {settings.label.spec_hash()}"


def check_database(settings: Settings) -> str:
    from storage import db

    engine = db.make_engine(settings.database_url)
    try:
        rev, head = db.current_revision(engine), db.head_revision()
    finally:
        engine.dispose()
    if rev != head:
        raise RuntimeError(f"schema at {rev or 'nothing'}, code expects {head}: run `raytrade db upgrade`")
    return f"{redact_url(settings.database_url)} at revision {rev}"


def check_bus(settings: Settings) -> str:
    from core.messages import SystemStatus, Topic
    from storage.bus import open_bus

    # A namespace of its own, trimmed short: repeated selftests leave one small stream behind.
    bus = open_bus(settings.redis_url, namespace="raytrade-selftest", maxlen=100)
    try:
        group, consumer = "selftest", "selftest-1"
        bus.subscribe(Topic.SYSTEM_STATUS, group, consumer)
        sent = SystemStatus(
            ts_ms=int(time.time() * 1000), component="selftest", ok=True, details={"nonce": uuid.uuid4().hex}
        )
        bus.publish(Topic.SYSTEM_STATUS, sent)
        got = bus.read(Topic.SYSTEM_STATUS, group, consumer, count=100, block_ms=2000)
        bus.ack(Topic.SYSTEM_STATUS, group, [d.id for d in got])
        if sent not in [d.message for d in got]:
            raise RuntimeError("published a message and did not read it back")
    finally:
        bus.close()
    kind = f"Redis Streams at {redact_url(settings.redis_url)}" if settings.redis_url else "in-process bus"
    return f"{kind}: publish → read → ack"


def check_mlflow(settings: Settings) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    from storage.registry import init_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    init_store(settings.tracking_uri)
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiments = client.search_experiments(max_results=100)
    return f"{redact_url(settings.tracking_uri)}: {len(experiments)} experiment(s)"


def check_ray(settings: Settings) -> str:
    import ray

    def _square(x: int) -> int:
        return x * x

    started_here = not ray.is_initialized()
    if started_here:  # the one way a command starts Ray: a cluster, or a local Ray on loopback only
        start_ray(settings, progress=False)
    try:
        total = sum(ray.get([ray.remote(_square).remote(i) for i in range(4)]))
        if total != 14:
            raise RuntimeError(f"remote tasks returned {total}, expected 14")
        cpus = ray.cluster_resources().get("CPU", 0)
    finally:
        if started_here:
            ray.shutdown()
    return f"{'cluster ' + settings.ray_address if settings.ray_address else 'local Ray'}: {cpus:g} CPU, tasks ran"


def check_lake(settings: Settings) -> str:
    root = settings.lake_root
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=root, prefix=".selftest-"):
        pass
    return f"{root} writable"


CHECKS: tuple[tuple[str, Callable[[Settings], str]], ...] = (
    ("configuration", check_configuration),
    ("database", check_database),
    ("bus", check_bus),
    ("mlflow", check_mlflow),
    ("ray", check_ray),
    ("lake", check_lake),
)


def _bounded(fn: Callable[[Settings], str], settings: Settings, timeout_s: float) -> str:
    """Return ``fn(settings)``, or raise TimeoutError after ``timeout_s`` (the check's thread is left behind)."""
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            outcome.append((True, fn(settings)))
        except BaseException as e:  # handed to the caller's thread
            outcome.append((False, e))

    thread = threading.Thread(target=run, name=f"selftest-{fn.__name__}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise TimeoutError(f"timed out after {timeout_s:g} s without an answer")
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return str(value)


def run_selftest(
    settings: Settings, only: tuple[str, ...] = (), *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[Check]:
    """Run every check (or those named in ``only``), each bounded in time; a failing check never stops the others."""
    results = []
    for name, fn in CHECKS:
        if only and name not in only:
            continue
        bound_s = max(timeout_s, RAY_TIMEOUT_S) if name == "ray" else timeout_s
        t0 = time.perf_counter()
        try:
            detail, ok = _bounded(fn, settings, bound_s), True
        except Exception as e:  # a selftest reports every failure, whatever its type
            detail, ok = error_text(e), False
        results.append(Check(name, ok, redact_url(detail), time.perf_counter() - t0))
    return results
