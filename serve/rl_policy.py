"""Ray Serve deployment ``RLPolicy``: the production RL agent behind one batched handle (spec 001 §25; #17).

The deployment restores the RLModule of ``models:/<strategy>-rl@production`` from its checkpoint
folder (``storage.rl_registry``: the version's artifact is what ``RLModule.save_to_path`` wrote) with
``RLModule.from_checkpoint`` — no Algorithm, no env runners — and answers ``decide(observations)``,
a block of k × 17 observations (``core.rl_obs``), with a ``PolicyAnswer``:

- ``actions``: the greedy action of each row (0 HOLD, 1 LONG, 2 SHORT, 3 CLOSE): the argmax of the
  module's ``forward_inference`` output ``Columns.ACTION_DIST_INPUTS`` (the Categorical's logits),
  which is what the inference action distribution's ``to_deterministic()`` samples;
- ``action_probs``: softmax of those logits, k × 4;
- ``value_estimates``: the value head, ``compute_values`` (``ValueFunctionAPI``; NaN when the module
  has none, e.g. an inference-only module);
- the registry ``version`` and the ``rl_models.model_id`` that computed them, and that version's
  ``decision_every`` (bars between its decisions, as it was trained: the version tag
  ``rl_decision_every``, 1 for versions without it). The caller asks at that cadence (``actors.decide``:
  bars whose open time // 1 min is a multiple of it); the deployment answers whatever it is asked.

Requests arriving within ``batch_wait_timeout_s`` are stacked into one forward pass (``@serve.batch``).
Alias moves are picked up as the ``Predictor`` does: a background task polls the alias every
``poll_s``; a new version is downloaded, restored, checked on a zero observation, and swapped in
with one reference assignment; a version that fails any of that is logged and skipped while the
current one keeps serving.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from core.errors import ConfigError
from core.rl_obs import OBS_DIM
from serve.alias_follow import AliasFollower
from storage.registry import PRODUCTION_ALIAS, ModelRegistry, ModelVersionInfo
from storage.rl_registry import decision_every_of, download_rl_checkpoint, rl_model_id, rl_model_name

log = logging.getLogger(__name__)

APP_NAME = "raytrade-rl-policy"
DEPLOYMENT_NAME = "RLPolicy"
ACTION_NAMES: tuple[str, ...] = ("HOLD", "LONG", "SHORT", "CLOSE")


@dataclass(frozen=True, slots=True)
class PolicyAnswer:
    """The agent's answer for k observations, and which version gave it."""

    actions: np.ndarray  # int64 (k,)
    action_probs: np.ndarray  # float64 (k, 4)
    value_estimates: np.ndarray  # float64 (k,), NaN without a value head
    name: str
    version: str
    model_id: str | None  # rl_models.model_id
    decision_every: int = 1  # bars between the version's decisions (its training cadence)


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    module: Any  # ray.rllib RLModule (torch)
    name: str
    version: str
    model_id: str | None
    loaded_at_ms: int
    decision_every: int = 1  # the version's ``rl_decision_every`` tag (1 without it)


def restore_module(path: str) -> Any:
    """``RLModule.from_checkpoint`` of a checkpoint folder, in eval mode."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(path)
    if hasattr(module, "eval"):
        module.eval()
    return module


def module_outputs(module: Any, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(actions, action_probs, value_estimates) of ``module`` on k × 17 observations (see the module
    docstring); the same numbers in process and over Serve."""
    import torch
    from ray.rllib.core.columns import Columns

    obs = np.asarray(observations, np.float32).reshape(-1, OBS_DIM)
    batch = {Columns.OBS: torch.from_numpy(np.ascontiguousarray(obs))}
    with torch.no_grad():
        out = module.forward_inference(batch)
        logits = out[Columns.ACTION_DIST_INPUTS]
        probs = torch.softmax(logits, dim=-1).double().numpy()
        if hasattr(module, "compute_values"):
            values = module.compute_values(batch).double().numpy().reshape(-1)
        else:
            values = np.full(len(obs), np.nan)
    return np.argmax(probs, axis=1).astype(np.int64), probs, values


