"""The batch worker's ``bootstrap_history`` job (spec 001 §18.1): ``raytrade history`` as a job.

The same path as the command (``raytrade.cmd_history``): the symbols checked against Binance's
instrument list, ``pipelines.history.download_history`` from the dumps (``settings.history_base_url``)
and REST (``settings.fapi_url``) into the lake, refused rows recorded as data-quality events
(``RejectionRecorder``). It lives in the composition root because it opens venue clients, which
``tune`` may not import. A report that is not ok fails the job with its failure message; the report
URI is the lake's folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from core.time import DAY_MS
from raytrade.settings import Settings
from tune.job_configs import BootstrapHistoryJobConfig
from tune.jobs_types import JobContext, JobHandler

__all__ = ["bootstrap_history_handler"]


def bootstrap_history_handler(settings: Settings, *, clock_ms: Callable[[], int] | None = None) -> JobHandler:
    """Return the ``bootstrap_history`` handler; ``clock_ms`` is "now" (default: the wall clock)."""

    def handle(ctx: JobContext) -> str | None:
        from exchange.binance.rest import FAPI_MAINNET, BinanceRest
        from exchange.dump_client import DumpClient
        from pipelines.history import download_history, parse_datasets
        from raytrade.cmd_history import RejectionRecorder, _check_listed
        from storage.lake import Lake

        cfg = BootstrapHistoryJobConfig.model_validate(dict(ctx.config))
        specs = parse_datasets(cfg.datasets)
        now = int(time.time() * 1000) if clock_ms is None else clock_ms()
        end_ms = cfg.end_ms or now
        start_ms = cfg.start_ms or end_ms - 30 * DAY_MS
        if start_ms >= end_ms:
            raise ValueError(f"start {cfg.start} is not before the end ({cfg.end or 'now'})")
        lake = Lake(settings.lake_root)
        ctx.progress(0.02, f"{len(cfg.symbols)} symbol(s) × {', '.join(cfg.datasets)}")
        rest = BinanceRest(settings.fapi_url or FAPI_MAINNET, max_attempts=3)
        dumps = DumpClient(settings.history_base_url)
        recorder = RejectionRecorder(settings)
        stored: set[tuple[str, str]] = set()
        total = len(cfg.symbols) * len(specs)

        def on_frame(dataset: str, symbol: str, _frame: object) -> None:
            stored.add((dataset, symbol))
            ctx.progress(min(0.95, 0.05 + 0.9 * len(stored) / total), f"{symbol} {dataset} stored")

        try:
            _check_listed(rest, cfg.symbols)
            report = download_history(
                lake, cfg.symbols, specs, start_ms, end_ms, now, dumps=dumps, rest=rest, on_frame=on_frame,
                progress=False, replace=cfg.replace, on_rejected=recorder,
            )  # fmt: skip
        finally:
            rest.close()
            dumps.close()
            recorder.close()
        if not report.ok:
            raise RuntimeError(report.failure_message())
        ctx.progress(1.0, report.summary())
        return lake.root.resolve().as_uri()

    return handle
