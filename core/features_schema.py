"""Feature schema v1: the 44 features per timeframe, the 132 merged names, version, hash, rows.

A merged row belongs to a 1m bar [ts, ts + 1m) and uses only data known at its close ts + 1m:
``f_1m_*`` from 1m bars up to and including this one, ``f_15m_*`` / ``f_1h_*`` from the last
15m / 1h bar whose close is ≤ ts + 1m (``core.ta.last_closed_index``). Every window below counts
bars of the feature's own timeframe ("60" is 60 minutes at 1m, 15 hours at 15m, 60 hours at 1h).
Warm-up is the number of bars of that timeframe before the first value (TA-Lib's "lookback");
before it the feature is NaN. ``r`` is the log return ln(C_t / C_t-1); std and z-scores use
ddof = 0; "flat" means a window whose variance is below 1e-12 of its mean square (exactly
constant up to rounding). Missing 1m bars are not filled: windows span the bars present (gaps are
the data-quality layer's to report), and a 15m/1h bar missing any of its 1m bars is not formed,
so that timeframe's features keep the values of its last complete bar.

Conventions and deliberate differences from TA-Lib (the C library bundled with ta-lib 0.8.2).
Seeds, warm-ups and order of operations follow TA-Lib (Wilder smoothing for ATR/RSI/ADX, ADX's 13
summed bars and first value at bar 27, MACD's fast EMA seeded at the slow EMA's first bar, SMA
seeds of EMAs); tested agreement is ~1e-12 relative, Bollinger z ~1e-10 absolute. Differences:
on a flat window TA-Lib outputs 0 for RSI, MFI and WILLR, we output the neutral 50, 50, -50;
TA-Lib's epsilon dead zones on the RSI/DI/DX denominators are exact-zero tests here (no silent 0
for instruments quoted in tiny units); Bollinger z is two-pass over its 20 closes (TA-Lib uses
running sums of x and x^2); ATR is the mark-price ATR where 1m mark data exists (spec 001 §7.1),
TA-Lib's ATR of the last price otherwise. The MFI keeps TA-Lib's scaled dead zone for "typical
price unchanged" and its clamp to [0, 100].
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from core.errors import SchemaMismatchError
from core.features_kernel import FEATURES, N_TF_FEATURES, W_FUNDING, W_RV_REF

FEATURE_SCHEMA_VERSION = 1
TIMEFRAMES: tuple[str, ...] = ("1m", "15m", "1h")


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One feature of a timeframe: how it is computed, over how many bars, from which bar on, in what unit."""

    name: str
    formula: str
    window: str
    warmup_bars: int
    units: str


