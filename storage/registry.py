"""MLflow model registry access: log a ``MultiTargetModel``, load it back, move the production alias.

Layout in MLflow (one registered model per strategy; its name is ``models.strategy``):

- A version's model is an MLflow pyfunc (``storage.model_pyfunc``: models-from-code, no pickle) whose
  single artifact ``artifacts/multi_target_model.json`` is ``MultiTargetModel.to_bytes()``. Its
  signature has the 132 feature columns (``FEATURE_NAMES``, double) as inputs, one double column per
  output (``er_long`` … ``e_hold_short``, then ``p_tp_*`` if present), and the params
  ``feature_schema_version`` / ``feature_schema_hash`` (default: the model's own), which the
  model's schema guard checks. ``load_model`` reads the artifact directly (no pyfunc machinery:
  what serving uses); ``mlflow.pyfunc.load_model`` works too when this repository is importable.
- Version tags: ``feature_schema_version``, ``feature_schema_hash``, ``label_spec_hash``, ``algo``,
  ``train_start_ms``, ``train_end_ms``, ``fingerprint`` and ``raytrade.model_id`` (the ``models``
  row). Metrics and params are logged on the version's run; so is ``gates_input.json`` (the inputs
  of the promotion gates, schema in ``tune.promote``).
- Aliases, not the deprecated stages: ``production`` is the version serving loads
  (``models:/<name>@production``). Promotion history is a chain of version tags: when version V
  replaces U in production, V gets ``raytrade.previous_production = U``. ``previous_production``
  follows that tag from the current production version, so a rollback moves back one step and a
  second rollback one more. The ``previous`` alias mirrors the chain's next step for the MLflow UI.
  A rollback (``record_previous=False``) leaves the chain as it is.

Every registered version is mirrored into the ``models`` table (``storage.model_catalog``) when an
engine is given; ``sync`` re-mirrors a strategy from MLflow, which stays the source of truth.

MLflow's fluent API (model logging, pyfunc loading) reads a process-wide tracking URI; calls that
need it set it for their duration under one module lock and restore it afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import math
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from core.errors import ConfigError, RejectedError
from core.features_schema import FEATURE_NAMES
from core.model import MultiTargetModel
from storage import model_catalog
from storage.model_catalog import ModelRow
from storage.model_pyfunc import (
    ENTRY_SCRIPT,
    MODEL_ARTIFACT_FILE,
    MODEL_ARTIFACT_KEY,
    MultiTargetPyfunc,
    model_signature,
    pip_requirements,
)

__all__ = [
    "GATES_INPUT_FILE",
    "PREVIOUS_ALIAS",
    "PRODUCTION_ALIAS",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelVersionInfo",
    "MultiTargetPyfunc",
    "RegistryError",
    "init_store",
    "load_model",
    "model_signature",
]

PRODUCTION_ALIAS = "production"
PREVIOUS_ALIAS = "previous"
GATES_INPUT_FILE = "gates_input.json"

TAG_MODEL_ID = "raytrade.model_id"
TAG_PREVIOUS = "raytrade.previous_production"
PROMOTION_TAG_PREFIX = "raytrade.promotion."
TAG_FEATURE_SCHEMA_VERSION = "feature_schema_version"
TAG_FEATURE_SCHEMA_HASH = "feature_schema_hash"
TAG_LABEL_SPEC_HASH = "label_spec_hash"
TAG_ALGO = "algo"
TAG_TRAIN_START = "train_start_ms"
TAG_TRAIN_END = "train_end_ms"
TAG_FINGERPRINT = "fingerprint"


log = logging.getLogger(__name__)

# MLflow's fluent API keeps the tracking URI per process: one logger or loader at a time sets it.
_FLUENT_LOCK = threading.RLock()
#: What MLflow prints to stderr when it registers a version (``eprint``, past its logger).
_REGISTRATION_NOTICES = ("Successfully registered model", "Registered model", "Created version")


@contextlib.contextmanager
def _registration_notices_logged() -> Iterator[None]:
    """Route MLflow's registration notices to its logger at INFO, so that its level (MLFLOW_LOGGING_LEVEL)
    decides whether they show like its other chatter; anything else written to stderr passes through."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        notices = logging.getLogger("mlflow.tracking._model_registry.fluent")
        for line in captured.getvalue().splitlines(keepends=True):
            if line.startswith(_REGISTRATION_NOTICES):
                notices.info(line.rstrip("\n"))
            else:
                sys.stderr.write(line)


