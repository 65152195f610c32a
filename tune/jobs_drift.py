"""The batch worker's ``drift`` job (spec 001 §17, §18): one drift pass over the job's symbols.

The handler checks the config (``tune.job_configs.DriftJobConfig``), runs ``pipelines.drift.drift_pass``
symbol by symbol (progress per symbol), which upserts each symbol's ``drift_metrics`` row and records
a ``drift.alarm`` event when a feature crosses alarm, and writes the per-feature detail to
``<reports>/<job_id>/drift.json``. Report URI: that file.
"""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from storage.lake import Lake
from tune.job_configs import DriftJobConfig
from tune.jobs_types import JobContext, JobHandler

__all__ = ["drift_handler"]


def drift_handler(engine: sa.Engine, lake_root: Path, reports_dir: Path) -> JobHandler:
    """Return the ``drift`` handler over one database and lake; reports go to ``reports_dir/<job_id>/``."""

    def handle(ctx: JobContext) -> str | None:
        from pipelines.drift import drift_pass

        cfg = DriftJobConfig.model_validate(dict(ctx.config))
        lake = Lake(lake_root)
        missing = [s for s in cfg.symbols if lake.coverage("features_1m", s) is None]
        if missing:
            raise FileNotFoundError(
                f"no features_1m in the lake at {lake.root} for {', '.join(missing)}: compute features first"
            )
        results = []
        for k, symbol in enumerate(cfg.symbols):
            (result,) = drift_pass(
                engine, lake, [symbol], reference_ms=cfg.reference_ms, current_ms=cfg.current_ms,
                end_ms=cfg.end_ms, features=cfg.features,
            )  # fmt: skip
            results.append(result)
            ctx.progress(
                (k + 1) / len(cfg.symbols), f"{symbol}: PSI {result.psi:.3f}, {len(result.alarms)} alarm(s)"
            )
        out_dir = (reports_dir / ctx.job.job_id).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "drift.json"
        body = {
            "job_id": ctx.job.job_id,
            "config": cfg.model_dump(mode="json"),
            "symbols": [r.as_json() for r in results],
        }
        path.write_text(json.dumps(body, indent=1, allow_nan=False))
        return path.as_uri()

    return handle
