"""Synthetic Binance USD-M market for the offline demo and for tests. Pure: no I/O, no clock reads.

Model, per 1m bar t (bar [ts, ts + 1m), all returns are log returns):

- BTC factor: ``f_t = s_t R_t e_t`` with GARCH(1,1) ``e_t = sqrt(h_t) z_t``,
  ``h_t = omega + alpha e_{t-1}^2 + beta h_{t-1}`` and ``z_t`` Student-t (unit variance, clipped).
  ``s_t`` is the seasonal volatility multiplier (hour of day cosine, weekend damping; mean square 1
  over a week) and ``R_t = exp(x_t - sd^2)`` a market-wide slow volatility regime (``x`` an OU
  process in log units; mean square 1). BTCUSDT's return *is* the factor.
- Other symbols: ``r_t = beta_s f_t + s_t R_t u_t`` with ``u`` an independent GARCH(1,1) of the same
  shape, unconditional sd ``idio_vol_ratio_s * btc_vol``.
- Last price: ``L_t = P0 exp(cumsum r)``; close = L rounded to the tick; the next open is the
  previous close, one tick away with ``open_gap_probability``; high/low are the extremes of a
  Brownian bridge from open to close (exact sampling), rounded outward to the tick.
- Premium index ``p_t = mu_s + slow_t + fast_t`` (two OU processes, in return units, noise scaled by
  the symbol's volatility relative to BTC); index ``I_t = L_t / (1 + p_t)``; mark price as Binance
  defines it: ``median(I (1 + F_last * time_to_next_funding / interval), I (1 + MA_5m(p)), L)``.
- Funding at every ``T`` on the symbol's 8 h (00/08/16 UTC) or 4 h grid: ``P`` = premium averaged
  over the interval's 1m closes with weights 1..n (Binance weights later samples more),
  ``F = clip(P + clip(I_H - P, -clamp, clamp), -cap, cap)`` with interest ``I_H = 0.01% * H / 8``.
- Volume (USDT): ``V_t = V_s (sigma_t / sigma_s)^a exp(b min(|r_t| / sigma_t, 10) + eta_t)`` with
  ``sigma_t`` the conditional sd and ``eta`` an AR(1) Gaussian; trade count is Poisson in
  ``V_t / mean_trade_notional``; the taker-buy share leans with the bar's return.

Planted edge (off by default: ``edge_strength = 0`` is the edge-free null market). With
``edge_strength = k > 0`` every symbol but BTCUSDT gets a lead-lag drift from BTC added to its return:
``r_t += d_t`` with ``d_t = k * rho_s * (1 / W) * sum_{j=1..W} f_{t-j}``, ``W = EDGE_WINDOW_MINUTES``
(60) and ``rho_s = sqrt(beta_s^2 + idio_vol_ratio_s^2)`` (the symbol's unconditional 1m sd over
BTC's), so that in the symbol's own sd units the drift is ``k`` times BTC's trailing mean return in
BTC sd units, whatever the symbol. ``d_t`` uses BTC factor returns of bars strictly before t (bars
before the generated span count as 0); ``sum_{j=1..W} f_{t-j}`` is, up to tick rounding, BTC's log
return over the 60 bars ending at t - 1: the feature ``f_1m_btc_ret_60`` of bar t - 1. Known at t's
close, the drift still to come is ``E_t = k rho_s / W * sum_{i=0..W-1} min(H, W - i) f_{t-i}`` over
the next H bars (``expected_drift``), about half of ``k rho_s`` times BTC's last-hour return. The edge
draws no random number: with the same seed a planted symbol's returns are the null market's plus
``d`` (its trade counts, and the premium and mark noise drawn after them, differ). ``core.
synthetic_edge`` prices the edge as the Sharpe ratio of an oracle that trades ``E_t`` after costs.

Randomness: the factor and the regime come from ``(seed, factor tag)``; each symbol's paths from
``(seed, hash(symbol))``; a symbol's profile (beta, volatility, premium level, volume scale, 4 h or
8 h funding) from its name only. So a symbol's series do not depend on which other symbols are
generated or their order, and the same seed gives bit-identical output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.symbols import validate_internal
from core.time import DAY_MS, HOUR_MS, MINUTE_MS

SOURCE = "synthetic"
FACTOR_SYMBOL = "BTCUSDT"
#: Trailing window of the planted lead-lag drift, 1m bars (BTC's return the feature f_1m_btc_ret_60 sees).
EDGE_WINDOW_MINUTES = 60
#: The planted edge of the demo and of the positive controls (``SyntheticParams.edge_strength``): one value
#: for both. At 3.0 the oracle earns an annualised Sharpe of ~80 on the controls' test windows; at 1.5-2.0
#: the research flow recovered too little of it for its gates to tell it from noise at the sizes that fit
#: 2 cores (bench/RESULTS.md, "Positive and negative controls").
PLANTED_EDGE_STRENGTH = 3.0

# Reference scales, mid 2025 (base price USDT, tick size, quantity step, funding interval hours);
# tick and step sizes and 4 h funding as on Binance. Symbols not listed get hash-derived scales.
_REFERENCE: dict[str, tuple[float, float, float, int]] = {
    "BTCUSDT": (60_000.0, 0.1, 0.001, 8),
    "ETHUSDT": (3_000.0, 0.01, 0.001, 8),
    "BNBUSDT": (600.0, 0.01, 0.01, 8),
    "SOLUSDT": (150.0, 0.01, 1.0, 8),
    "XRPUSDT": (2.2, 0.0001, 0.1, 8),
    "DOGEUSDT": (0.17, 0.00001, 1.0, 8),
    "ADAUSDT": (0.63, 0.0001, 1.0, 8),
    "AVAXUSDT": (19.0, 0.001, 1.0, 8),
    "DOTUSDT": (3.8, 0.001, 0.1, 8),
    "LINKUSDT": (13.4, 0.001, 0.01, 8),
    "LTCUSDT": (86.0, 0.01, 0.001, 8),
    "BCHUSDT": (475.0, 0.01, 0.001, 8),
    "SUIUSDT": (3.0, 0.0001, 0.1, 8),
    "AAVEUSDT": (274.0, 0.01, 0.1, 8),
    "1000PEPEUSDT": (0.0105, 0.0000001, 1.0, 8),
    "FILUSDT": (2.4, 0.001, 0.1, 8),
    "AXSUSDT": (2.3, 0.001, 1.0, 8),
    "ENAUSDT": (0.29, 0.0001, 1.0, 4),
    "ZKUSDT": (0.048, 0.00001, 1.0, 4),
    "XAUUSDT": (3_300.0, 0.01, 0.001, 8),
    "XAGUSDT": (36.0, 0.01, 0.01, 8),
    "HYPEUSDT": (42.0, 0.001, 0.01, 4),
    "ZECUSDT": (42.0, 0.01, 0.001, 8),
    "BNXUSDT": (1.55, 0.0001, 0.1, 4),
    "ALPHAUSDT": (0.021, 0.00001, 1.0, 8),
    "ZORAUSDT": (0.08, 0.00001, 1.0, 8),
    "TRUMPUSDT": (9.6, 0.001, 0.01, 4),
    "PUMPUSDT": (0.0045, 0.000001, 1.0, 4),
    "NEARUSDT": (2.2, 0.001, 1.0, 8),
    "PAXGUSDT": (3_400.0, 0.01, 0.001, 4),
}
#: Precious-metal perpetuals: barely tied to BTC and much calmer (own beta and volatility ranges).
METAL_SYMBOLS: frozenset[str] = frozenset({"XAUUSDT", "XAGUSDT", "PAXGUSDT"})

_Range = tuple[float, float]
_V = TypeVar("_V")


class SyntheticParams(BaseModel):
    """Parameters of the synthetic market. Returns are log returns per 1m bar unless named otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    btc_vol_1m_bps: float = Field(
        default=5.0, gt=0, le=500, description="unconditional sd of BTC 1m returns, bps"
    )
    beta_range: _Range = Field(
        default=(0.7, 1.7), description="range of alt betas to BTC 1m returns (dimensionless)"
    )
    idio_vol_ratio_range: _Range = Field(
        default=(0.9, 2.2), description="range of alt idiosyncratic 1m sd, as a multiple of btc_vol_1m_bps"
    )
    metal_beta_range: _Range = Field(
        default=(0.0, 0.15), description="beta range of METAL_SYMBOLS (dimensionless)"
    )
    metal_idio_vol_ratio_range: _Range = Field(
        default=(0.2, 0.5),
        description="idiosyncratic 1m sd range of METAL_SYMBOLS, as a multiple of btc_vol_1m_bps",
    )
    garch_alpha: float = Field(
        default=0.05, ge=0, lt=1, description="GARCH(1,1) weight of last squared shock, per 1m"
    )
    garch_beta: float = Field(
        default=0.94, ge=0, lt=1, description="GARCH(1,1) weight of last variance, per 1m"
    )
    student_t_df: float = Field(
        default=4.0, gt=2, le=100, description="degrees of freedom of the t innovations"
    )
    innovation_clip_sd: float = Field(
        default=25.0, ge=3, description="innovations are clipped at ± this many sd"
    )
    vol_regime_sd_log: float = Field(
        default=0.3, ge=0, le=2, description="sd of the market volatility regime, log units"
    )
    vol_regime_half_life_minutes: float = Field(
        default=1440.0, gt=0, description="half-life of the regime, minutes"
    )
    intraday_vol_log_amplitude: float = Field(
        default=0.3, ge=0, le=2, description="amplitude of the hour-of-day cosine in log volatility"
    )
    intraday_vol_peak_hour_utc: float = Field(
        default=14.5, ge=0, lt=24, description="UTC hour of peak volatility"
    )
    weekend_vol_multiplier: float = Field(
        default=0.75, gt=0, le=2, description="volatility on Sat/Sun vs weekdays"
    )
    intrabar_vol_ratio: float = Field(
        default=0.7,
        gt=0,
        le=3,
        description="sd of the intrabar Brownian bridge as a multiple of the bar's sd",
    )
    open_gap_probability: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="probability that a bar opens one tick away from the previous close",
    )
    btc_quote_volume_per_minute_usdt: float = Field(
        default=5e6, gt=0, description="typical BTC volume per 1m, USDT"
    )
    quote_volume_ratio_range: _Range = Field(
        default=(0.005, 0.3),
        description="range (log-uniform) of an alt's typical 1m USDT volume relative to BTC",
    )
    volume_vol_elasticity: float = Field(
        default=1.0, ge=0, le=5, description="d log volume / d log conditional sd"
    )
    volume_abs_return_loading: float = Field(
        default=0.3, ge=0, le=2, description="log-volume loading on |return| / conditional sd (capped at 10)"
    )
    volume_noise_sd_log: float = Field(
        default=0.5, ge=0, le=3, description="sd of log-volume noise, log units"
    )
    volume_noise_ar1: float = Field(
        default=0.7, ge=0, lt=1, description="AR(1) coefficient of log-volume noise, per 1m"
    )
    mean_trade_notional_usdt: float = Field(
        default=2_000.0,
        gt=0,
        description="mean trade size of BTC, USDT (alts: scaled by sqrt of volume ratio)",
    )
    taker_buy_return_loading: float = Field(
        default=0.15, ge=0, le=0.5, description="taker-buy share shift per tanh(return / conditional sd)"
    )
    taker_buy_noise_sd: float = Field(
        default=0.08, ge=0, le=0.5, description="sd of the taker-buy share noise"
    )
    premium_mean_bps_range: _Range = Field(
        default=(-9.0, 0.0), description="range of a symbol's mean premium index, bps"
    )
    premium_slow_sd_bps: float = Field(
        default=1.0, ge=0, description="sd of the slow premium component (BTC), bps"
    )
    premium_slow_half_life_minutes: float = Field(
        default=720.0, gt=0, description="half-life of slow premium, minutes"
    )
    premium_fast_sd_bps: float = Field(
        default=2.0, ge=0, description="sd of the fast premium component (BTC), bps"
    )
    premium_fast_half_life_minutes: float = Field(
        default=10.0, gt=0, description="half-life of fast premium, minutes"
    )
    mark_basis_window_minutes: int = Field(
        default=5, ge=1, le=60, description="moving-average window of mark basis, 1m bars"
    )
    interest_rate_8h: float = Field(
        default=0.0001, ge=-0.01, le=0.01, description="interest per 8 h (fraction)"
    )
    funding_premium_clamp: float = Field(
        default=0.0005, ge=0, le=0.05, description="clamp of interest − premium, fraction"
    )
    funding_rate_cap: float = Field(
        default=0.0075, gt=0, le=0.05, description="cap of |funding rate| per event, fraction"
    )
    edge_strength: float = Field(
        default=0.0,
        ge=0,
        le=5,
        description="planted lead-lag edge: drift of non-BTC symbols per unit of BTC's trailing mean "
        "return, both in their own sd units (dimensionless); 0 = the edge-free null market",
    )
    four_hour_funding_fraction: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="share of symbols outside the reference table that fund every 4 h",
    )

    @model_validator(mode="after")
    def _check(self) -> SyntheticParams:
        for name in ("beta_range", "idio_vol_ratio_range", "metal_beta_range", "metal_idio_vol_ratio_range",
                     "quote_volume_ratio_range", "premium_mean_bps_range"):  # fmt: skip
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: low {lo} exceeds high {hi}")
        if self.idio_vol_ratio_range[0] < 0 or self.metal_idio_vol_ratio_range[0] < 0:
            raise ValueError("idiosyncratic volatility ratios must be ≥ 0")
        if self.quote_volume_ratio_range[0] <= 0:
            raise ValueError("quote_volume_ratio_range must be > 0")
        if self.garch_alpha + self.garch_beta >= 1:
            raise ValueError(f"garch_alpha + garch_beta = {self.garch_alpha + self.garch_beta} must be < 1")
        return self


