"""Where the realtime actors run on a Ray cluster (spec 001 §3; cluster.yaml, cluster.local.yaml).

- Ingest actors (one per symbol group) ask for one ``ingest_slot`` and are scheduled ``SPREAD``: the
  groups go to different nodes, each node hosting at most as many groups as it has slots. We chose a
  slot resource plus SPREAD over one custom resource per group (``group_3: 1`` on one node): a group
  pinned to a named resource could not come back when its node is lost, while a slot lets Ray (and
  ``restart_lost_ingest``) put it on any node with a free slot; the slot count is the capacity knob.
- The risk/execution actor asks for a little of ``execution``, which only the head defines: it runs
  on the head, the book's single writer, and Ray restarts it there (``max_restarts=-1``; the book is
  recovered from the database, ``actors.execution``).
- Serve replicas, Tune trials and Ray Data tasks ask for CPU only, so they use every node.

On a machine without these resources (a laptop, the embedded local Ray) the options carry no custom
resource and everything runs on the one node: ``cluster_defines`` checks the cluster first.
"""

from __future__ import annotations

import time
from typing import Any

import ray

INGEST_SLOT = "ingest_slot"
EXECUTION = "execution"
#: What the execution actor asks of ``execution``: enough to be placed on the head, little enough that
#: a restarted or second session's actor is never left pending behind one that is stopping.
EXECUTION_SHARE = 0.01


def cluster_defines(resource: str) -> bool:
    """Whether any node of the connected cluster has ``resource``."""
    return float(ray.cluster_resources().get(resource, 0.0)) > 0.0


def ingest_options() -> dict[str, Any]:
    """Ray actor options of an ingest actor: no CPU held (it is I/O bound), spread over the nodes,
    one ``ingest_slot`` where the cluster defines slots."""
    options: dict[str, Any] = {"num_cpus": 0, "scheduling_strategy": "SPREAD"}
    if cluster_defines(INGEST_SLOT):
        options["resources"] = {INGEST_SLOT: 1}
    return options


def execution_options(name: str, *, detached: bool = True) -> dict[str, Any]:
    """Ray actor options of the named execution actor: on the node defining ``execution`` (the head)."""
    options: dict[str, Any] = {"name": name, "get_if_exists": True}
    if detached:
        options["lifetime"] = "detached"
    if cluster_defines(EXECUTION):
        options["resources"] = {EXECUTION: EXECUTION_SHARE}
    return options


def actor_node(actor: Any, timeout_s: float = 30.0) -> str:
    """The id of the node the actor runs on, once it is alive (the GCS's actor table: no dashboard needed)."""
    from ray._private.state import actors

    actor_id = actor._actor_id.hex()
    deadline = time.monotonic() + timeout_s
    while True:
        info = actors(actor_id=actor_id) or {}
        node = (info.get("Address") or {}).get("NodeID")
        if info.get("State") == "ALIVE" and node:
            return str(node)
        if time.monotonic() > deadline:
            raise TimeoutError(f"actor {actor_id} not alive within {timeout_s:g} s")
        time.sleep(0.2)


def restart_lost_ingest(session: Any, timeout_s: float = 5.0) -> list[int]:
    """Start again, on whichever node has a free slot, the ingest actors of ``session`` (a
    ``raytrade.realtime.ShadowSession``) that died with their node; each backfills the minutes it
    missed as it warms up (``actors.ingest``: candles after the database's last one). Return the
    restarted group indexes."""
    from actors.ingest import IngestActor

    lost = []
    for i, actor in enumerate(session.ingest):
        try:
            ray.get(actor.stats.remote(), timeout=timeout_s)
        except (
            ray.exceptions.RayActorError
        ):  # dead, once the GCS marked its node dead (a slow one is not lost)
            lost.append(i)
        except ray.exceptions.GetTimeoutError:
            pass
    _wait_nodes_dead({_last_node(session.ingest[i]) for i in lost} - {None}, timeout_s=60.0)
    for i in lost:
        cfg, hook = session.ingest_args[i]
        with_lost = session.ingest[i]
        ray.kill(with_lost, no_restart=True)
        session.ingest[i] = IngestActor.options(**ingest_options()).remote(cfg, hook)
    if lost:
        ray.get([session.ingest[i].start.remote() for i in lost])
    return lost


def _last_node(actor: Any) -> str | None:
    from ray._private.state import actors

    info = actors(actor_id=actor._actor_id.hex()) or {}
    return (info.get("Address") or {}).get("NodeID")


def _wait_nodes_dead(nodes: set[str], timeout_s: float) -> None:
    """Wait until the GCS has marked ``nodes`` dead: until then Ray may still place new actors there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        if not nodes & alive:
            return
        time.sleep(0.2)
