"""Features of schema v1 (spec 001 §7): batch over histories and incremental per closed 1m bar.

Both entry points run the same numba step (``core.features_kernel.symbol_bar``) bar by bar, so
they agree bit for bit: ``compute_features`` loops it over whole arrays, ``FeatureEngine.update``
calls it once per 1m close for every symbol of a group in one compiled call. The schema (names,
formulas, windows, warm-up, units) is ``core.features_schema``.

Inputs per 1m bar (``INPUT_COLUMNS``): OHLCV of the last price; taker buy volume (NaN when the
source has none: the taker features are then NaN); mark high/low/close (NaN without 1m mark data:
ATR then uses the last price); premium index close (NaN when absent: basis falls back to
(last - mark) / mark, else NaN); the funding rate in force at the bar's close and its funding
time (NaN before the first known settlement). BTCUSDT's features feed the ``btc_*`` features of
every symbol, so a group always holds BTCUSDT, stepped first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import DataQualityError, SchemaMismatchError
from core.features_kernel import (
    CROSS_LEN,
    INPUT_COLUMNS,
    N_INPUTS,
    N_MERGED,
    OK,
    STATUS_TEXT,
    SYMBOL_STATE_LEN,
    group_update,
    new_symbol_state,
    run_group,
    run_group_parallel,
)
from core.features_schema import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    FEATURE_TABLE,
    KEY_COLUMNS,
    SCHEMA_HASH,
    FeatureRow,
    require_schema,
    schema_hash,
)
from core.frames import check_columns
from core.time import MINUTE_MS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BTC_SYMBOL", "FEATURE_NAMES", "FEATURE_SCHEMA_VERSION", "FEATURE_TABLE", "INPUT_COLUMNS", "KEY_COLUMNS",
    "SCHEMA_HASH", "STATUS_TEXT", "FeatureEngine", "FeatureFrame", "FeatureRow", "SymbolInputs", "build_inputs",
    "compute_features", "compute_features_for_symbol", "funding_in_force", "require_schema", "schema_hash",
]  # fmt: skip

BTC_SYMBOL = "BTCUSDT"


@dataclass(frozen=True, slots=True)
class SymbolInputs:
    """Kernel inputs of one symbol: ``ts_ms`` (1m bar open times, strictly increasing, int64) and
    ``values`` (float64, one row per bar, columns ``INPUT_COLUMNS``)."""

    ts_ms: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        ts, x = self.ts_ms, self.values
        if ts.dtype != np.int64 or ts.ndim != 1:
            raise DataQualityError(f"inputs: ts_ms must be a 1-d int64 array, got {ts.dtype} {ts.shape}")
        if x.dtype != np.float64 or x.shape != (len(ts), N_INPUTS) or not x.flags.c_contiguous:
            raise DataQualityError(
                f"inputs: values must be C-contiguous float64 of shape ({len(ts)}, {N_INPUTS}), got {x.dtype} {x.shape}"
            )
        if len(ts) > 1 and np.any(np.diff(ts) <= 0):
            i = int(np.flatnonzero(np.diff(ts) <= 0)[0])
            raise DataQualityError(
                f"inputs: ts not strictly increasing at row {i + 1} ({ts[i]} then {ts[i + 1]})"
            )
        off = np.flatnonzero(ts % MINUTE_MS)
        if len(off):
            raise DataQualityError(f"inputs: ts {ts[off[0]]} (row {off[0]}) is off the 1m grid")

    def __len__(self) -> int:
        return len(self.ts_ms)

    def until(self, ts_ms: int) -> SymbolInputs:
        """Return the bars with open time ≤ ``ts_ms`` (a history truncated at that bar)."""
        n = int(np.searchsorted(self.ts_ms, ts_ms, side="right"))
        return SymbolInputs(self.ts_ms[:n], self.values[:n])


def funding_in_force(
    bar_ts_ms: np.ndarray,
    funding_ts_ms: np.ndarray,
    funding_rate: np.ndarray,
    bar_interval_ms: int = MINUTE_MS,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (rate, funding time) of the last settlement with funding time ≤ each bar's close
    (``ts + bar_interval_ms``); NaN before the first. Never a later settlement."""
    f_ts = np.asarray(funding_ts_ms, dtype=np.int64)
    if len(f_ts) > 1 and np.any(np.diff(f_ts) <= 0):
        raise DataQualityError("funding: ts not strictly increasing")
    j = np.searchsorted(f_ts, np.asarray(bar_ts_ms, dtype=np.int64) + bar_interval_ms, side="right") - 1
    ok = j >= 0
    rate = np.full(len(j), np.nan)
    when = np.full(len(j), np.nan)
    rate[ok] = np.asarray(funding_rate, dtype=np.float64)[j[ok]]
    when[ok] = f_ts[j[ok]].astype(np.float64)
    return rate, when


