"""Benchmark of the triple-barrier labeler (spec 001 §8.2): numba kernel vs a naive per-event pandas loop.

Synthetic market (core.synthetic), 50 symbols × 525,600 1m bars (one year, ≈ 26M bars) by default,
generated one symbol at a time so memory stays small. Long and short labels for every bar with the
preset LabelSpec (§21.1) and with wide barriers (mean time to exit above 100 bars, where a bar-by-bar
scan would degrade to O(n·H)). The naive loop, in the style of mlfinlab's ``apply_pt_sl_on_t1``
(pandas slicing and boolean masks per event), labels a random subsample of one symbol's bars with
the same rules and is cross-checked against the kernel. The Ray Data pipeline (``raytrade label``)
runs over a parquet lake of the same market several times in one Ray session: the first run meets
cold workers, the median of the later (warm) ones is ``pipeline_bars_per_s``, and the cold figure is
reported beside it. Last line: JSON with the figures.

    python bench/labels.py [--symbols 50] [--bars 525600] [--naive-events 400] [--repeat 3]
                           [--pipeline-runs 4] [--no-pipeline]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TypeVar

import numba
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import LabelSpec
from core.labels import (
    ExitReason,
    LabelStatus,
    TripleBarrierLabels,
    label_atr,
    prepare_label_inputs,
    run_label_kernel,
)
from core.synthetic import _REFERENCE, generate_market
from core.time import parse_utc
from storage.lake import Lake

T = TypeVar("T")
START = parse_utc("2024-01-01")
PRESET = LabelSpec()
WIDE = LabelSpec(k_tp=3.0, k_sl=3.0, risk_mae_atr=4.5, h_bars=1440)


def universe(count: int) -> list[str]:
    """The generator's reference symbols, then made-up ones (profiles derived from the name)."""
    names = list(_REFERENCE)
    names += [f"SYN{k:03d}USDT" for k in range(max(0, count - len(names)))]
    return names[:count]