def load_rl_production(
    registry: ModelRegistry, name: str, info: ModelVersionInfo | None = None
) -> LoadedPolicy:
    """Restore the version ``production`` points to (or ``info``); ConfigError when nothing is promoted."""
    info = info or registry.production_version(name)
    if info is None:
        raise ConfigError(f"RL model {name!r} has no {PRODUCTION_ALIAS!r} alias: promote a version first")
    every = decision_every_of(info)
    with tempfile.TemporaryDirectory(prefix="rl-module-") as tmp:
        folder = download_rl_checkpoint(registry, info, tmp)
        module = restore_module(str(folder))
    loaded = LoadedPolicy(module, name, str(info.version), rl_model_id(info), int(time.time() * 1000), every)
    _, probs, _ = module_outputs(module, np.zeros((1, OBS_DIM), np.float32))
    if probs.shape != (1, len(ACTION_NAMES)):
        raise ValueError(
            f"{name} version {info.version}: {probs.shape[1]} actions, the agent has {len(ACTION_NAMES)}"
        )
    return loaded


@serve.deployment(
    name=DEPLOYMENT_NAME, num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256
)
class RLPolicy(AliasFollower):
    """Batched inference of the production RL module; see the module docstring."""

    _label = "RLPolicy"

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
        import torch

        torch.set_num_threads(num_threads)
        registry = ModelRegistry(tracking_uri)
        name = rl_model_name(model_name)
        self._follow(registry, name, poll_s, load_rl_production(registry, name))
        self._batches = 0
        self._rows = 0
        self.decide_batch.set_max_batch_size(max_batch_size)
        self.decide_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def _load_version(self, info: ModelVersionInfo) -> LoadedPolicy:
        # any failure to restore (missing files, unpickling, shapes) keeps the current module serving
        return load_rl_production(self._registry, self._name, info)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def decide_batch(self, blocks: list[np.ndarray]) -> list[PolicyAnswer]:
        current = self._current
        parts = [np.asarray(b, np.float32).reshape(-1, OBS_DIM) for b in blocks]
        sizes = [len(p) for p in parts]
        stacked = np.concatenate(parts) if parts else np.empty((0, OBS_DIM), np.float32)
        actions, probs, values = module_outputs(current.module, stacked)
        self._batches += 1
        self._rows += len(stacked)
        out: list[PolicyAnswer] = []
        start = 0
        for n in sizes:
            sl = slice(start, start + n)
            out.append(PolicyAnswer(actions[sl], probs[sl], values[sl], current.name, current.version,
                                    current.model_id, current.decision_every))  # fmt: skip
            start += n
        return out

    async def decide(self, observations: np.ndarray) -> PolicyAnswer:
        """The agent's actions, action probabilities and value estimates for ``observations`` (k × 17,
        ``core.rl_obs`` order), naming the version that computed them."""
        self._ensure_poller()
        return await self.decide_batch(observations)

    async def stats(self) -> dict[str, Any]:
        """Serving version, alias swaps seen, versions that failed to load, batches and rows decided."""
        self._ensure_poller()
        return {"name": self._name, "version": self._current.version, "model_id": self._current.model_id,
                "decision_every": self._current.decision_every, "swaps": self._swaps, "failed_versions": sorted(self._failed), "batches": self._batches,
                "rows": self._rows}  # fmt: skip


def deploy_rl_policy(
    tracking_uri: str,
    model_name: str,
    *,
    poll_s: float = 5.0,
    max_batch_size: int = 64,
    batch_wait_timeout_s: float = 0.005,
) -> serve.handle.DeploymentHandle:
    """Run the RLPolicy application beside the Predictor (Serve without an HTTP proxy, as
    ``serve.predictor.deploy_predictor``). ``model_name``: the strategy or its ``-rl`` name."""
    serve.start(proxy_location="Disabled", http_options={"host": "127.0.0.1"})
    app = RLPolicy.bind(  # type: ignore[attr-defined]
        tracking_uri, model_name, poll_s=poll_s, max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
    )  # fmt: skip
    return serve.run(app, name=APP_NAME, route_prefix=None)


def rl_policy_handle() -> serve.handle.DeploymentHandle:
    """The running RLPolicy's handle (from any actor of the same Ray cluster)."""
    return serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME)


__all__ = ["ACTION_NAMES", "APP_NAME", "DEPLOYMENT_NAME", "PolicyAnswer", "RLPolicy", "deploy_rl_policy",
           "load_rl_production", "module_outputs", "restore_module", "rl_policy_handle"]  # fmt: skip
