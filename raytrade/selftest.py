"""``raytrade selftest``: is this installation able to run? One row per component.

Every check runs in a thread of its own and is given ``timeout_s`` (Ray, which starts processes,
at least ``RAY_TIMEOUT_S``): a server that does not answer fails its check with "timed out" instead
of hanging the selftest (MLflow alone retries an unreachable server for minutes). A failure's text
is one line with URL passwords and ``key=value`` secrets masked.

``run_node_selftest`` (``raytrade selftest --all-nodes``) runs the checks that reach a service
(``NODE_CHECKS``: database, bus, MLflow, lake) once on every alive node of the Ray cluster, each in a
task pinned to its node (``NodeAffinitySchedulingStrategy``, ``soft=False``, no CPU): every node must
reach the services with the settings the driver has. A node whose task does not answer in time
fails all its checks as timed out.
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


#: The checks that reach a service: those ``run_node_selftest`` runs on every node.
NODE_CHECKS: tuple[str, ...] = ("database", "bus", "mlflow", "lake")
#: Seconds a node's task may take to start beyond its checks' bounds (a worker process starting).
NODE_START_S = 60.0


@dataclass(frozen=True, slots=True)
class NodeCheck:
    """One check's outcome on one node: node id (short), node IP, then as ``Check``."""

    node: str
    ip: str
    component: str
    ok: bool
    detail: str
    seconds: float


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


def _node_task(settings: Settings, only: tuple[str, ...], timeout_s: float) -> list[Check]:
    return run_selftest(settings, only, timeout_s=timeout_s)


def run_node_selftest(
    settings: Settings, only: tuple[str, ...] = NODE_CHECKS, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[NodeCheck]:
    """Run the service checks (``NODE_CHECKS``, or those of them in ``only``) on every alive node of the
    connected Ray, in parallel; one row per node and check, sorted by node IP and id. Ray must be
    initialized. A task that fails or does not finish within its checks' bounds plus ``NODE_START_S``
    fails each of its node's checks with that error (redacted)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    names = tuple(n for n in NODE_CHECKS if not only or n in only)
    nodes = sorted(
        (n for n in ray.nodes() if n.get("Alive")), key=lambda n: (n["NodeManagerAddress"], n["NodeID"])
    )
    # relative locations as the driver resolves them (a worker's working directory is not the driver's)
    settings = settings.model_copy(
        update={"data_dir": settings.data_dir.resolve(), "lake_path": settings.lake_root}
    )
    task = ray.remote(num_cpus=0, max_retries=0)(_node_task)
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            settings, names, timeout_s
        )
        for n in nodes
    ]
    bound_s = timeout_s * len(names) + NODE_START_S
    deadline = time.monotonic() + bound_s
    rows: list[NodeCheck] = []
    for node, ref in zip(nodes, refs, strict=True):
        short, ip = node["NodeID"][:8], node["NodeManagerAddress"]
        t0 = time.perf_counter()
        try:
            checks = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
        except Exception as e:  # the node's task never ran, or died: every check of it fails
            if isinstance(e, ray.exceptions.GetTimeoutError):
                ray.cancel(ref, force=True)
                e = TimeoutError(f"the node's checks did not answer within {bound_s:g} s")
            seconds = time.perf_counter() - t0
            rows += [NodeCheck(short, ip, name, False, redact_url(error_text(e)), seconds) for name in names]
            continue
        rows += [NodeCheck(short, ip, c.component, c.ok, c.detail, c.seconds) for c in checks]
    return rows