def _aligned(ts: np.ndarray, other_ts: np.ndarray, column: np.ndarray, dataset: str) -> np.ndarray:
    """``column`` of ``other`` at the same bar open time as each of ``ts``, NaN where it has none."""
    if len(other_ts) > 1 and np.any(np.diff(other_ts) <= 0):
        raise DataQualityError(f"{dataset}: ts not strictly increasing")
    j = np.searchsorted(other_ts, ts)
    j_ok = np.minimum(j, len(other_ts) - 1)
    hit = (j < len(other_ts)) & (other_ts[j_ok] == ts) if len(other_ts) else np.zeros(len(ts), bool)
    out = np.full(len(ts), np.nan)
    out[hit] = column[j_ok[hit]]
    return out


def build_inputs(
    candles: Mapping[str, np.ndarray],
    mark: Mapping[str, np.ndarray] | None = None,
    premium: Mapping[str, np.ndarray] | None = None,
    funding: Mapping[str, np.ndarray] | None = None,
) -> SymbolInputs:
    """Assemble kernel inputs from datasets in the ``core.frames`` layouts (1m candles, mark_1m,
    premium_1m, funding), aligned on the candles' ts; missing datasets and bars become NaN."""
    cols = check_columns("candles_1m", candles)
    ts = cols["ts"]
    x = np.full((len(ts), N_INPUTS), np.nan)
    for k, name in enumerate(("open", "high", "low", "close", "volume")):
        x[:, k] = cols[name]
    if "taker_buy_volume" in cols:
        x[:, INPUT_COLUMNS.index("taker_buy_volume")] = cols["taker_buy_volume"]
    if mark is not None:
        m = check_columns("mark_1m", mark)
        for name in ("high", "low", "close"):
            x[:, INPUT_COLUMNS.index(f"mark_{name}")] = _aligned(ts, m["ts"], m[name], "mark_1m")
    if premium is not None:
        p = check_columns("premium_1m", premium)
        x[:, INPUT_COLUMNS.index("premium_close")] = _aligned(ts, p["ts"], p["close"], "premium_1m")
    if funding is not None:
        f = check_columns("funding", funding)
        rate, when = funding_in_force(ts, f["ts"], f["funding_rate"])
        x[:, INPUT_COLUMNS.index("funding_rate")] = rate
        x[:, INPUT_COLUMNS.index("funding_time_ms")] = when
    return SymbolInputs(ts.copy(), x)


@dataclass(frozen=True, slots=True)
class FeatureFrame:
    """Merged features of one symbol: row i belongs to 1m bar ``ts_ms[i]`` and uses data up to its
    close; ``values`` has the 132 columns ``FEATURE_NAMES`` (NaN during warm-up)."""

    symbol: str
    ts_ms: np.ndarray
    values: np.ndarray
    schema_version: int = FEATURE_SCHEMA_VERSION
    schema_hash: str = SCHEMA_HASH

    def __len__(self) -> int:
        return len(self.ts_ms)

    def column(self, name: str) -> np.ndarray:
        """Return one merged feature column (``f_15m_atr`` …) as a view."""
        try:
            return self.values[:, FEATURE_INDEX[name]]
        except KeyError:
            raise SchemaMismatchError(f"no feature {name!r} in schema v{self.schema_version}") from None

    def key_columns(self) -> dict[str, np.ndarray]:
        """Return the summary columns stored beside the JSON features: atr, funding_z, btc_regime."""
        return {key: self.column(name) for key, name in KEY_COLUMNS.items()}

    def row(self, i: int) -> FeatureRow:
        """Return row ``i`` as a FeatureRow (the stored form)."""
        return FeatureRow.from_values(self.symbol, int(self.ts_ms[i]), self.values[i])

    def to_pandas(self) -> pd.DataFrame:
        """Return a DataFrame with ``ts`` (epoch ms) and the 132 feature columns."""
        import pandas as pd

        df = pd.DataFrame(self.values, columns=list(FEATURE_NAMES))
        df.insert(0, "ts", self.ts_ms)
        df.attrs.update(symbol=self.symbol, schema_version=self.schema_version, schema_hash=self.schema_hash)
        return df