_S = FeatureSpec
_RV_WARMUP = 60 + W_RV_REF - 1
#: The documented table, in schema order (the kernel's order; checked at import).
# fmt: off
FEATURE_TABLE: tuple[FeatureSpec, ...] = (
    _S("ret_1", "ln(C_t / C_t-1)", "1", 1, "log return"),
    _S("ret_5", "ln(C_t / C_t-5)", "5", 5, "log return"),
    _S("ret_15", "ln(C_t / C_t-15)", "15", 15, "log return"),
    _S("ret_60", "ln(C_t / C_t-60)", "60", 60, "log return"),
    _S("rsi", "Wilder RSI of closes (TA-Lib RSI; flat window: 50)", "14", 14, "0..100"),
    _S("macd_z", "MACD(12,26,9) histogram (TA-Lib MACD seeds) / atr", "12/26/9", 33, "ATR multiples"),
    _S("ema_dist_atr", "(C - EMA50) / atr (TA-Lib EMA seed: SMA of the first 50)", "50", 49, "ATR multiples"),
    _S("willr", "Williams %R: (HH14 - C) / (HH14 - LL14) x -100 (TA-Lib WILLR; flat: -50)", "14", 13, "-100..0"),
    _S("adx", "Wilder ADX (TA-Lib ADX: 13 summed bars, first value at bar 27)", "14", 27, "0..100"),
    _S("di_diff", "+DI - -DI (TA-Lib PLUS_DI - MINUS_DI)", "14", 14, "-100..100"),
    _S("atr", "Wilder ATR (TA-Lib ATR); true range of the mark price where this and the previous bar "
       "have mark OHLC, else of the last price; below 1e-6 of C (features_kernel.ATR_FLOOR_REL) it counts as 0",
       "14", 14, "price (USDT)"),
    _S("natr", "atr / C x 100 (TA-Lib NATR when atr is last-price based)", "14", 14, "percent"),
    _S("vol_60", "std of r (TA-Lib STDDEV of log returns)", "60", 60, "log return per bar"),
    _S("vol_ratio_15_60", "std of the last 15 r / vol_60 (NaN if vol_60 = 0)", "15/60", 60, "ratio"),
    _S("parkinson_60", "sqrt(sum ln(H/L)^2 / (60 x 4 ln 2))", "60", 59, "log return per bar"),
    _S("garman_klass_60", "sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2))", "60", 59, "log return per bar"),
    _S("range_atr", "(H - L) / atr", "14", 14, "ATR multiples"),
    _S("rv_z", f"z of ln(max(vol_60, 1e-12)) against its last {W_RV_REF} values (flat: 0)",
       f"60/{W_RV_REF}", _RV_WARMUP, "z-score"),
    _S("bb_z", "(C - SMA20) / std20 of closes, ddof 0 (TA-Lib BBANDS; flat: 0)", "20", 19, "z-score"),
    _S("skew_60", "population skewness of r (m3 / m2^1.5; flat: NaN)", "60", 60, "dimensionless"),
    _S("kurt_60", "population excess kurtosis of r (m4 / m2^2 - 3; flat: NaN)", "60", 60, "dimensionless"),
    _S("autocorr_60", "Pearson correlation of the 59 adjacent pairs (r_t-1, r_t) in the window (flat: NaN)",
       "60", 60, "-1..1"),
    _S("body_ratio", "(C - O) / (H - L); 0 if H = L", "1", 0, "-1..1"),
    _S("clv", "close location value ((C - L) - (H - C)) / (H - L); 0 if H = L", "1", 0, "-1..1"),
    _S("dist_high_60", "C / max(H over 60) - 1", "60", 59, "fraction (<= 0)"),
    _S("dist_low_60", "C / min(L over 60) - 1", "60", 59, "fraction (>= 0)"),
    _S("vol_z", "z of volume V against the window (flat: 0)", "60", 59, "z-score"),
    _S("taker_buy_ratio", "taker buy volume / V (NaN without taker data or V = 0)", "1", 0, "0..1"),
    _S("taker_imbalance_15", "2 x sum taker buy / sum V - 1 (NaN if any bar lacks taker data or sum V = 0)",
       "15", 14, "-1..1"),
    _S("mfi", "Money Flow Index (TA-Lib MFI incl. its scaled dead zone; empty window: 50)", "14", 14, "0..100"),
    _S("amihud_60", "1e6 x sum |r| / sum (C x V): Amihud illiquidity", "60", 60, "log return per 1e6 USDT"),
    _S("vwap_dist_60", "C / VWAP - 1, VWAP = sum(TP x V) / sum V, TP = (H + L + C) / 3", "60", 59, "fraction"),
    _S("funding_rate", "last settled funding rate with funding time <= bar close (NaN if none known)",
       "1 event", 0, "fraction per funding interval"),
    _S("funding_z", f"z of the rate in force against the last {W_FUNDING} settled rates, two-pass (flat: 0)",
       f"{W_FUNDING} events", 0, "z-score"),
    _S("basis", "premium index close ((last - index) / index, Binance premium index) where known, else "
       "(C - mark close) / mark close, else NaN", "1", 0, "fraction"),
    _S("basis_z", "z of basis against the window (NaN if any bar lacks basis; flat: 0)", "60", 59, "z-score"),
    _S("hour_sin", "sin(2 pi minute-of-day / 1440) of the bar open time, UTC", "1", 0, "-1..1"),
    _S("hour_cos", "cos(2 pi minute-of-day / 1440) of the bar open time, UTC", "1", 0, "-1..1"),
    _S("dow_sin", "sin(2 pi weekday / 7), weekday 0 = Monday, of the bar open time, UTC", "1", 0, "-1..1"),
    _S("dow_cos", "cos(2 pi weekday / 7), weekday 0 = Monday, of the bar open time, UTC", "1", 0, "-1..1"),
    _S("btc_ret_60", "BTCUSDT's ret_60 at its latest bar of this timeframe closed by this bar's close",
       "60", 60, "log return"),
    _S("btc_vol_60", "BTCUSDT's vol_60, same bar as btc_ret_60", "60", 60, "log return per bar"),
    _S("btc_regime", "BTCUSDT's rv_z coded 0 calm (< -1), 1 normal, 2 high volatility (> 1)",
       f"60/{W_RV_REF}", _RV_WARMUP, "code 0/1/2"),
    _S("btc_corr_60", "Pearson correlation of r with BTCUSDT's r of the same bars (NaN if a bar of "
       "the window has no BTC bar with the same open time)", "60", 60, "-1..1"),
)
# fmt: on
if tuple(f.name for f in FEATURE_TABLE) != FEATURES or len(FEATURE_TABLE) != N_TF_FEATURES:
    raise RuntimeError("FEATURE_TABLE does not match the kernel's feature order")  # broken build

