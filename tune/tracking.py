"""MLflow logging of sweeps: one parent run per sweep, one nested run per trial (plain MlflowClient calls).

The parent's id travels to the trials (Ray workers) inside ``SweepTracking``; each trial opens its own
client, creates a run tagged ``mlflow.parentRunId`` and logs its hyperparameters, per-fold metrics as
steps, the aggregated metrics and the feature importance as ``feature_importance.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True, slots=True)
class SweepTracking:
    """Where a trial logs: tracking URI, experiment and the sweep's parent run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def start_sweep_run(
    tracking_uri: str,
    experiment: str,
    artifact_location: Path,
    run_name: str,
    params: Mapping[str, Any],
) -> SweepTracking:
    """Create (or reuse) ``experiment`` and start the sweep's parent run with ``params``."""
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(
            experiment, artifact_location=artifact_location.resolve().as_uri()
        )
    else:
        experiment_id = found.experiment_id
    run = client.create_run(experiment_id, run_name=run_name, tags={"raytrade.kind": "sweep"})
    _log_params(client, run.info.run_id, params)
    return SweepTracking(tracking_uri, experiment_id, run.info.run_id)


def finish_sweep_run(tracking: SweepTracking, metrics: Mapping[str, float], status: str = "FINISHED") -> None:
    """Log the sweep's summary metrics and close the parent run."""
    client = _client(tracking.tracking_uri)
    _log_metrics(client, tracking.parent_run_id, metrics, step=0)
    client.set_terminated(tracking.parent_run_id, status=status)


class TrialRun:
    """The nested MLflow run of one trial."""

    def __init__(self, tracking: SweepTracking, run_name: str, params: Mapping[str, Any]) -> None:
        self._client = _client(tracking.tracking_uri)
        run = self._client.create_run(
            tracking.experiment_id,
            run_name=run_name,
            tags={PARENT_TAG: tracking.parent_run_id, "raytrade.kind": "trial"},
        )
        self.run_id: str = run.info.run_id
        _log_params(self._client, self.run_id, params)

    def log_fold(self, step: int, metrics: Mapping[str, float]) -> None:
        _log_metrics(self._client, self.run_id, metrics, step=step)

    def finish(self, result: Mapping[str, Any]) -> None:
        _log_metrics(
            self._client, self.run_id, {"score": result["score"], **result["mean"]}, step=0, prefix="mean_"
        )
        self._client.log_text(
            self.run_id,
            json.dumps(result["feature_importance"], indent=1, sort_keys=True),
            "feature_importance.json",
        )
        self._client.set_terminated(self.run_id, status="FINISHED")

    def fail(self, status: str = "FAILED") -> None:
        self._client.set_terminated(self.run_id, status=status)


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(str(k), str(v)[:6000]) for k, v in sorted(params.items())])


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int, prefix: str = "") -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = []
    for key, value in sorted(metrics.items()):
        value = float(value)
        if math.isnan(value):
            continue  # MLflow stores NaN, but it breaks charts and comparisons; absence says the same
        name = key if key == "score" else f"{prefix}{key}"
        rows.append(Metric(name, value if math.isfinite(value) else math.copysign(1e308, value), now, step))
    if rows:
        client.log_batch(run_id, metrics=rows)