class RegistryError(RejectedError):
    """The registry refused a request (bad name, version or alias): never retry as is."""


class ModelNotFoundError(RegistryError):
    """No such registered model, version or alias."""


@dataclass(frozen=True, slots=True)
class ModelVersionInfo:
    """One registered version: ``uri`` is ``models:/<name>/<version>``; times are epoch ms."""

    name: str
    version: str
    uri: str
    run_id: str | None
    mlflow_model_id: str | None
    created_at_ms: int
    aliases: tuple[str, ...]
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def model_id(self) -> str | None:
        """Our ``models.model_id`` of this version (the ``raytrade.model_id`` tag)."""
        return self.tags.get(TAG_MODEL_ID)

    @property
    def is_production(self) -> bool:
        return PRODUCTION_ALIAS in self.aliases

    @property
    def feature_schema_version(self) -> int | None:
        value = self.tags.get(TAG_FEATURE_SCHEMA_VERSION)
        return int(value) if value is not None else None

    @property
    def label_spec_hash(self) -> str | None:
        return self.tags.get(TAG_LABEL_SPEC_HASH)

    @property
    def promotion(self) -> dict[str, str]:
        """The last promotion record of this version (tags ``raytrade.promotion.*``, prefix removed)."""
        n = len(PROMOTION_TAG_PREFIX)
        return {k[n:]: v for k, v in self.tags.items() if k.startswith(PROMOTION_TAG_PREFIX)}