#: Features whose first value depends on data other than bar count (taker, funding, mark, premium).
DATA_DEPENDENT: frozenset[str] = frozenset(
    {"taker_buy_ratio", "taker_imbalance_15", "funding_rate", "funding_z", "basis", "basis_z"}
)

#: The 132 merged names, ``f_<timeframe>_<feature>``, in row order.
FEATURE_NAMES: tuple[str, ...] = tuple(f"f_{tf}_{f.name}" for tf in TIMEFRAMES for f in FEATURE_TABLE)
FEATURE_INDEX: Mapping[str, int] = MappingProxyType({name: i for i, name in enumerate(FEATURE_NAMES)})

#: Key summary columns stored beside the JSON features (spec 001 §6): the policy's and labels' ATR
#: is the 15m one; funding_z is freshest on 1m; the BTC regime for the policy is the 15m one.
KEY_COLUMNS: Mapping[str, str] = MappingProxyType(
    {"atr": "f_15m_atr", "funding_z": "f_1m_funding_z", "btc_regime": "f_15m_btc_regime"}
)


def schema_hash(version: int = FEATURE_SCHEMA_VERSION, names: tuple[str, ...] = FEATURE_NAMES) -> str:
    """Return the 16-hex-digit sha256 of the version and the ordered feature names (stable across runs)."""
    text = f"raytrade-features/v{version}\n" + "\n".join(names)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


SCHEMA_HASH = schema_hash()


def require_schema(
    schema_version: int,
    schema_hash_: str,
    *,
    expected_version: int = FEATURE_SCHEMA_VERSION,
    expected_hash: str = SCHEMA_HASH,
) -> None:
    """Raise SchemaMismatchError, naming both sides, unless the rows' schema is the expected one."""
    if schema_version != expected_version or schema_hash_ != expected_hash:
        raise SchemaMismatchError(
            f"feature schema v{schema_version} (hash {schema_hash_}) does not match the expected "
            f"v{expected_version} (hash {expected_hash}); recompute the features or use a model of that schema"
        )


def _opt_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """One merged feature row as stored (features_1m: JSON features + key columns).

    ``features`` maps the 132 names to floats, None where NaN (JSON has no NaN).
    """

    symbol: str
    ts_ms: int
    features: Mapping[str, float | None]
    atr: float | None
    funding_z: float | None
    btc_regime: int | None
    schema_version: int = FEATURE_SCHEMA_VERSION
    schema_hash: str = SCHEMA_HASH

    @classmethod
    def from_values(cls, symbol: str, ts_ms: int, values: np.ndarray) -> FeatureRow:
        """Build a row of this schema from a merged 132-value vector."""
        if values.shape != (len(FEATURE_NAMES),):
            raise SchemaMismatchError(
                f"a v{FEATURE_SCHEMA_VERSION} row has {len(FEATURE_NAMES)} values, got {values.shape}"
            )
        feats = {name: _opt_float(float(v)) for name, v in zip(FEATURE_NAMES, values, strict=True)}
        regime = feats[KEY_COLUMNS["btc_regime"]]
        return cls(
            symbol=symbol,
            ts_ms=int(ts_ms),
            features=MappingProxyType(feats),
            atr=feats[KEY_COLUMNS["atr"]],
            funding_z=feats[KEY_COLUMNS["funding_z"]],
            btc_regime=None if regime is None else int(regime),
        )

    def vector(
        self, *, expected_version: int = FEATURE_SCHEMA_VERSION, expected_hash: str = SCHEMA_HASH
    ) -> np.ndarray:
        """Return the 132 values in schema order (NaN for None); refuse a row of another schema."""
        require_schema(self.schema_version, self.schema_hash, expected_version=expected_version,
                       expected_hash=expected_hash)  # fmt: skip
        if tuple(self.features) != FEATURE_NAMES:
            raise SchemaMismatchError(
                f"row of {self.symbol} at {self.ts_ms}: feature names differ from schema v{self.schema_version}"
            )
        return np.array([np.nan if v is None else v for v in self.features.values()], dtype=np.float64)