def _run_batch(
    inputs: Mapping[str, SymbolInputs], symbols: Sequence[str], btc_symbol: str, parallel: bool
) -> tuple[dict[str, FeatureFrame], np.ndarray, np.ndarray]:
    btc_k = symbols.index(btc_symbol) if btc_symbol in symbols else -1
    sizes = [len(inputs[s]) for s in symbols]
    starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    ts = np.concatenate([inputs[s].ts_ms for s in symbols]) if symbols else np.empty(0, np.int64)
    x = np.concatenate([inputs[s].values for s in symbols]) if symbols else np.empty((0, N_INPUTS))
    btc_ts = inputs[btc_symbol].ts_ms if btc_k >= 0 else np.empty(0, np.int64)
    table = np.full((len(btc_ts) + 1, CROSS_LEN), np.nan)  # last row: no BTC bar yet
    btc_row = np.concatenate([np.searchsorted(btc_ts, inputs[s].ts_ms, side="right") - 1 for s in symbols]
                             ).astype(np.int64) if symbols else np.empty(0, np.int64)  # fmt: skip
    states = np.stack([new_symbol_state() for _ in symbols]) if symbols else np.empty((0, SYMBOL_STATE_LEN))
    cross = np.full(CROSS_LEN, np.nan)
    out = np.empty((len(ts), N_MERGED))
    bad = np.full((len(symbols), 2), -1, dtype=np.int64)
    (run_group_parallel if parallel else run_group)(
        ts, x, starts, btc_k, states, cross, table, btc_row, out, bad
    )
    for k, s in enumerate(symbols):
        if bad[k, 0] >= 0:
            i = int(bad[k, 0])
            raise DataQualityError(f"{s}: bar {i} (ts {inputs[s].ts_ms[i]}): {STATUS_TEXT[int(bad[k, 1])]}")
    frames = {
        s: FeatureFrame(s, inputs[s].ts_ms, out[starts[k] : starts[k + 1]]) for k, s in enumerate(symbols)
    }
    return frames, states, cross


def compute_features(
    inputs: Mapping[str, SymbolInputs], *, btc_symbol: str = BTC_SYMBOL, parallel: bool = False
) -> dict[str, FeatureFrame]:
    """Compute the merged features of every bar of every symbol (batch).

    Row t of a symbol uses its bars up to and including t, and BTC's bars with open time ≤ t.
    Without ``btc_symbol`` in ``inputs`` the ``btc_*`` features are NaN. ``parallel`` spreads the
    non-BTC symbols over numba's threads. Raises DataQualityError naming the first rejected bar.
    """
    frames, _, _ = _run_batch(inputs, list(inputs), btc_symbol, parallel)
    return frames


def compute_features_for_symbol(
    symbol: str,
    candles: Mapping[str, np.ndarray],
    *,
    mark: Mapping[str, np.ndarray] | None = None,
    premium: Mapping[str, np.ndarray] | None = None,
    funding: Mapping[str, np.ndarray] | None = None,
    btc_candles: Mapping[str, np.ndarray] | None = None,
) -> FeatureFrame:
    """Compute one symbol's merged features (spec 001 §7 ``compute_features_for_symbol``).

    ``btc_candles`` (BTCUSDT 1m candles) feed the ``btc_*`` features, which need BTC's last-price
    bars only; without them those features are NaN. For BTCUSDT itself ``btc_candles`` is ignored.
    """
    inputs = {symbol: build_inputs(candles, mark, premium, funding)}
    if btc_candles is not None and symbol != BTC_SYMBOL:
        inputs[BTC_SYMBOL] = build_inputs(btc_candles)
    return compute_features(inputs)[symbol]


