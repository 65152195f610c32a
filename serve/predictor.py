"""Ray Serve deployment ``Predictor``: the production model behind one batched handle (spec 001 §16).

The deployment loads ``models:/<name>@production`` from the MLflow registry and answers
``predict(features)`` — a block of rows (k × 132, feature schema order) — with a
``core.messages.Prediction``: every model output and the version that produced them. Requests from
every ingest actor that arrive within ``batch_wait_timeout_s`` are stacked into one LightGBM call
(``@serve.batch``).

Alias moves are picked up without dropping requests: a background task polls the alias every
``poll_s``; a new version is loaded next to the current one and swapped in with one reference
assignment, so a batch in flight finishes on the model it started with and every answer names the
version that computed it. A version that fails to load (or refuses the feature schema of this
build) is logged and skipped; the current model keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import serve

from core.errors import ConfigError
from core.features_schema import FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.messages import PREDICTOR_APP_NAME, PREDICTOR_DEPLOYMENT_NAME, Prediction
from core.model import MultiTargetModel
from serve.alias_follow import AliasFollower
from storage.registry import PRODUCTION_ALIAS, ModelRegistry, ModelVersionInfo, RegistryError

log = logging.getLogger(__name__)

#: The Serve application and deployment names the realtime path looks the Predictor up by.
APP_NAME = PREDICTOR_APP_NAME
DEPLOYMENT_NAME = PREDICTOR_DEPLOYMENT_NAME


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model and where it came from."""

    model: MultiTargetModel
    name: str
    version: str
    model_id: str | None  # the MLflow logged-model id of the version
    loaded_at_ms: int


def load_production(registry: ModelRegistry, name: str, alias: str = PRODUCTION_ALIAS) -> LoadedModel:
    """Load the version ``alias`` points to; ConfigError when nothing is promoted."""
    info = registry.production_version(name) if alias == PRODUCTION_ALIAS else registry.version(name, alias)
    if info is None:
        raise ConfigError(
            f"model {name!r} has no {alias!r} alias: promote a version first (raytrade promote)"
        )
    model = registry.load_model(f"models:/{name}/{info.version}")
    return LoadedModel(model, name, str(info.version), info.model_id, int(time.time() * 1000))


def explain_rows(
    loaded: LoadedModel, features: np.ndarray, top_k: int = 5, num_threads: int = 1
) -> dict[str, Any]:
    """The answer of ``Predictor.explain`` for a loaded model (also usable in process)."""
    width = len(loaded.model.feature_names)
    rows = np.asarray(features, np.float64).reshape(-1, width)
    contributions = loaded.model.contributions(
        rows, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, top_k=top_k, num_threads=num_threads
    )
    return {"name": loaded.name, "model_version": loaded.version, "model_id": loaded.model_id,
            "contributions": contributions}  # fmt: skip


@serve.deployment(
    name=DEPLOYMENT_NAME, num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256
)
class Predictor(AliasFollower):
    """Batched inference of the production model; see the module docstring."""

    _label = "Predictor"
    _load_errors = (RegistryError, ConfigError, ValueError)

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        *,
        poll_s: float = 5.0,
        max_batch_size: int = 64,
        batch_wait_timeout_s: float = 0.005,
        num_threads: int = 1,
    ) -> None:
        registry = ModelRegistry(tracking_uri)
        self._num_threads = num_threads
        self._follow(registry, model_name, poll_s, load_production(registry, model_name))
        self._batches = 0
        self._rows = 0
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _load_version(self, info: ModelVersionInfo) -> LoadedModel:
        loaded = load_production(self._registry, self._name)
        loaded.model.predict(  # refuse a model of another feature schema before it serves
            np.zeros((1, len(loaded.model.feature_names))), FEATURE_SCHEMA_VERSION, SCHEMA_HASH
        )
        return loaded

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def predict_batch(self, blocks: list[np.ndarray]) -> list[Prediction]:
        current = self._current
        sizes = [len(b) for b in blocks]
        stacked = np.concatenate([np.asarray(b, np.float64).reshape(-1, len(current.model.feature_names))
                                  for b in blocks]) if blocks else np.empty((0, 0))  # fmt: skip
        preds = current.model.predict(
            stacked, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, num_threads=self._num_threads
        )
        self._batches += 1
        self._rows += len(stacked)
        out: list[Prediction] = []
        start = 0
        for n in sizes:
            rows = {k: v[start : start + n] for k, v in preds.items()}
            out.append(
                Prediction(name=current.name, version=current.version, model_id=current.model_id, preds=rows)
            )
            start += n
        return out

    async def predict(self, features: np.ndarray) -> Prediction:
        """Predict every output for ``features`` (k × 132, schema order), naming the model version."""
        self._ensure_poller()
        return await self.predict_batch(features)

    async def explain(self, features: np.ndarray, top_k: int = 5) -> dict[str, Any]:
        """Top-``top_k`` feature contributions of every output for ``features`` (k × 132, schema order),
        from LightGBM's ``pred_contrib`` (``MultiTargetModel.contributions``: raw score space, e_mae/e_hold
        before clipping, p_tp in log-odds), naming the model version that computed them.

        Off the batched path: it runs in a worker thread (LightGBM releases the GIL), so a ``predict``
        batch is never held up by it. Answers ``{"name", "model_version", "model_id", "contributions":
        [one {target: {"base", "top": [...]}} per row]}``.
        """
        self._ensure_poller()
        current = self._current  # one model for the whole answer, even if the alias moves meanwhile
        return await asyncio.to_thread(explain_rows, current, features, top_k, self._num_threads)

    async def stats(self) -> dict[str, Any]:
        """Serving version, alias swaps seen, batches and rows predicted."""
        self._ensure_poller()
        return {
            "version": self._current.version, "swaps": self._swaps, "batches": self._batches, "rows": self._rows,
        }  # fmt: skip


def deploy_predictor(
    tracking_uri: str,
    model_name: str,
    *,
    poll_s: float = 5.0,
    max_batch_size: int = 64,
    batch_wait_timeout_s: float = 0.005,
    num_replicas: int = 1,
) -> serve.handle.DeploymentHandle:
    """Start Serve without an HTTP proxy (handles only; were one enabled, on loopback) and run the
    Predictor application with ``num_replicas`` replicas; every caller's handle balances its requests
    over them.

    Several replicas on several nodes go evenly over the nodes alive now: at most
    ``ceil(num_replicas / nodes)`` on one node (Serve's ``max_replicas_per_node``; its default spread is
    best effort and put two of three replicas on one node of three in ``bench/cluster.py``). A replica whose node is lost is started again only where that cap leaves
    room, so with one replica per node it waits for a node to join; the others keep serving."""
    if num_replicas < 1:
        raise ConfigError(f"num_replicas must be at least 1, got {num_replicas}")
    serve.start(proxy_location="Disabled", http_options={"host": "127.0.0.1"})
    nodes = sum(1 for n in ray.nodes() if n["Alive"])
    spread = {"max_replicas_per_node": -(-num_replicas // nodes)} if num_replicas > 1 and nodes > 1 else {}
    app = Predictor.options(num_replicas=num_replicas, **spread).bind(  # type: ignore[attr-defined]
        tracking_uri, model_name, poll_s=poll_s, max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
    )  # fmt: skip
    return serve.run(app, name=APP_NAME, route_prefix=None)


def predictor_handle() -> serve.handle.DeploymentHandle:
    """The running Predictor's handle (from any actor of the same Ray cluster)."""
    return serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME)
