"""The RL agent's checkpoints in the MLflow registry and the ``rl_models`` table (spec 001 §25.4; issue #17).

One convention, used by training (``rl.train``) to register and by serving (``serve.rl_policy``) to load:

- Registered model: ``rl_model_name(strategy)`` = ``<strategy>-rl`` (e.g. ``raytrade-lgbm-rl``), one
  per strategy whose predictions the agent reads; its own ``production`` alias
  (``storage.registry.PRODUCTION_ALIAS``) is the version the ``RLPolicy`` deployment serves.
- A version's artifact is the **RLModule checkpoint folder** — what ``RLModule.save_to_path`` writes
  and ``RLModule.from_checkpoint`` reads (``class_and_ctor_args.pkl``, ``module_state.pkl``,
  ``metadata.json``). From a PPO run that is the learner's full module (with the value head):
  ``<algo.save_to_path()>/learner_group/learner/rl_module/default_policy``. The folder is logged on
  the version's MLflow run under ``rl_module/`` (``RL_MODULE_ARTIFACT``) and the version's source is
  that artifact directory. Register with ``register_rl_checkpoint`` (creates a run in experiment
  ``raytrade-rl`` or logs into the caller's run).
- Version tags: ``raytrade.rl_model_id`` (the ``rl_models.model_id``: by default the MLflow run id,
  32 hex chars), ``rl_symbol``, ``rl_algorithm``, ``train_start_ms``, ``train_end_ms``,
  ``rl_artifact_path``, ``rl_decision_every`` (bars between the policy's decisions, as it was trained:
  evaluation and serving ask it at that cadence; a version without the tag decides every bar,
  ``decision_every_of``); metrics on the run.
- ``rl_models`` mirror: one row per version (``model_path`` = ``models:/<name>/<version>``),
  ``is_production`` true on the version the alias points to (``set_rl_production``).

Nothing here imports Ray or torch: loading the module is serving's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from storage.registry import PRODUCTION_ALIAS, ModelRegistry, ModelVersionInfo, RegistryError, _translated
from storage.schema import rl_models

RL_SUFFIX = "-rl"
RL_EXPERIMENT = "raytrade-rl"
RL_MODULE_ARTIFACT = "rl_module"
TAG_RL_MODEL_ID = "raytrade.rl_model_id"
TAG_RL_SYMBOL = "rl_symbol"
TAG_RL_ALGORITHM = "rl_algorithm"
TAG_RL_ARTIFACT = "rl_artifact_path"
TAG_TRAIN_START = "train_start_ms"
TAG_TRAIN_END = "train_end_ms"
TAG_DECISION_EVERY = "rl_decision_every"
#: The files of an RLModule checkpoint folder (``RLModule.save_to_path``).
CHECKPOINT_FILES = ("class_and_ctor_args.pkl", "module_state.pkl", "metadata.json")


def rl_model_name(strategy: str) -> str:
    """The registered model of the RL agent on ``strategy``'s predictions: ``<strategy>-rl``."""
    return strategy if strategy.endswith(RL_SUFFIX) else f"{strategy}{RL_SUFFIX}"


@dataclass(frozen=True, slots=True)
class RLVersion:
    """One registered RL checkpoint."""

    name: str
    version: str
    model_id: str  # rl_models.model_id
    run_id: str
    artifact_path: str


def rl_model_id(info: ModelVersionInfo) -> str | None:
    """The ``rl_models.model_id`` of a registered version (its tag)."""
    return info.tags.get(TAG_RL_MODEL_ID)


def decision_every_of(info: ModelVersionInfo) -> int:
    """Bars between a registered version's decisions (its ``rl_decision_every`` tag; 1 without it).
    RegistryError when the tag is not a positive integer."""
    text = info.tags.get(TAG_DECISION_EVERY)
    if text is None:
        return 1
    try:
        every = int(text)
    except ValueError:
        every = 0
    if every < 1:
        raise RegistryError(
            f"{info.name} version {info.version}: {TAG_DECISION_EVERY} {text!r} is not an integer ≥ 1"
        )
    return every


def register_rl_checkpoint(
    registry: ModelRegistry,
    name: str,
    module_dir: str | Path,
    *,
    symbol: str,
    train_start_ms: int,
    train_end_ms: int,
    algorithm: str = "PPO",
    decision_every: int = 1,
    metrics: Mapping[str, float] | None = None,
    run_id: str | None = None,
    model_id: str | None = None,
    experiment: str = RL_EXPERIMENT,
    engine: sa.Engine | None = None,
) -> RLVersion:
    """Log the RLModule checkpoint folder ``module_dir`` on a run (``run_id``, else a new run in
    ``experiment``), register it as a new version of ``name`` and mirror it into ``rl_models``
    (``engine``, default the registry's). ``decision_every``: the training cadence (tag
    ``rl_decision_every``). Does not move the production alias. ValueError when the folder is not an
    RLModule checkpoint or ``decision_every`` < 1."""
    folder = Path(module_dir)
    if int(decision_every) < 1:
        raise ValueError(f"decision_every must be ≥ 1, got {decision_every}")
    missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} is not an RLModule checkpoint folder: it lacks {missing}")
    client = registry.client
    with _translated(f"registering the RL checkpoint {folder} as {name!r}"):
        if run_id is None:
            run = client.create_run(registry.experiment_id(experiment), run_name=f"{name}-{symbol}")
            run_id = run.info.run_id
            created = True
        else:
            created = False
        for key, value in (metrics or {}).items():
            client.log_metric(run_id, key, float(value))
        client.log_artifacts(run_id, str(folder), RL_MODULE_ARTIFACT)
        if created:
            client.set_terminated(run_id)
        artifact_uri = client.get_run(run_id).info.artifact_uri
        model_id = model_id or run_id[:32]
        tags = {TAG_RL_MODEL_ID: model_id, TAG_RL_SYMBOL: symbol, TAG_RL_ALGORITHM: algorithm,
                TAG_TRAIN_START: str(int(train_start_ms)), TAG_TRAIN_END: str(int(train_end_ms)),
                TAG_RL_ARTIFACT: RL_MODULE_ARTIFACT, TAG_DECISION_EVERY: str(int(decision_every))}  # fmt: skip
        if name not in registry.registered_names():
            client.create_registered_model(name)
        mv = client.create_model_version(
            name, f"{artifact_uri}/{RL_MODULE_ARTIFACT}", run_id=run_id, tags=tags
        )
    version = RLVersion(name, str(mv.version), model_id, run_id, RL_MODULE_ARTIFACT)
    target = engine if engine is not None else registry.engine
    if target is not None:
        upsert_rl_model(target, version, symbol=symbol, algorithm=algorithm, train_start_ms=train_start_ms,
                        train_end_ms=train_end_ms, metrics=dict(metrics or {}))  # fmt: skip
    return version