class FeatureEngine:
    """Incremental features of a symbol group: per-symbol state, one compiled call per 1m close.

    ``symbols[0]`` is always ``btc_symbol`` (added if the group lacks it: feed its bars too). Feed
    every bar of a ts in one ``update`` call, BTC's included; the rows then equal
    ``compute_features`` on the same bars, bit for bit.
    """

    def __init__(self, symbols: Sequence[str], *, btc_symbol: str = BTC_SYMBOL) -> None:
        ordered = [btc_symbol, *(s for s in symbols if s != btc_symbol)]
        if len(set(ordered)) != len(ordered):
            raise ValueError(f"symbols repeat: {list(symbols)}")
        self._symbols = tuple(ordered)
        self._btc_symbol = btc_symbol
        self._index = {s: i for i, s in enumerate(ordered)}
        self._states = np.stack([new_symbol_state() for _ in ordered])
        self._cross = np.full(CROSS_LEN, np.nan)
        self._status = np.zeros(len(ordered), dtype=np.int8)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Row order of ``update``'s inputs and outputs; BTC first."""
        return self._symbols

    def index(self, symbol: str) -> int:
        """Return the row of ``symbol`` in ``update``'s arrays."""
        return self._index[symbol]

    @classmethod
    def from_history(
        cls, inputs: Mapping[str, SymbolInputs], *, btc_symbol: str = BTC_SYMBOL, parallel: bool = False
    ) -> tuple[FeatureEngine, dict[str, FeatureFrame]]:
        """Warm an engine up on histories (batch); return it, ready for the next bars, and the features."""
        engine = cls(list(inputs), btc_symbol=btc_symbol)
        present = [s for s in engine.symbols if s in inputs]
        frames, states, cross = _run_batch(inputs, present, btc_symbol, parallel)
        for k, s in enumerate(present):
            engine._states[engine._index[s]] = states[k]
        engine._cross[:] = cross
        return engine, frames

    def update(
        self, ts_ms: int, inputs: np.ndarray, closed: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Take the 1m bars [ts_ms, ts_ms + 1m) that just closed; return (rows, status).

        ``inputs``: float64 (len(symbols), len(INPUT_COLUMNS)); ``closed``: bool per symbol, True
        where ``inputs`` holds a bar. ``rows`` (written into ``out`` if given) holds the merged
        132 features per symbol, NaN where no bar was accepted; ``status`` is 0 (OK) or the
        reason a bar was rejected or missing (``STATUS_TEXT``). A rejected bar changes no state.
        """
        n = len(self._symbols)
        if inputs.dtype != np.float64 or inputs.shape != (n, N_INPUTS):
            raise DataQualityError(
                f"update: inputs must be float64 ({n}, {N_INPUTS}), got {inputs.dtype} {inputs.shape}"
            )
        if closed.dtype != np.bool_ or closed.shape != (n,):
            raise DataQualityError(f"update: closed must be bool ({n},), got {closed.dtype} {closed.shape}")
        if out is None:
            out = np.empty((n, N_MERGED))
        group_update(np.int64(ts_ms), inputs, closed, 0, self._states, self._cross, out, self._status)
        return out, self._status.copy()

    def rows(self, ts_ms: int, out: np.ndarray, status: np.ndarray) -> list[FeatureRow]:
        """Return the accepted rows of an ``update`` as FeatureRow (the stored form)."""
        return [
            FeatureRow.from_values(s, ts_ms, out[k]) for k, s in enumerate(self._symbols) if status[k] == OK
        ]

    def snapshot(self) -> dict[str, Any]:
        """Return the engine's state (copies), tagged with the schema, for ``restore``."""
        return {
            "schema_version": FEATURE_SCHEMA_VERSION, "schema_hash": SCHEMA_HASH, "symbols": self._symbols,
            "btc_symbol": self._btc_symbol, "states": self._states.copy(), "cross": self._cross.copy(),
        }  # fmt: skip

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any]) -> FeatureEngine:
        """Rebuild an engine from ``snapshot``; refuse a snapshot of another feature schema."""
        require_schema(int(snapshot["schema_version"]), str(snapshot["schema_hash"]))
        engine = cls(snapshot["symbols"], btc_symbol=snapshot["btc_symbol"])
        if engine.symbols != tuple(snapshot["symbols"]) or snapshot["states"].shape != engine._states.shape:
            raise SchemaMismatchError(
                "feature engine snapshot: symbols or state layout differ from this build"
            )
        engine._states[:] = snapshot["states"]
        engine._cross[:] = snapshot["cross"]
        return engine
