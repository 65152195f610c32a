"""Triple-barrier labels across the universe on Ray Data (``raytrade label``).

One Ray task per symbol reads the lake (1m candles, funding and — for the default
``barrier_price="mark"`` — 1m mark candles, whose high/low the barriers watch as the simulator's SL/TP
triggers do; bars without a mark candle use the last-price bar), runs the numba kernel
(``core.labels``) and writes ``labels_1m`` (both directions: ``long_*`` and ``short_*`` columns) into the
label spec's own sub-lake, ``<lake>/labels/<spec_hash>/`` (beside a ``spec.json`` of the spec), so
labels of different specs never mix. Every decision bar gets a row; ``status`` ≠ 0 marks bars without a
label (the last ``h_bars`` bars, ATR warm-up, gaps, bad prices) — nothing is silently labelled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.config import LabelSpec
from core.labels import prepare_label_inputs, run_label_kernel
from pipelines.raydata import prepare_symbol_worker
from storage.lake import Lake

SOURCE = "labels"
_OHLC = ("open", "high", "low", "close")
DIRECTIONS = ("long", "short")


@dataclass(frozen=True, slots=True)
class LabelReport:
    """Bars, labelled bars and bars whose barriers watched a mark candle per symbol, and the wall time
    of the Ray stage."""

    spec_hash: str
    bars: dict[str, int]
    labelled: dict[str, int]
    seconds: float
    mark_bars: dict[str, int] = field(default_factory=dict)

    @property
    def total_bars(self) -> int:
        return sum(self.bars.values())


def labels_lake(lake_root: Path, spec: LabelSpec) -> Lake:
    """The sub-lake holding the labels of ``spec``; writes ``spec.json`` beside them."""
    root = Path(lake_root) / "labels" / spec.spec_hash()
    root.mkdir(parents=True, exist_ok=True)
    spec_file = root / "spec.json"
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True, indent=1)
    if not spec_file.exists() or spec_file.read_text() != text:
        tmp = spec_file.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(spec_file)
    return Lake(root)


def label_symbol(lake_root: str, symbol: str, spec_json: str) -> dict[str, int]:
    """Label one symbol from the lake and store both directions (a Ray task's body; testable without Ray).

    Returns the counts of bars, labelled bars and bars whose barriers watched a mark candle.
    """
    spec = LabelSpec.model_validate_json(spec_json)
    lake = Lake(Path(lake_root))
    candles = lake.read_arrays("candles_1m", symbol, _OHLC)
    if len(candles["ts"]) == 0:
        raise FileNotFoundError(f"no candles_1m for {symbol} in the lake at {lake.root}")
    funding = lake.read_arrays("funding", symbol, ("funding_rate",))
    mark = lake.read_arrays("mark_1m", symbol, _OHLC) if spec.barrier_price == "mark" else None
    inputs = prepare_label_inputs(candles, funding, spec, mark=mark)
    labels = run_label_kernel(inputs, spec)
    labels_lake(Path(lake_root), spec).write("labels_1m", symbol, labels.columns(), source=SOURCE)
    return {"bars": len(labels.ts), "labelled": int(labels.valid.sum()), "mark_bars": inputs.mark_bars}


def label_universe(lake_root: Path, symbols: Sequence[str], spec: LabelSpec) -> LabelReport:
    """Label every symbol as one Ray Data task each (Ray must be initialised)."""
    import ray

    spec_json = spec.model_dump_json()
    labels_lake(lake_root, spec)  # spec.json once, before the tasks
    started = time.perf_counter()
    ds = ray.data.from_items([{"symbol": s} for s in symbols], override_num_blocks=max(1, len(symbols)))

    def task(row: dict) -> dict:
        prepare_symbol_worker()
        counts = label_symbol(str(lake_root), row["symbol"], spec_json)
        return {"symbol": row["symbol"], **counts}

    results = ds.map(task, num_cpus=1).take_all()
    return LabelReport(
        spec.spec_hash(),
        {r["symbol"]: int(r["bars"]) for r in results},
        {r["symbol"]: int(r["labelled"]) for r in results},
        time.perf_counter() - started,
        {r["symbol"]: int(r["mark_bars"]) for r in results},
    )


def label_db_rows(symbol: str, frame: pd.DataFrame, spec_hash: str, side: str) -> pd.DataFrame:
    """Rows of ``labels_<side>_1m`` from a ``labels_1m`` frame: labelled bars only (status 0), keyed by
    the spec hash."""
    ok = frame[frame["status"] == 0]
    out = {"symbol": symbol, "ts": ok["ts"].to_numpy(), "spec_hash": spec_hash}
    for name in ("y", "ret_net", "mae", "mfe", "time_to_event_min"):
        out[name] = ok[f"{side}_{name}"].to_numpy()
    return pd.DataFrame(out)
