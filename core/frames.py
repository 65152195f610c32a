"""Column layouts of the datasets that travel between lake, database and kernels.

Every dataset is keyed by ``ts``: epoch milliseconds (int64, UTC). For candles ``ts`` is the bar's
open time; a bar [ts, ts + interval) is *closed* at ``ts + interval``. For funding it is the
funding time. Prices are float64 in quote currency (USDT), volumes in base-asset units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from core.errors import DataQualityError


@dataclass(frozen=True, slots=True)
class DatasetLayout:
    """Required and optional columns of one dataset, with their numpy dtypes."""

    name: str
    required: Mapping[str, str]
    optional: Mapping[str, str]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


_OHLC = {"ts": "int64", "open": "float64", "high": "float64", "low": "float64", "close": "float64"}
_CANDLE = DatasetLayout(
    name="candles",
    required={**_OHLC, "volume": "float64"},
    optional={"quote_volume": "float64", "trade_count": "int64", "taker_buy_volume": "float64"},
)

#: Datasets of the lake, by name. ``candles_<interval>`` share one layout.
LAYOUTS: dict[str, DatasetLayout] = {
    "candles_1m": DatasetLayout("candles_1m", _CANDLE.required, _CANDLE.optional),
    "candles_15m": DatasetLayout("candles_15m", _CANDLE.required, _CANDLE.optional),
    "candles_1h": DatasetLayout("candles_1h", _CANDLE.required, _CANDLE.optional),
    "mark_1m": DatasetLayout("mark_1m", _OHLC, {}),
    "mark_1h": DatasetLayout("mark_1h", _OHLC, {}),
    "mark_8h": DatasetLayout("mark_8h", _OHLC, {}),
    "premium_1m": DatasetLayout("premium_1m", _OHLC, {}),
    "funding": DatasetLayout(
        "funding", {"ts": "int64", "funding_rate": "float64"}, {"mark_price": "float64"}
    ),
}


_LABEL_VALUES = {
    "y": "int8",
    "ret_net": "float64",
    "mae": "float64",
    "mfe": "float64",
    "time_to_event_min": "int32",
    "exit_reason": "int8",
}
#: Both directions' labels of every decision bar in one dataset (core.labels.TripleBarrierLabels.columns()).
#: status: core.labels.LabelStatus (0 = labelled); values are NaN / 0 / -1 where status != 0.
LAYOUTS["labels_1m"] = DatasetLayout(
    "labels_1m",
    {"ts": "int64", "status": "int8"},
    {f"{side}_{name}": dtype for side in ("long", "short") for name, dtype in _LABEL_VALUES.items()},
)


def _features_layout() -> DatasetLayout:
    # Built on first use: the feature names live with the kernels, which need not load for candles.
    from core.features_schema import FEATURE_NAMES

    return DatasetLayout(
        "features_1m",
        {"ts": "int64", "schema_version": "int64"},
        {name: "float64" for name in FEATURE_NAMES},  # NaN during warm-up
    )


def layout(dataset: str) -> DatasetLayout:
    """Return the layout of a dataset, or raise naming the known ones."""
    if dataset == "features_1m" and dataset not in LAYOUTS:
        LAYOUTS[dataset] = _features_layout()
    try:
        return LAYOUTS[dataset]
    except KeyError:
        known = sorted({*LAYOUTS, "features_1m"})
        raise DataQualityError(f"unknown dataset {dataset!r}; known: {', '.join(known)}") from None


def check_columns(dataset: str, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the dataset's columns cast to their dtypes; raise naming missing or uncastable columns.

    Extra columns are dropped; optional columns are kept when present. A column already of its dtype
    is returned as is, not copied.
    """
    lay = layout(dataset)
    missing = [c for c in lay.required if c not in columns]
    if missing:
        raise DataQualityError(
            f"{dataset}: missing column(s) {', '.join(missing)}; have {', '.join(columns)}"
        )
    out: dict[str, np.ndarray] = {}
    n: int | None = None
    for name, dtype in {**lay.required, **lay.optional}.items():
        if name not in columns:
            continue
        arr = np.asarray(columns[name])
        try:
            cast = arr.astype(dtype, casting="unsafe" if arr.dtype.kind in "iuf" else "same_kind", copy=False)
        except (TypeError, ValueError) as e:
            raise DataQualityError(f"{dataset}: column {name} is not {dtype}: {e}") from None
        if arr.dtype.kind == "f" and dtype == "int64" and not np.array_equal(cast, arr):
            raise DataQualityError(f"{dataset}: column {name} has non-integer values")
        if n is not None and len(cast) != n:
            raise DataQualityError(f"{dataset}: column {name} has {len(cast)} rows, others {n}")
        n = len(cast)
        out[name] = cast
    return out
