"""Starting Ray for a command: the cluster when configured, else a local Ray sized by the settings.

Local Ray listens on loopback only. Ray 2.60 binds its GCS, raylet, object manager, workers and
agents to the node IP, and ``ray.init(_node_ip_address="127.0.0.1")`` alone is turned back into the
machine's external address (``services.resolve_ip_for_localhost``); only Ray's "no cluster" switch
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read into ``ray_constants.ENABLE_RAY_CLUSTER``) makes the
node IP 127.0.0.1, and with it every server binds 127.0.0.1. We set both before ``ray.init`` (the
environment for Ray's child processes) and check the node IP afterwards. The dashboard is off.
Serve's replicas open an inter-deployment gRPC server on ``[::]`` whatever the node IP: a worker
setup hook (``loopback_worker_setup``) makes Ray's gRPC helper bind such wildcard addresses to
127.0.0.1 in every worker of a local Ray (replicas reach each other at the node IP, 127.0.0.1).

To use several machines, start a cluster (``ray start --head --node-ip-address=<ip>`` on the head,
``ray start --address=<head>:6379`` on the others, or ``ray up cluster.yaml``) and point
``RAYTRADE_RAY_ADDRESS`` at it: ``start_ray`` then only connects.

A local Ray's processes are also watched by a reaper (``raytrade.proctree``): when the command dies,
even by SIGKILL, the reaper ends the raylet, GCS, workers and agents it left (Ray's agents otherwise
outlive a killed driver by about a minute).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

from core.errors import FatalError
from pipelines.raydata import configure_data_context
from raytrade.proctree import is_loopback, process_tree, start_reaper
from raytrade.settings import Settings

LOOPBACK = "127.0.0.1"
#: Ray namespace of every raytrade driver: named and detached actors (the Serve app, the execution actor) are
#: found by name from any raytrade process, and Ray does not warn about an anonymous namespace.
RAY_NAMESPACE = "raytrade"


def start_ray(settings: Settings, *, progress: bool = True) -> None:
    """Connect to ``settings.ray_address`` or start local Ray on loopback (no dashboard, small
    object store, reaped if this process dies)."""
    import ray

    if ray.is_initialized():
        return
    with _keep_signal_handlers():
        _init(settings)
    configure_data_context(progress)


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """Put back the command's own SIGTERM/SIGINT handlers after ``ray.init``: Ray's core worker installs
    a failure handler that aborts the process on SIGTERM, so a command's clean stop (``raytrade run``
    reports and releases Ray) would be lost to a SIGTERM that arrives once Ray is up."""
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if callable(handler):  # always: a C-level handler Ray set is invisible to getsignal
                signal.signal(sig, handler)


def _init(settings: Settings) -> None:
    import ray

    if settings.ray_address:
        ray.init(
            address=settings.ray_address,
            namespace=RAY_NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    else:
        before = process_tree(os.getpid())
        _loopback_only()
        ray.init(
            address="local",  # start one: never join a cluster found on this machine by accident
            num_cpus=settings.ray_num_cpus,
            object_store_memory=settings.ray_object_store_mb * 1024 * 1024,
            include_dashboard=False,
            dashboard_host=LOOPBACK,
            _node_ip_address=LOOPBACK,
            runtime_env={"worker_process_setup_hook": "raytrade.rayinit.loopback_worker_setup"},
            namespace=RAY_NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        node_ip = ray.util.get_node_ip_address()
        if not is_loopback(node_ip):
            ray.shutdown()
            raise FatalError(f"local Ray came up on {node_ip}, not loopback: its servers would be reachable "
                             "from the network; set RAYTRADE_RAY_ADDRESS to use a cluster")  # fmt: skip
        start_reaper(process_tree(os.getpid()) - before)


def _loopback_only() -> None:
    """Make local Ray's node IP loopback (see the module docstring)."""
    import ray._private.ray_constants as ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def loopback_worker_setup() -> None:
    """Ray worker setup hook of a local Ray: gRPC servers asked to listen on every interface
    (``[::]:port``, ``0.0.0.0:port``) listen on 127.0.0.1 instead."""
    import ray._common.tls_utils as tls_utils

    original = tls_utils.add_port_to_grpc_server
    if getattr(original, "loopback_only", False):
        return

    def add_port_to_grpc_server(server: object, address: str) -> int:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", ""):
            address = f"{LOOPBACK}:{port}"
        return original(server, address)

    add_port_to_grpc_server.loopback_only = True  # type: ignore[attr-defined]
    tls_utils.add_port_to_grpc_server = add_port_to_grpc_server