@dataclass(frozen=True, slots=True)
class SymbolMeta:
    """What the generator decided about one symbol (prices in USDT, quantities in base asset)."""

    symbol: str
    beta: float
    idio_vol_ratio: float
    funding_interval_hours: int
    base_price: float
    tick_size: float
    quantity_step: float
    premium_mean: float
    quote_volume_per_minute_usdt: float
    source: str = SOURCE


class _ReadOnly(Mapping[str, _V]):
    """A read-only mapping that pickles (Ray ships markets between processes; mappingproxy does not)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, _V]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


@dataclass(frozen=True, slots=True)
class SyntheticMarket:
    """Generated 1m datasets per symbol, as read-only numpy columns in the core.frames layouts."""

    symbols: tuple[str, ...]
    start_ms: int
    n_minutes: int
    seed: int
    candles_1m: Mapping[str, Mapping[str, np.ndarray]]
    mark_1m: Mapping[str, Mapping[str, np.ndarray]]
    premium_1m: Mapping[str, Mapping[str, np.ndarray]]
    funding: Mapping[str, Mapping[str, np.ndarray]]
    meta: Mapping[str, SymbolMeta]
    source: str = SOURCE
    params: SyntheticParams = field(default_factory=SyntheticParams)

    @property
    def end_ms(self) -> int:
        """Close time of the last bar (exclusive end), epoch ms."""
        return self.start_ms + self.n_minutes * MINUTE_MS

    def dataset(self, name: str, symbol: str) -> Mapping[str, np.ndarray]:
        """Return one dataset (``candles_1m``, ``mark_1m``, ``premium_1m`` or ``funding``) of a symbol."""
        if name not in ("candles_1m", "mark_1m", "premium_1m", "funding"):
            raise KeyError(f"unknown synthetic dataset {name!r}")
        return getattr(self, name)[symbol]


def generate_market(
    symbols: Sequence[str],
    start_ms: int,
    n_minutes: int,
    seed: int,
    params: SyntheticParams | None = None,
) -> SyntheticMarket:
    """Generate ``n_minutes`` 1m bars from ``start_ms`` (epoch ms on the minute grid) for each symbol.

    Deterministic in (symbols' names, start_ms, n_minutes, seed, params); a symbol's output does not
    depend on the other symbols requested. Funding events at ``start_ms < T <= end_ms`` are included,
    each computed from the premium of the bars of its interval that lie in the generated span.
    """
    params = params or SyntheticParams()
    syms = tuple(symbols)
    for s in syms:
        validate_internal(s)
    if len(set(syms)) != len(syms):
        raise ValueError(f"symbols repeat: {syms}")
    if int(start_ms) != start_ms or start_ms % MINUTE_MS:
        raise ValueError(f"start_ms {start_ms} is not on the 1m grid")
    if int(n_minutes) != n_minutes or n_minutes < 1:
        raise ValueError(f"n_minutes must be a positive integer, got {n_minutes}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    start_ms, n, seed = int(start_ms), int(n_minutes), int(seed)

    ts = start_ms + MINUTE_MS * np.arange(n, dtype=np.int64)
    shared = _shared_paths(ts, seed, params)
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {
        k: {} for k in ("candles", "mark", "premium", "funding")
    }
    meta: dict[str, SymbolMeta] = {}
    for s in syms:
        meta[s] = _profile(s, params)
        rng = np.random.default_rng([seed, _symbol_key(s), 1])
        for kind, cols in _simulate_symbol(meta[s], ts, shared, rng, params).items():
            for arr in cols.values():
                arr.flags.writeable = False
            out[kind][s] = cols

    def frozen(d: dict[str, dict[str, np.ndarray]]) -> Mapping[str, Mapping[str, np.ndarray]]:
        return _ReadOnly({k: _ReadOnly(v) for k, v in d.items()})

    return SyntheticMarket(
        symbols=syms, start_ms=start_ms, n_minutes=n, seed=seed,
        candles_1m=frozen(out["candles"]), mark_1m=frozen(out["mark"]),
        premium_1m=frozen(out["premium"]), funding=frozen(out["funding"]),
        meta=_ReadOnly(meta), params=params,
    )  # fmt: skip


# --- profile and shared paths --------------------------------------------------------------------


def _symbol_key(symbol: str) -> int:
    return int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "little")


def _decimals(step: float) -> int:
    return max(0, -int(np.floor(np.log10(step) + 1e-9)))


def _profile(symbol: str, p: SyntheticParams) -> SymbolMeta:
    u = np.random.default_rng([_symbol_key(symbol), 2]).random(8)
    if symbol == FACTOR_SYMBOL:
        beta, idio = 1.0, 0.0
    elif symbol in METAL_SYMBOLS:
        beta = p.metal_beta_range[0] + u[0] * (p.metal_beta_range[1] - p.metal_beta_range[0])
        idio = p.metal_idio_vol_ratio_range[0] + u[1] * np.diff(p.metal_idio_vol_ratio_range)[0]
    else:
        beta = p.beta_range[0] + u[0] * (p.beta_range[1] - p.beta_range[0])
        idio = p.idio_vol_ratio_range[0] + u[1] * np.diff(p.idio_vol_ratio_range)[0]
    if symbol in _REFERENCE:
        price, tick, step, hours = _REFERENCE[symbol]
    else:  # a price between 0.01 and 100, Binance-like tick (~5 significant digits) and step
        price = float(10 ** (-2 + 4 * u[2]))
        tick = 10.0 ** (np.floor(np.log10(price)) - 4)
        step = float(min(1.0, 10.0 ** (np.floor(np.log10(1 / price)) + 1)))
        hours = 4 if u[3] < p.four_hour_funding_fraction else 8
    if symbol == FACTOR_SYMBOL:
        volume = p.btc_quote_volume_per_minute_usdt
    else:
        lo, hi = np.log(p.quote_volume_ratio_range)
        volume = p.btc_quote_volume_per_minute_usdt * float(np.exp(lo + u[4] * (hi - lo)))
    mu_bps = p.premium_mean_bps_range[0] + u[5] * (p.premium_mean_bps_range[1] - p.premium_mean_bps_range[0])
    return SymbolMeta(
        symbol=symbol, beta=float(beta), idio_vol_ratio=float(idio), funding_interval_hours=hours,
        base_price=float(np.round(price, _decimals(tick))), tick_size=float(tick), quantity_step=float(step),
        premium_mean=float(mu_bps) * 1e-4, quote_volume_per_minute_usdt=float(volume),
    )  # fmt: skip


def seasonal_vol_multiplier(ts_ms: np.ndarray, params: SyntheticParams) -> np.ndarray:
    """Return the hour-of-day × weekend volatility multiplier at each bar open time (mean square 1 per week)."""
    week = np.arange(7 * 24 * 60, dtype=np.int64) * MINUTE_MS  # epoch 0 is a Thursday 00:00 UTC

    def raw(t: np.ndarray) -> np.ndarray:
        hour = (t % DAY_MS) / HOUR_MS
        weekday = (t // DAY_MS + 3) % 7  # 0 = Monday
        intraday = np.exp(params.intraday_vol_log_amplitude * np.cos(
            2 * np.pi * (hour - params.intraday_vol_peak_hour_utc) / 24))  # fmt: skip
        return intraday * np.where(weekday >= 5, params.weekend_vol_multiplier, 1.0)

    return raw(np.asarray(ts_ms, dtype=np.int64)) / np.sqrt(np.mean(raw(week) ** 2))


def _ar1_phi(half_life_minutes: float) -> float:
    return float(0.5 ** (1.0 / half_life_minutes))


def _std_t(rng: np.random.Generator, n: int, p: SyntheticParams) -> np.ndarray:
    z = rng.standard_t(p.student_t_df, n) * np.sqrt((p.student_t_df - 2) / p.student_t_df)
    return np.clip(z, -p.innovation_clip_sd, p.innovation_clip_sd)


def _shared_paths(ts: np.ndarray, seed: int, p: SyntheticParams) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 0x0FAC7012])
    n = len(ts)
    sd = p.vol_regime_sd_log
    phi = _ar1_phi(p.vol_regime_half_life_minutes)
    x = _ar1(rng.standard_normal(n) * sd * np.sqrt(1 - phi * phi), phi, rng.standard_normal() * sd)
    scale = seasonal_vol_multiplier(ts, p) * np.exp(x - sd * sd)
    eps, h = _garch(_std_t(rng, n, p), (p.btc_vol_1m_bps * 1e-4) ** 2, p.garch_alpha, p.garch_beta)
    return {"scale": scale, "factor": scale * eps, "factor_var": h}


def btc_factor_returns(market: SyntheticMarket) -> np.ndarray:
    """Return the BTC factor's 1m log returns ``f_t`` of ``market`` (BTCUSDT's returns before tick rounding).

    Regenerated from the market's seed and params (it is shared by all symbols, generated or not).
    """
    ts = market.start_ms + MINUTE_MS * np.arange(market.n_minutes, dtype=np.int64)
    return _shared_paths(ts, market.seed, market.params)["factor"]


# --- planted edge ----------------------------------------------------------------------------------


def edge_loading(meta: SymbolMeta, params: SyntheticParams) -> float:
    """Return ``k * rho_s``, the loading of a symbol's planted drift on BTC's trailing mean return.

    0 for BTCUSDT (the leader) and for the null market (``edge_strength`` 0).
    """
    if meta.symbol == FACTOR_SYMBOL or params.edge_strength == 0:
        return 0.0
    return float(params.edge_strength * np.sqrt(meta.beta**2 + meta.idio_vol_ratio**2))


def planted_drift(btc_returns: np.ndarray, loading: float, window: int = EDGE_WINDOW_MINUTES) -> np.ndarray:
    """Return the planted drift ``d_t = loading / window * sum_{j=1..window} f_{t-j}`` per bar (log return).

    ``btc_returns``: BTC factor 1m log returns ``f``. Uses bars strictly before t (bars before the
    array count as 0): no look-ahead, and ``d_t`` does not depend on ``f_t`` itself.
    """
    f = np.asarray(btc_returns, np.float64)
    c = np.concatenate(([0.0], np.cumsum(f)))
    t = np.arange(len(f))
    return loading / window * (c[t] - c[np.maximum(t - window, 0)])


def expected_drift(
    btc_returns: np.ndarray, loading: float, horizon_bars: int, window: int = EDGE_WINDOW_MINUTES
) -> np.ndarray:
    """Return ``E_t``, the planted drift of bars t + 1 .. t + horizon_bars known at bar t's close (log return).

    ``E_t = loading / window * sum_{i=0..window-1} min(horizon_bars, window - i) f_{t-i}``: the sum of
    ``planted_drift`` over those bars with every BTC return after t set to its mean, 0. Uses bars up
    to and including t.
    """
    if horizon_bars < 1:
        raise ValueError(f"horizon_bars must be ≥ 1, got {horizon_bars}")
    f = np.asarray(btc_returns, np.float64)
    weights = np.minimum(horizon_bars, window - np.arange(window)) / window
    return loading * np.convolve(f, weights)[: len(f)]


# --- one symbol -----------------------------------------------------------------------------------


def _simulate_symbol(
    m: SymbolMeta, ts: np.ndarray, shared: dict[str, np.ndarray], rng: np.random.Generator, p: SyntheticParams
) -> dict[str, dict[str, np.ndarray]]:
    n = len(ts)
    scale = shared["scale"]
    idio_sd = m.idio_vol_ratio * p.btc_vol_1m_bps * 1e-4
    if m.idio_vol_ratio > 0:
        eps, h = _garch(_std_t(rng, n, p), idio_sd**2, p.garch_alpha, p.garch_beta)
    else:
        eps, h = np.zeros(n), np.zeros(n)
    r = m.beta * shared["factor"] + scale * eps
    loading = edge_loading(m, p)
    if loading:  # the null market (edge_strength 0) skips this: bit-identical to a market without it
        r = r + planted_drift(shared["factor"], loading)
    cond_sd = scale * np.sqrt(m.beta**2 * shared["factor_var"] + h)
    # n + 1 points: the open of bar 0, then the close of every bar
    log_last = np.log(m.base_price) + np.concatenate(([0.0], np.cumsum(r)))
    last = np.exp(log_last)

    # last-price candles, in integer ticks
    tick, dec = m.tick_size, _decimals(m.tick_size)
    close_k = np.maximum(np.rint(last / tick), 1).astype(np.int64)
    gap = np.where(rng.random(n) < p.open_gap_probability, np.where(rng.random(n) < 0.5, -1, 1), 0)
    open_k = np.maximum(close_k[:-1] + gap, 1)
    close_k = close_k[1:]
    u = rng.random((2, n))
    hi, lo = _bridge_extremes(
        np.log(open_k * tick), np.log(close_k * tick), (p.intrabar_vol_ratio * cond_sd) ** 2, u
    )
    high_k = np.maximum(np.ceil(np.exp(hi) / tick).astype(np.int64), np.maximum(open_k, close_k))
    low_k = np.clip(np.floor(np.exp(lo) / tick).astype(np.int64), 1, np.minimum(open_k, close_k))
    o, hh, ll, c = (np.round(k * tick, dec) for k in (open_k, high_k, low_k, close_k))

    # volume, trades, taker buys
    sd_ratio = m.beta**2 + m.idio_vol_ratio**2
    unc_sd = np.sqrt(sd_ratio) * p.btc_vol_1m_bps * 1e-4
    z_abs = np.minimum(np.abs(r) / cond_sd, 10.0)
    phi_v = p.volume_noise_ar1
    eta = _ar1(rng.standard_normal(n) * p.volume_noise_sd_log * np.sqrt(1 - phi_v**2), phi_v, 0.0)
    log_quote = (np.log(m.quote_volume_per_minute_usdt) + p.volume_vol_elasticity * np.log(cond_sd / unc_sd)
                 + p.volume_abs_return_loading * (z_abs - 0.8) + eta - 0.5 * p.volume_noise_sd_log**2)  # fmt: skip
    step, qdec = m.quantity_step, _decimals(m.quantity_step)
    vwap = (o + hh + ll + c) / 4
    volume_k = np.maximum(np.rint(np.exp(log_quote) / vwap / step), 1).astype(np.int64)
    buy_share = (
        0.5
        + p.taker_buy_return_loading * np.tanh(r / cond_sd)
        + p.taker_buy_noise_sd * rng.standard_normal(n)
    )
    buy_k = np.rint(np.clip(buy_share, 0.0, 1.0) * volume_k).astype(np.int64)
    volume = np.round(volume_k * step, qdec)
    quote_volume = volume * vwap
    trade_notional = p.mean_trade_notional_usdt * np.sqrt(
        m.quote_volume_per_minute_usdt / p.btc_quote_volume_per_minute_usdt
    )
    trade_count = np.maximum(rng.poisson(quote_volume / trade_notional), 1).astype(np.int64)
    candles = {"ts": ts.copy(), "open": o, "high": hh, "low": ll, "close": c, "volume": volume,
               "quote_volume": quote_volume, "trade_count": trade_count, "taker_buy_volume": np.round(buy_k * step, qdec)}  # fmt: skip

    # premium index (n + 1 points like log_last), index, funding, mark
    noise_scale = np.sqrt(sd_ratio)
    slow = _ou(rng, n + 1, p.premium_slow_sd_bps * 1e-4 * noise_scale, p.premium_slow_half_life_minutes)
    fast = _ou(rng, n + 1, p.premium_fast_sd_bps * 1e-4 * noise_scale, p.premium_fast_half_life_minutes)
    prem = m.premium_mean + slow + fast
    u = rng.random((2, n))
    fast_var = (p.premium_fast_sd_bps * 1e-4 * noise_scale) ** 2 * (
        1 - _ar1_phi(p.premium_fast_half_life_minutes) ** 2
    )
    p_hi, p_lo = _bridge_extremes(prem[:-1], prem[1:], np.full(n, fast_var), u)
    premium = {"ts": ts.copy(), "open": prem[:-1], "high": p_hi, "low": p_lo, "close": prem[1:]}

    index = last / (1 + prem)
    funding_ts, rates = _funding_events(ts, prem[1:], m.funding_interval_hours, p)
    interval = m.funding_interval_hours * HOUR_MS
    point_ms = np.concatenate(([ts[0]], ts + MINUTE_MS))  # time of each of the n + 1 points
    i_last = np.searchsorted(funding_ts, point_ms, side="right") - 1
    interest = p.interest_rate_8h * m.funding_interval_hours / 8
    f_last = np.where(i_last >= 0, rates[np.maximum(i_last, 0)] if len(rates) else interest, interest)
    to_next = ((point_ms // interval + 1) * interval - point_ms) / interval
    window = p.mark_basis_window_minutes
    csum = np.concatenate(([0.0], np.cumsum(prem)))
    lag = np.maximum(np.arange(1, n + 2) - window, 0)
    basis_ma = (csum[1:] - csum[lag]) / (np.arange(1, n + 2) - lag)
    mark_pts = np.median(np.stack([index * (1 + f_last * to_next), index * (1 + basis_ma), last]), axis=0)
    mark_k = np.maximum(np.rint(mark_pts / tick), 1).astype(np.int64)
    mo_k, mc_k = mark_k[:-1], mark_k[1:]
    u = rng.random((2, n))
    mhi, mlo = _bridge_extremes(
        np.log(mo_k * tick), np.log(mc_k * tick), (p.intrabar_vol_ratio * cond_sd) ** 2, u
    )
    mh_k = np.maximum(np.ceil(np.exp(mhi) / tick).astype(np.int64), np.maximum(mo_k, mc_k))
    ml_k = np.clip(np.floor(np.exp(mlo) / tick).astype(np.int64), 1, np.minimum(mo_k, mc_k))
    mark = {"ts": ts.copy(), **{k: np.round(v * tick, dec) for k, v in
                                (("open", mo_k), ("high", mh_k), ("low", ml_k), ("close", mc_k))}}  # fmt: skip
    funding_mark = mark["close"][(funding_ts - ts[0]) // MINUTE_MS - 1]
    funding = {"ts": funding_ts, "funding_rate": rates, "mark_price": funding_mark}
    return {"candles": candles, "mark": mark, "premium": premium, "funding": funding}


def _funding_events(
    ts: np.ndarray, premium_close: np.ndarray, hours: int, p: SyntheticParams
) -> tuple[np.ndarray, np.ndarray]:
    interval = hours * HOUR_MS
    start, end = int(ts[0]), int(ts[-1]) + MINUTE_MS
    first = (start // interval + 1) * interval
    event_ts = np.arange(first, end + 1, interval, dtype=np.int64)
    interest = p.interest_rate_8h * hours / 8
    rates = np.empty(len(event_ts))
    for i, t in enumerate(event_ts):
        lo, hi = max(0, (int(t) - interval - start) // MINUTE_MS), (int(t) - start) // MINUTE_MS
        weights = np.arange(1, hi - lo + 1, dtype=np.float64)
        avg = float(weights @ premium_close[lo:hi] / weights.sum())
        rate = avg + np.clip(interest - avg, -p.funding_premium_clamp, p.funding_premium_clamp)
        rates[i] = np.round(np.clip(rate, -p.funding_rate_cap, p.funding_rate_cap), 8)
    return event_ts, rates


def _ou(rng: np.random.Generator, n: int, sd: float, half_life_minutes: float) -> np.ndarray:
    phi = _ar1_phi(half_life_minutes)
    return _ar1(rng.standard_normal(n) * sd * np.sqrt(1 - phi * phi), phi, rng.standard_normal() * sd)


def _bridge_extremes(
    start: np.ndarray, end: np.ndarray, var: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Max and min of Brownian bridges from start to end with total variance var (exact, via 1 - u)."""
    d = end - start
    log_u = np.log1p(-u)  # u in [0, 1) → log(1 - u) finite
    return (start + (d + np.sqrt(d * d - 2 * var * log_u[0])) / 2,
            start + (d - np.sqrt(d * d - 2 * var * log_u[1])) / 2)  # fmt: skip


@njit(cache=True)
def _ar1(innovations: np.ndarray, phi: float, x0: float) -> np.ndarray:
    out = np.empty_like(innovations)
    x = x0
    for i in range(len(innovations)):
        x = phi * x + innovations[i]
        out[i] = x
    return out


@njit(cache=True)
def _garch(z: np.ndarray, variance: float, alpha: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    omega = variance * (1 - alpha - beta)
    eps = np.empty_like(z)
    h = np.empty_like(z)
    h_prev, e_prev = variance, np.sqrt(variance)  # first h equals the unconditional variance
    for i in range(len(z)):
        h_prev = omega + alpha * e_prev * e_prev + beta * h_prev
        e_prev = np.sqrt(h_prev) * z[i]
        eps[i] = e_prev
        h[i] = h_prev
    return eps, h