def upsert_rl_model(
    engine: sa.Engine,
    version: RLVersion,
    *,
    symbol: str,
    algorithm: str,
    train_start_ms: int,
    train_end_ms: int,
    metrics: Mapping[str, Any] | None = None,
    is_production: bool = False,
) -> None:
    """Insert or update the ``rl_models`` row of one registered version."""
    row = {"symbol": symbol, "algorithm": algorithm, "train_start": int(train_start_ms), "train_end": int(train_end_ms),
           "metrics": dict(metrics or {}), "model_path": f"models:/{version.name}/{version.version}",
           "is_production": is_production}  # fmt: skip
    with engine.begin() as conn:
        found = conn.execute(
            sa.select(rl_models.c.model_id).where(rl_models.c.model_id == version.model_id)
        ).first()
        if found is None:
            conn.execute(
                rl_models.insert().values(
                    model_id=version.model_id, created_at=int(time.time() * 1000), **row
                )
            )
        else:
            conn.execute(rl_models.update().where(rl_models.c.model_id == version.model_id).values(**row))


def set_rl_production(
    registry: ModelRegistry, name: str, version: str | int, *, engine: sa.Engine | None = None
) -> ModelVersionInfo:
    """Point ``name``'s ``production`` alias at ``version`` (serving swaps to it at its next poll) and
    flag that version's ``rl_models`` row, the others of ``name`` not. Gates are the caller's."""
    info = registry.version(name, version)
    model_id = rl_model_id(info)
    if model_id is None:
        raise RegistryError(f"{name} version {version} is not an RL checkpoint (no {TAG_RL_MODEL_ID} tag)")
    with _translated(f"promoting {name} version {version}"):
        registry.client.set_registered_model_alias(name, PRODUCTION_ALIAS, str(version))
    target = engine if engine is not None else registry.engine
    if target is not None:
        with target.begin() as conn:
            conn.execute(
                rl_models.update()
                .where(rl_models.c.model_path.like(f"models:/{name}/%"))
                .values(is_production=rl_models.c.model_id == model_id)
            )
    return registry.version(name, version)


def download_rl_checkpoint(registry: ModelRegistry, info: ModelVersionInfo, dst: str | Path) -> Path:
    """Download the checkpoint folder of a registered RL version into ``dst``; return the folder."""
    if info.run_id is None:
        raise RegistryError(f"{info.name} version {info.version} has no run to download from")
    path = info.tags.get(TAG_RL_ARTIFACT, RL_MODULE_ARTIFACT)
    with _translated(f"downloading {info.name} version {info.version}"):
        local = registry.client.download_artifacts(info.run_id, path, str(dst))
    folder = Path(local)
    missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()]
    if missing:
        raise RegistryError(
            f"{info.name} version {info.version} is not an RLModule checkpoint: lacks {missing}"
        )
    return folder


def sync_rl_production(
    registry: ModelRegistry, name: str, *, engine: sa.Engine | None = None
) -> ModelVersionInfo | None:
    """Make sure the version ``name``'s ``production`` alias points to has its ``rl_models`` row (from its
    tags and run metrics: a version registered without an engine) and the only production flag of
    ``name``; return it, or None when nothing is promoted. Serving's decisions refer to that row."""
    if name not in registry.registered_names():
        return None
    info = registry.production_version(name)
    if info is None:
        return None
    model_id = rl_model_id(info)
    if model_id is None:
        raise RegistryError(
            f"{name} version {info.version} is not an RL checkpoint (no {TAG_RL_MODEL_ID} tag)"
        )
    target = engine if engine is not None else registry.engine
    if target is not None:
        tags = info.tags
        version = RLVersion(
            name, info.version, model_id, info.run_id or "", tags.get(TAG_RL_ARTIFACT, RL_MODULE_ARTIFACT)
        )
        upsert_rl_model(target, version, symbol=tags.get(TAG_RL_SYMBOL, ""), algorithm=tags.get(TAG_RL_ALGORITHM, "PPO"),
                        train_start_ms=int(tags.get(TAG_TRAIN_START, 0)), train_end_ms=int(tags.get(TAG_TRAIN_END, 0)),
                        metrics=dict(info.metrics))  # fmt: skip
        set_rl_production(registry, name, info.version, engine=target)
    return info