def init_store(tracking_uri: str) -> None:
    """Create or migrate the MLflow store at ``tracking_uri`` once, safely across processes.

    MLflow creates an SQLite store's tables (an alembic upgrade) the first time a process opens it;
    two processes doing so at once collide, and one dies. Here the first opener holds an exclusive
    file lock (``<store>.lock`` beside the file) while it opens the tracking and the registry store;
    the others wait, then find the tables made. Other stores (a server, PostgreSQL) are left to MLflow.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    if str(path) in ("", ":memory:"):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)


def _missing(e: MlflowException) -> bool:
    return e.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except MlflowException as e:
        cls = ModelNotFoundError if _missing(e) else RegistryError
        raise cls(f"{what}: {e.message}") from e


class ModelRegistry:
    """MLflow registry access for one tracking store (the registry lives in the same store).

    ``artifact_root`` is where new experiments keep their artifacts (a local directory; required to
    create an experiment, so nothing lands in ``./mlruns`` of the working directory). ``engine``,
    when given, receives the ``models`` mirror of every version that is logged or promoted.
    """

    def __init__(
        self, tracking_uri: str, *, artifact_root: str | Path | None = None, engine: sa.Engine | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = Path(artifact_root).resolve() if artifact_root is not None else None
        self.engine = engine
        init_store(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # --- fluent API plumbing ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _fluent(self) -> Iterator[None]:
        with _FLUENT_LOCK:
            tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
            mlflow.set_tracking_uri(self.tracking_uri)
            pin_registry = mlflow.get_registry_uri() != self.tracking_uri
            if pin_registry:  # a registry URI set elsewhere would send registrations there
                mlflow.set_registry_uri(self.tracking_uri)
            try:
                yield
            finally:
                mlflow.set_tracking_uri(tracking)
                if pin_registry:
                    mlflow.set_registry_uri(registry)

    def experiment_id(self, name: str) -> str:
        """Return the id of experiment ``name``, creating it under ``artifact_root/<name>`` if needed."""
        with _translated(f"experiment {name!r}"):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            if self.artifact_root is None:
                raise ConfigError(
                    f"experiment {name!r} does not exist and no artifact_root was given to create it"
                )
            location = (self.artifact_root / name).as_uri()
            return str(self.client.create_experiment(name, artifact_location=location))

    # --- logging -----------------------------------------------------------------------------------

    def log_model(
        self,
        model: MultiTargetModel,
        *,
        registered_name: str,
        run_id: str | None = None,
        experiment: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        input_example: pd.DataFrame | None = None,
        gates_input: Mapping[str, Any] | None = None,
        algo: str = "lgbm",
        train_start_ms: int | None = None,
        train_end_ms: int | None = None,
    ) -> ModelVersionInfo:
        """Log ``model`` as a pyfunc on a run, register it as a new version of ``registered_name``.

        Give ``run_id`` (an existing run, resumed and ended FINISHED afterwards unless it is this
        thread's active run) or ``experiment`` (a new run is made there). ``metrics`` and ``params``
        go on the run, ``gates_input`` (the promotion gate inputs, ``tune.promote.GatesInput``) to
        the run's ``gates_input.json``. The training window comes from ``train_start_ms`` /
        ``train_end_ms`` or the model's metadata keys of the same names. ``input_example`` (default:
        one row of zeros) is predicted once by MLflow while logging, as a smoke test. The version is
        mirrored into ``models`` when the registry has an engine. Returns the new version.
        """
        if (run_id is None) == (experiment is None):
            raise ValueError("give exactly one of run_id and experiment")
        meta = model.metadata
        start = train_start_ms if train_start_ms is not None else meta.get("train_start_ms")
        end = train_end_ms if train_end_ms is not None else meta.get("train_end_ms")
        if start is None or end is None:
            raise ValueError(
                "the training window is required: pass train_start_ms/train_end_ms (epoch ms) or put "
                "them in the model's metadata"
            )
        if int(end) < int(start):
            raise ValueError(f"train_end_ms {end} is before train_start_ms {start}")
        tags = {
            TAG_FEATURE_SCHEMA_VERSION: str(model.feature_schema_version),
            TAG_FEATURE_SCHEMA_HASH: model.feature_schema_hash,
            TAG_LABEL_SPEC_HASH: model.label_spec_hash,
            TAG_ALGO: algo,
            TAG_TRAIN_START: str(int(start)),
            TAG_TRAIN_END: str(int(end)),
            TAG_FINGERPRINT: model.fingerprint(),
            TAG_MODEL_ID: str(uuid.uuid4()),
        }
        if input_example is None:
            input_example = pd.DataFrame(np.zeros((1, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))

        with _translated(f"logging a version of {registered_name!r}"):
            if run_id is None:
                assert experiment is not None
                run_id = self.client.create_run(
                    self.experiment_id(experiment), run_name=f"{registered_name}-{tags[TAG_FINGERPRINT]}"
                ).info.run_id
            now_ms = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now_ms, 0) for k, v in (metrics or {}).items()],
                params=[Param(k, str(v)) for k, v in (params or {}).items()],
            )
            if gates_input is not None:
                self.client.log_dict(run_id, dict(gates_input), GATES_INPUT_FILE)
            with tempfile.TemporaryDirectory(prefix="raytrade-model-") as tmp:
                blob = Path(tmp) / MODEL_ARTIFACT_FILE
                blob.write_bytes(model.to_bytes())
                entry = Path(tmp) / "raytrade_pyfunc.py"
                entry.write_text(ENTRY_SCRIPT)
                with self._fluent(), self._run(run_id), _registration_notices_logged():
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=str(entry),
                        artifacts={MODEL_ARTIFACT_KEY: str(blob)},
                        signature=model_signature(model),
                        input_example=input_example,
                        registered_model_name=registered_name,
                        pip_requirements=pip_requirements(),
                        tags=tags,
                    )
            version = str(info.registered_model_version)
            for key, value in tags.items():
                self.client.set_model_version_tag(registered_name, version, key, value)
        self.mirror(registered_name, version)
        return self.version(registered_name, version)

    @contextlib.contextmanager
    def _run(self, run_id: str) -> Iterator[None]:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            yield
            return
        with mlflow.start_run(run_id=run_id, nested=active is not None):
            yield

    def log_run_json(self, name: str, version: str, filename: str, data: Mapping[str, Any]) -> str:
        """Write ``data`` as the JSON artifact ``filename`` of the version's run; return its URI."""
        info = self.version(name, version)
        if info.run_id is None:
            raise RegistryError(f"{name} version {version} has no run to attach {filename} to")
        with _translated(f"writing {filename} of {name} version {version}"):
            self.client.log_dict(info.run_id, dict(data), filename)
        return f"runs:/{info.run_id}/{filename}"

    def read_run_json(self, name: str, version: str, filename: str) -> dict[str, Any] | None:
        """Return the JSON artifact ``filename`` of the version's run, or None when it has none."""
        info = self.version(name, version)
        if info.run_id is None:
            return None
        with tempfile.TemporaryDirectory(prefix="raytrade-json-") as tmp:
            try:
                path = self.client.download_artifacts(info.run_id, filename, tmp)
            except (MlflowException, OSError):
                return None
            data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise RegistryError(f"{filename} of {name} version {version} is not a JSON object")
        return data

    # --- reading -----------------------------------------------------------------------------------

    def _info(self, mv: ModelVersion, aliases: Mapping[str, str] | None = None) -> ModelVersionInfo:
        metrics: dict[str, float] = {}
        if mv.run_id:
            with contextlib.suppress(MlflowException):
                metrics = {k: _metric(v) for k, v in self.client.get_run(mv.run_id).data.metrics.items()}
        return ModelVersionInfo(
            name=mv.name,
            version=str(mv.version),
            uri=f"models:/{mv.name}/{mv.version}",
            run_id=mv.run_id or None,
            mlflow_model_id=getattr(mv, "model_id", None) or _logged_model_id(mv.source),
            created_at_ms=int(mv.creation_timestamp or 0),
            aliases=tuple(sorted(mv.aliases or () if aliases is None else _aliases_of(aliases, mv.version))),
            tags=dict(mv.tags or {}),
            metrics=metrics,
        )

    def version(self, name: str, version: str | int) -> ModelVersionInfo:
        """Return one version; ModelNotFoundError when it does not exist."""
        with _translated(f"{name} version {version}"):
            return self._info(self.client.get_model_version(name, str(version)))

    def versions(self, name: str) -> list[ModelVersionInfo]:
        """Return every version of ``name``, oldest first (empty when the name is not registered)."""
        with _translated(f"versions of {name!r}"):
            found = list(self.client.search_model_versions(f"name = '{_quoted(name)}'"))
        # search results carry no aliases: take them from the registered model
        aliases = self._aliases(name) if found else {}
        return sorted((self._info(mv, aliases) for mv in found), key=lambda i: int(i.version))

    def latest_version(self, name: str) -> ModelVersionInfo | None:
        """Return the newest version of ``name``, or None."""
        all_versions = self.versions(name)
        return all_versions[-1] if all_versions else None

    def registered_names(self) -> list[str]:
        """Return the names of every registered model, sorted."""
        with _translated("registered models"):
            return sorted(m.name for m in self.client.search_registered_models())

    def _aliases(self, name: str) -> dict[str, str]:
        with _translated(f"registered model {name!r}"):
            return {k: str(v) for k, v in (self.client.get_registered_model(name).aliases or {}).items()}

    def production_version(self, name: str) -> ModelVersionInfo | None:
        """Return the version the ``production`` alias points to, or None when nothing is promoted."""
        if PRODUCTION_ALIAS not in self._aliases(name):
            return None
        with _translated(f"{name}@{PRODUCTION_ALIAS}"):
            return self._info(self.client.get_model_version_by_alias(name, PRODUCTION_ALIAS))

    def previous_production(self, name: str) -> ModelVersionInfo | None:
        """Return the version production had before the current one was promoted, or None."""
        current = self.production_version(name)
        previous = current.tags.get(TAG_PREVIOUS) if current is not None else None
        return self.version(name, previous) if previous else None

    # --- moving the production alias ---------------------------------------------------------------

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        """Set tags on one version (values as text)."""
        with _translated(f"tagging {name} version {version}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(name, str(version), key, str(value))

    def set_production(
        self, name: str, version: str | int, *, record_previous: bool = True
    ) -> ModelVersionInfo:
        """Point ``production`` at ``version`` and mirror it into ``models``; return the version.

        With ``record_previous`` (a promotion) the version remembers the one it replaces
        (``raytrade.previous_production``); without it (a rollback) the chain stays as it is. The
        ``previous`` alias then follows the chain from the new production version. Policy (gates,
        overrides, audit) is ``tune.promote``'s: this only moves pointers.
        """
        version = str(version)
        target = self.version(name, version)
        current = self.production_version(name)
        with _translated(f"promoting {name} version {version}"):
            if record_previous and (current is None or current.version != version):
                if current is not None:
                    self.client.set_model_version_tag(name, version, TAG_PREVIOUS, current.version)
                elif TAG_PREVIOUS in target.tags:
                    self.client.delete_model_version_tag(name, version, TAG_PREVIOUS)
            self.client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
            previous = self.version(name, version).tags.get(TAG_PREVIOUS)
            if previous:
                self.client.set_registered_model_alias(name, PREVIOUS_ALIAS, previous)
            elif PREVIOUS_ALIAS in self._aliases(name):
                self.client.delete_registered_model_alias(name, PREVIOUS_ALIAS)
        self.sync(name)
        return self.version(name, version)

    # --- loading -----------------------------------------------------------------------------------

    def load_model(self, uri: str) -> MultiTargetModel:
        """Load the ``MultiTargetModel`` behind ``uri`` (``models:/<name>@production``,
        ``models:/<name>/<version>``, ``runs:/…``) from its artifact, without the pyfunc wrapper."""
        with (
            tempfile.TemporaryDirectory(prefix="raytrade-load-") as tmp,
            self._fluent(),
            _translated(f"loading {uri}"),
        ):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            flavor = mlflow.models.Model.load(str(local)).flavors.get("python_function", {})
            artifact = (flavor.get("artifacts") or {}).get(MODEL_ARTIFACT_KEY)
            if not artifact:
                raise RegistryError(
                    f"{uri} is not a raytrade multi-target model (no {MODEL_ARTIFACT_KEY!r} artifact)"
                )
            return MultiTargetModel.from_bytes((local / artifact["path"]).read_bytes())

    def load_pyfunc(self, uri: str) -> PyFuncModel:
        """Load ``uri`` through ``mlflow.pyfunc.load_model`` against this registry."""
        with self._fluent(), _translated(f"loading {uri}"):
            return mlflow.pyfunc.load_model(uri)

    # --- the models table mirror -------------------------------------------------------------------

    def mirror(self, name: str, version: str | int) -> ModelRow | None:
        """Upsert the ``models`` row of one version (None without an engine)."""
        if self.engine is None:
            return None
        info = self.version(name, version)
        row = self._row(info)
        model_catalog.upsert_model_row(self.engine, row)
        return row

    def sync(self, name: str) -> list[ModelRow]:
        """Mirror every version of ``name`` and its production flag into ``models``; return the rows."""
        if self.engine is None:
            return []
        rows: list[ModelRow] = []
        for info in self.versions(name):
            try:
                rows.append(self._row(info))
            except RegistryError as e:  # registered by hand without our tags: not ours to mirror
                log.warning("not mirrored into models: %s", e)
        for row in rows:
            model_catalog.upsert_model_row(self.engine, row)
        production = next((r.model_id for r in rows if r.is_production), None)
        model_catalog.set_production_row(self.engine, name, production)
        return rows

    def _row(self, info: ModelVersionInfo) -> ModelRow:
        assert self.engine is not None
        model_id = info.model_id or model_catalog.model_id_for_version(self.engine, info.name, info.version)
        if model_id is None:  # registered outside log_model: give it an id, and remember it
            model_id = str(uuid.uuid4())
        if info.model_id != model_id:
            self.set_version_tags(info.name, info.version, {TAG_MODEL_ID: model_id})
        tags = info.tags
        missing = [
            t
            for t in (TAG_FEATURE_SCHEMA_VERSION, TAG_LABEL_SPEC_HASH, TAG_TRAIN_START, TAG_TRAIN_END)
            if t not in tags
        ]
        if missing:
            raise RegistryError(f"{info.name} version {info.version} lacks the tags {missing}")
        metrics: dict[str, Any] = dict(info.metrics)
        if info.promotion:
            metrics["promotion"] = info.promotion
        return ModelRow(
            model_id=model_id,
            created_at_ms=info.created_at_ms,
            algo=tags.get(TAG_ALGO, "lgbm"),
            strategy=info.name,
            mlflow_version=info.version,
            mlflow_run_id=info.run_id,
            feature_schema_version=int(tags[TAG_FEATURE_SCHEMA_VERSION]),
            label_spec_hash=tags[TAG_LABEL_SPEC_HASH],
            train_start_ms=int(tags[TAG_TRAIN_START]),
            train_end_ms=int(tags[TAG_TRAIN_END]),
            artifact_uri=info.uri,
            metrics=metrics,
            is_production=info.is_production,
        )


def _aliases_of(aliases: Mapping[str, str], version: str | int) -> list[str]:
    return [alias for alias, v in aliases.items() if str(v) == str(version)]


def _metric(value: float) -> float:
    # MLflow stores ±inf as ±float max (a profit factor without losing trades): give back inf
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else float(value)


def _logged_model_id(source: str | None) -> str | None:
    prefix = "models:/m-"
    return source.removeprefix("models:/") if source and source.startswith(prefix) else None


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def load_model(uri: str, tracking_uri: str) -> MultiTargetModel:
    """Load the ``MultiTargetModel`` behind an MLflow model URI of the store at ``tracking_uri``."""
    return ModelRegistry(tracking_uri).load_model(uri)