def timed(fn: Callable[[], T], repeat: int) -> tuple[float, list[float], T]:
    """Run ``fn`` ``repeat`` (≥ 1) times; return the best time, all times and the last result."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), times, result


# --- naive per-event loop (mlfinlab style) ----------------------------------------------------------


def naive_labels(candles, funding, atr: np.ndarray, spec: LabelSpec, events: np.ndarray) -> pd.DataFrame:
    """Label ``events`` (bar positions) one at a time with pandas, same rules as core.labels."""
    minute = pd.Timedelta(minutes=1)
    index = pd.to_datetime(candles["ts"], unit="ms", utc=True)
    bars = pd.DataFrame({k: candles[k] for k in ("open", "high", "low", "close")}, index=index)
    atr_s = pd.Series(atr, index=index)
    rates = pd.Series(funding["funding_rate"], index=pd.to_datetime(funding["ts"], unit="ms", utc=True))
    cols = [
        f"{side}_{k}" for side in ("long", "short") for k in ("y", "ret_net", "mae", "mfe", "tte", "reason")
    ]
    out = pd.DataFrame(np.nan, index=index[events], columns=cols)
    for t0 in out.index:
        path = bars.loc[t0 + minute : t0 + spec.h_bars * minute]
        a = atr_s.loc[t0]
        if len(path) < spec.h_bars or not a > 0:
            continue
        s = spec.slippage_k * a / bars.at[t0, "close"]
        for side, d in (("long", 1), ("short", -1)):
            entry = path["open"].iloc[0] * (1 + d * s)
            tp, sl = entry + d * spec.k_tp * a, entry - d * spec.k_sl * a
            risk = entry - d * spec.risk_mae_atr * a
            adverse = path["low"] <= sl if d > 0 else path["high"] >= sl
            favourable = path["high"] >= tp if d > 0 else path["low"] <= tp
            t_sl, t_tp = path.index[adverse].min(), path.index[favourable].min()
            if pd.notna(t_sl) and (pd.isna(t_tp) or t_sl <= t_tp):
                t1, bar = t_sl, path.loc[t_sl]
                price = min(sl, bar["open"]) if d > 0 else max(sl, bar["open"])
                y, reason = (
                    -1,
                    ExitReason.RISK
                    if (bar["low"] <= risk if d > 0 else bar["high"] >= risk)
                    else ExitReason.SL,
                )
            elif pd.notna(t_tp):
                t1, bar, price, y, reason = t_tp, path.loc[t_tp], tp, 1, ExitReason.TP
            else:
                t1, bar, price, y, reason = (
                    path.index[-1],
                    path.iloc[-1],
                    path["close"].iloc[-1],
                    0,
                    ExitReason.TIME,
                )
            before = path.loc[: t1 - minute]
            best, worst = before["high"].max(), before["low"].min()
            best, worst = (-np.inf if pd.isna(best) else best), (np.inf if pd.isna(worst) else worst)
            if reason == ExitReason.TIME:
                best, worst = max(best, bar["high"]), min(worst, bar["low"])
            elif reason == ExitReason.TP:
                best, worst = (
                    (max(best, tp), min(worst, bar["low"]))
                    if d > 0
                    else (max(best, bar["high"]), min(worst, tp))
                )
            elif d > 0:
                worst = min(worst, bar["low"])
            else:
                best = max(best, bar["high"])
            exit_price = price * (1 - d * s)
            paid = rates[(rates.index > t0 + minute) & (rates.index <= t1 + minute)].sum()
            ret = d * (exit_price - entry) / entry - spec.fee_rate * (entry + exit_price) / entry - d * paid
            up, down = max(0.0, (best - entry) / entry), max(0.0, (entry - worst) / entry)
            out.loc[t0, [f"{side}_{k}" for k in ("y", "ret_net", "mae", "mfe", "tte", "reason")]] = [
                y, ret, down if d > 0 else up, up if d > 0 else down, (t1 - t0) // minute, int(reason),
            ]  # fmt: skip
    return out


def agreement(naive: pd.DataFrame, labels, positions: np.ndarray) -> int:
    """Number of events on which the naive loop and the kernel agree (every field of both sides)."""
    ok = np.ones(len(positions), bool)
    for side_name, side in (("long", labels.long), ("short", labels.short)):
        ok &= naive[f"{side_name}_y"].to_numpy() == side.y[positions]
        ok &= naive[f"{side_name}_reason"].to_numpy() == side.exit_reason[positions]
        ok &= naive[f"{side_name}_tte"].to_numpy() == side.time_to_event_min[positions]
        for k in ("ret_net", "mae", "mfe"):
            ok &= np.abs(naive[f"{side_name}_{k}"].to_numpy() - getattr(side, k)[positions]) <= 1e-12
    return int(ok.sum())


# --- main -------------------------------------------------------------------------------------------


def pipeline_rates(
    lake: Lake, symbols: list[str], total: int, ray_cpus: int, runs: int
) -> tuple[float, list[float]]:
    """Run ``pipelines.labels.label_universe`` (Ray Data, one task per symbol) end to end over the lake
    ``runs`` times in one Ray session: read candles and funding, label long and short, write the label
    dataset (removed before each run, so every run writes it afresh). The first run meets cold Ray
    workers (imports, numba cache load, heap growth); the later ones reuse them, as every run after
    the first does in a long-lived session (research, a cluster job). Ray's own start-up is timed and
    reported apart. Returns the cold rate and the warm rates (bars/s)."""
    import ray

    from pipelines.labels import label_universe
    from pipelines.raydata import configure_data_context

    t = time.perf_counter()
    ray.init(num_cpus=ray_cpus, object_store_memory=512 * 1024**2, include_dashboard=False,
             log_to_driver=False, logging_level="ERROR")  # fmt: skip
    configure_data_context(progress=False)
    startup_s = time.perf_counter() - t
    rates = []
    for run in range(runs):
        shutil.rmtree(lake.root / "labels", ignore_errors=True)
        t = time.perf_counter()
        report = label_universe(lake.root, symbols, PRESET)
        wall_s = time.perf_counter() - t
        assert report.total_bars == total, (report.total_bars, total)
        rates.append(total / wall_s)
        print(
            f"pipeline run {run + 1} ({'cold workers' if run == 0 else 'warm workers'}; Ray Data, "
            f"{ray_cpus} CPUs, one task per symbol; lake → labels → lake): {wall_s:.2f} s → {rates[-1]:,.0f} bars/s"
        )
    ray.shutdown()
    print(f"Ray start-up {startup_s:.1f} s, not included")
    return rates[0], rates[1:]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--bars", type=int, default=525_600, help="1m bars per symbol")
    parser.add_argument("--naive-events", type=int, default=400, help="events of the naive loop")
    parser.add_argument("--repeat", type=int, default=3, help="kernel runs per symbol; the best counts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-pipeline", action="store_true", help="skip the Ray Data pipeline run")
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of local Ray")
    parser.add_argument(
        "--pipeline-runs",
        type=int,
        default=4,
        help="pipeline runs in one Ray session (≥ 2): one cold, the rest warm",
    )
    args = parser.parse_args(argv)

    symbols = universe(args.symbols)
    total = args.symbols * args.bars
    print(
        f"labels bench: {args.symbols} symbols × {args.bars:,} 1m bars = {total:,} bars; "
        f"numba threads {numba.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"preset {PRESET.model_dump()} hash {PRESET.spec_hash()}")
    print(f"wide   {WIDE.model_dump()} hash {WIDE.spec_hash()}")

    # Compile outside the timings.
    warm = generate_market([symbols[0]], START, 3000, args.seed)
    for spec in (PRESET, WIDE):
        run_label_kernel(
            prepare_label_inputs(warm.candles_1m[symbols[0]], warm.funding[symbols[0]], spec), spec
        )

    lake = None if args.no_pipeline else Lake(Path(tempfile.mkdtemp(prefix="raytrade-bench-labels-")))
    kernel_s = {"preset": 0.0, "wide": 0.0}
    kernel_median_s = {"preset": 0.0, "wide": 0.0}
    labeler_s = generate_s = 0.0
    exit_bars = {"preset": [0.0, 0], "wide": [0.0, 0]}
    sample: (
        tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray], np.ndarray, TripleBarrierLabels] | None
    ) = None
    for k, symbol in enumerate(symbols):
        t = time.perf_counter()
        market = generate_market([symbol], START, args.bars, args.seed)
        candles, funding = market.candles_1m[symbol], market.funding[symbol]
        generate_s += time.perf_counter() - t
        if lake is not None:  # the pipeline's input, written untimed
            lake.write("candles_1m", symbol, pd.DataFrame(dict(candles)), source="synthetic")
            lake.write("funding", symbol, pd.DataFrame(dict(funding)), source="synthetic")

        t = time.perf_counter()
        atr = label_atr(
            candles["ts"], candles["high"], candles["low"], candles["close"], "15m", PRESET.atr_period
        )
        inputs = prepare_label_inputs(candles, funding, PRESET, atr=atr)
        prep_s = time.perf_counter() - t
        for name, spec in (("preset", PRESET), ("wide", WIDE)):
            best, times, labels = timed(partial(run_label_kernel, inputs, spec), args.repeat)
            kernel_s[name] += best
            kernel_median_s[name] += float(np.median(times))
            ok = labels.valid
            exit_bars[name][0] += (
                labels.long.time_to_event_min[ok].sum() + labels.short.time_to_event_min[ok].sum()
            )
            exit_bars[name][1] += 2 * ok.sum()
            if name == "preset":
                labeler_s += prep_s + best
                if sample is None:
                    sample = (candles, funding, atr, labels)
        print(
            f"  {k + 1:2d}/{len(symbols)} {symbol:<13}",
            end="\r" if k + 1 < len(symbols) else "\n",
            flush=True,
        )
        del market, candles, funding, atr, inputs, labels

    kernel_rate = total / kernel_s["preset"]
    wide_rate = total / kernel_s["wide"]
    mean_exit = exit_bars["preset"][0] / exit_bars["preset"][1]
    wide_mean_exit = exit_bars["wide"][0] / exit_bars["wide"][1]
    print(f"data generated in {generate_s:.1f} s (not timed)")
    print(
        f"kernel (numba, {numba.get_num_threads()} threads), preset: {kernel_s['preset']:.2f} s → "
        f"{kernel_rate:,.0f} bars/s (best of {args.repeat}; median runs {total / kernel_median_s['preset']:,.0f}); "
        f"mean time to exit {mean_exit:.1f} bars"
    )
    print(
        f"labeler in-process (15m ATR + checks + kernel), preset: {labeler_s:.2f} s → {total / labeler_s:,.0f} bars/s"
    )
    print(
        f"kernel, wide barriers: {kernel_s['wide']:.2f} s → {wide_rate:,.0f} bars/s "
        f"(median runs {total / kernel_median_s['wide']:,.0f}); mean time to exit {wide_mean_exit:.1f} bars"
    )

    assert sample is not None
    candles, funding, atr, labels = sample
    rng = np.random.default_rng(args.seed)
    events = np.sort(
        rng.choice(np.flatnonzero(labels.status == LabelStatus.OK), args.naive_events, replace=False)
    )
    t = time.perf_counter()
    naive = naive_labels(candles, funding, atr, PRESET, events)
    naive_s = time.perf_counter() - t
    naive_rate = len(events) / naive_s
    same = agreement(naive, labels, events)
    print(
        f"naive per-event pandas loop (mlfinlab style), {len(events)} events: {naive_s:.2f} s → "
        f"{naive_rate:,.1f} bars/s; agrees with the kernel on {same}/{len(events)} events"
    )
    cold_rate = pipeline_rate = None
    if lake is not None:
        cold_rate, warm_rates = pipeline_rates(
            lake, symbols, total, args.ray_cpus, max(2, args.pipeline_runs)
        )
        pipeline_rate = float(np.median(warm_rates))
        print(
            f"pipeline, warm workers: median {pipeline_rate:,.0f} bars/s over {len(warm_rates)} runs "
            f"(best {max(warm_rates):,.0f}); cold workers (first run of the session) {cold_rate:,.0f} bars/s"
        )
        shutil.rmtree(lake.root, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:,.0f} MB, load average {os.getloadavg()[0]:.2f}")
    result = {
        "kernel_bars_per_s": round(kernel_rate),
        "pipeline_bars_per_s": None if pipeline_rate is None else round(pipeline_rate),
        "pipeline_cold_bars_per_s": None if cold_rate is None else round(cold_rate),
        "naive_bars_per_s": round(naive_rate, 1),
        "speedup_vs_naive": round(kernel_rate / naive_rate),
        "wide_kernel_bars_per_s": round(wide_rate),
        "labeler_bars_per_s": round(total / labeler_s),
        "bars": total,
        "mean_time_to_exit_bars": round(mean_exit, 1),
        "wide_mean_time_to_exit_bars": round(wide_mean_exit, 1),
        "naive_agrees": f"{same}/{len(events)}",
        "threads": numba.get_num_threads(),
        "peak_rss_mb": round(peak_mb),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
