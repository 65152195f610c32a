"""Numba kernel of feature schema v1: one step per closed bar over a flat float64 state vector.

``tf_step`` advances the state of one (symbol, timeframe) by one bar and writes that timeframe's 44
features. Every rolling quantity is O(1) per bar: recursive (EMA, Wilder) or a ring buffer with
running sums. Running sums are re-summed exactly from their ring once per window length and carry
a count of non-zero terms (a window of zeros has a sum of exactly 0, never a rounding residue), so
drift is bounded and flat windows are detected exactly; a variance of at most ``FLAT_REL`` of the
mean square is rounding residue and counts as flat (``_flat``), and an ATR below ``ATR_FLOOR_REL``
of the close counts as 0. Rolling highs/lows keep the extreme and rescan the ring only when the
extreme leaves the window. Classic indicators repeat TA-Lib's arithmetic (seeds, order of
operations), see ``core.features_schema`` for the documented deviations.

``symbol_bar`` is the only place a 1m bar enters a symbol's state: it steps the 1m timeframe,
accumulates the bar into the 15m and 1h bars being built, steps those timeframes when their last
1m bar closes (a higher-timeframe bar is complete only when all its 1m bars were seen, as
``core.resample.resample_candles(complete_only=True)``), and writes the merged 132-feature row.
The batch loops (``run_symbol``, ``run_group*``) and the incremental ``group_update``
call it bar by bar, so batch and incremental features are the same arithmetic, bit for bit.

The feature order here is the schema order (``FEATURES``); ``core.features_schema`` documents it.
Layout constants are module globals, which numba freezes into the compiled (and cached) code.
All numba code of the features lives in this one file on purpose: numba invalidates a cached
function when *its own* source file changes, not when a function it calls (and inlines) changes
in another file, so splitting the kernel would let a stale cache survive an edit.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

FEATURES: tuple[str, ...] = (
    "ret_1", "ret_5", "ret_15", "ret_60", "rsi", "macd_z", "ema_dist_atr", "willr", "adx", "di_diff",
    "atr", "natr", "vol_60", "vol_ratio_15_60", "parkinson_60", "garman_klass_60", "range_atr", "rv_z",
    "bb_z", "skew_60", "kurt_60", "autocorr_60", "body_ratio", "clv", "dist_high_60", "dist_low_60",
    "vol_z", "taker_buy_ratio", "taker_imbalance_15", "mfi", "amihud_60", "vwap_dist_60",
    "funding_rate", "funding_z", "basis", "basis_z", "hour_sin", "hour_cos", "dow_sin", "dow_cos",
    "btc_ret_60", "btc_vol_60", "btc_regime", "btc_corr_60",
)  # fmt: skip
N_TF_FEATURES = len(FEATURES)
(F_RET_1, F_RET_5, F_RET_15, F_RET_60, F_RSI, F_MACD_Z, F_EMA_DIST_ATR, F_WILLR, F_ADX, F_DI_DIFF,
 F_ATR, F_NATR, F_VOL_60, F_VOL_RATIO, F_PARKINSON, F_GARMAN_KLASS, F_RANGE_ATR, F_RV_Z,
 F_BB_Z, F_SKEW, F_KURT, F_AUTOCORR, F_BODY, F_CLV, F_DIST_HIGH, F_DIST_LOW,
 F_VOL_Z, F_TAKER_RATIO, F_TAKER_IMB, F_MFI, F_AMIHUD, F_VWAP_DIST,
 F_FUNDING_RATE, F_FUNDING_Z, F_BASIS, F_BASIS_Z, F_HOUR_SIN, F_HOUR_COS, F_DOW_SIN, F_DOW_COS,
 F_BTC_RET_60, F_BTC_VOL_60, F_BTC_REGIME, F_BTC_CORR) = range(N_TF_FEATURES)  # fmt: skip

# Windows and periods, in bars of the timeframe.
P_ATR = P_RSI = P_ADX = P_WILLR = P_MFI = 14
P_EMA = 50
P_MACD_FAST, P_MACD_SLOW, P_MACD_SIGNAL = 12, 26, 9
P_BB = 20
W_LONG = 60  # returns, range estimators, volume, extremes, basis, BTC correlation
W_SHORT = 15  # short realized volatility, taker imbalance
W_RV_REF = 480  # reference window of rv_z (log vol_60 values)
W_FUNDING = 21  # funding events in the funding_z reference
REGIME_Z = 1.0  # btc_regime: 0 if rv_z < -REGIME_Z, 2 if rv_z > REGIME_Z, else 1
FLAT_REL = 1e-12  # variance below FLAT_REL x mean square counts as a flat window
LOG_VOL_FLOOR = 1e-12
ATR_FLOOR_REL = 1e-6
"""An ATR below this fraction of the bar's close counts as 0: a flat or halted market.

Wilder's ATR only decays in a market that stopped moving (×13/14 a bar: 1e-29 of its value after
900 bars) and never reaches 0 by itself, so without a floor the features in ATR units explode
(``ema_dist_atr`` 1e17 and beyond) instead of being NaN. With the floor the feature ``atr`` (and
``natr``) is 0 there and the ATR-unit features are NaN; ``core.ta.atr_wilder`` returns 0 too, so
every consumer of the label ATR (``core.labels.label_atr``) treats the bar as having no ATR: the
labels mark it ATR_UNAVAILABLE, the policy decides FLAT (NO_ATR), the simulator adds no ATR
slippage. Only the value handed out is floored: Wilder's recursion carries on from its unfloored
state, so the ATR after the flat stretch is TA-Lib's. Real markets stay far above it (lowest
ATR/close in ../shared/data: 3e-5, XAUUSDT 5m; 4e-5, BTCUSDT 1m).
"""

# floats, not ints: numba compiles a separate copy of a callee for each literal int argument
_W_LONG_F = float(W_LONG)
_W_SHORT_F = float(W_SHORT)
_W_RV_REF_F = float(W_RV_REF)
_K_EMA = 2.0 / (P_EMA + 1)
_K_FAST = 2.0 / (P_MACD_FAST + 1)
_K_SLOW = 2.0 / (P_MACD_SLOW + 1)
_K_SIGNAL = 2.0 / (P_MACD_SIGNAL + 1)
_GK_C = 2.0 * math.log(2.0) - 1.0
_PK_DEN = W_LONG * 4.0 * math.log(2.0)
_MACD_SEED = P_MACD_SLOW - 1  # bar index of the first MACD value (TA-Lib aligns both EMAs there)
_MACD_FIRST = _MACD_SEED + P_MACD_SIGNAL - 1


class _Alloc:
    def __init__(self) -> None:
        self.n = 0

    def take(self, k: int = 1) -> int:
        off = self.n
        self.n += k
        return off


_a = _Alloc()
# --- per-timeframe state (offsets from the timeframe's base) ---
S_N, S_LAST_TS, S_PREV_C, S_PREV_H, S_PREV_L, S_PREV_MC, S_R1 = (_a.take() for _ in range(7))
S_ATR_SUM, S_ATR, S_RSI_GAIN, S_RSI_LOSS, S_RSI = (_a.take() for _ in range(5))
S_DM_P, S_DM_M, S_ADX_TR, S_SUM_DX, S_ADX, S_DI = (_a.take() for _ in range(6))
S_EMA_SUM, S_EMA, S_SLOW_SUM, S_SLOW, S_FAST_SUM, S_FAST, S_SIG_SUM, S_SIG = (_a.take() for _ in range(8))
S_R_S1, S_R_S2, S_R_S3, S_R_S4, S_R_ABS, S_R_P, S_R_NZ = (_a.take() for _ in range(7))
S_Q_S1, S_Q_S2, S_Q_NZ = (_a.take() for _ in range(3))
S_MX60, S_MN60, S_MX14, S_MN14 = (_a.take() for _ in range(4))
S_PK, S_PK_NZ, S_GK, S_GK_NZ = (_a.take() for _ in range(4))
S_V1, S_V2, S_V_NZ, S_V15, S_V15_NZ, S_TPV, S_CV = (_a.take() for _ in range(7))
S_TB, S_TB_NZ, S_TB_NAN = (_a.take() for _ in range(3))
S_MF_POS, S_MF_POS_NZ, S_MF_NEG, S_MF_NEG_NZ, S_PREV_TP = (_a.take() for _ in range(5))
S_BA1, S_BA2, S_BA_NZ, S_BA_NAN = (_a.take() for _ in range(4))
S_LV_N, S_LV1, S_LV2 = (_a.take() for _ in range(3))
S_F_TIME, S_F_N, S_F_Z = (_a.take() for _ in range(3))
S_CX, S_CY, S_CXX, S_CYY, S_CXY, S_C_NZ, S_C_BAD = (_a.take() for _ in range(7))
R_LC = _a.take(W_LONG + 1)  # log closes: ret_k for k ≤ 60
R_C = _a.take(P_BB)  # closes for Bollinger
R_R = _a.take(W_LONG)  # log returns
R_H = _a.take(W_LONG)
R_L = _a.take(W_LONG)
R_PK = _a.take(W_LONG)
R_GK = _a.take(W_LONG)
R_V = _a.take(W_LONG)
R_TPV = _a.take(W_LONG)
R_CV = _a.take(W_LONG)
R_TB = _a.take(W_SHORT)
R_MP = _a.take(P_MFI)
R_MN = _a.take(P_MFI)
R_BA = _a.take(W_LONG)
R_LV = _a.take(W_RV_REF)
R_F = _a.take(W_FUNDING)
R_CX = _a.take(W_LONG)
R_CY = _a.take(W_LONG)
TF_STATE_LEN = _a.n

#: BTC context per timeframe: bar ts, last log return, ret_60, vol_60, regime code.
X_TS, X_R1, X_RET_60, X_VOL_60, X_REGIME = range(5)
CROSS_TF_LEN = 5

_MINUTE_MS = 60_000
_DAY_MS = 86_400_000
_minutes = np.arange(1440) / 1440.0
_HOUR_SIN = np.sin(2 * np.pi * _minutes)
_HOUR_COS = np.cos(2 * np.pi * _minutes)
_DOW_SIN = np.sin(2 * np.pi * np.arange(7) / 7.0)
_DOW_COS = np.cos(2 * np.pi * np.arange(7) / 7.0)


def new_tf_state() -> np.ndarray:
    """Return the initial state vector of one (symbol, timeframe)."""
    s = np.zeros(TF_STATE_LEN)
    for k in (S_LAST_TS, S_PREV_C, S_PREV_H, S_PREV_L, S_PREV_MC, S_R1, S_ATR, S_RSI, S_ADX, S_DI, S_EMA,
              S_SLOW, S_FAST, S_SIG, S_MX60, S_MN60, S_MX14, S_MN14, S_PREV_TP, S_F_TIME, S_F_Z):  # fmt: skip
        s[k] = np.nan
    return s


@nb.njit(cache=True)
def _nz(s, k, new, old, has_old):
    """Update and return the count of non-zero terms of a window (exact, unlike a running sum)."""
    nz = s[k]
    if has_old and old != 0.0:
        nz -= 1.0
    if new != 0.0:
        nz += 1.0
    s[k] = nz
    return nz


@nb.njit(cache=True)
def _acc(s, k, new, old, has_old, nz):
    """Running sum: drop ``old`` (TA-Lib order: subtract first), add ``new``; exactly 0 when ``nz`` is 0."""
    if nz == 0.0:
        s[k] = 0.0
    elif has_old:
        s[k] = (s[k] - old) + new
    else:
        s[k] = s[k] + new


@nb.njit(cache=True)
def _resum(s, ring, w, k_sum):
    acc = 0.0
    for i in range(w):
        acc += s[ring + i]
    s[k_sum] = acc


@nb.njit(cache=True)
def _flat(var, mean_square):
    """True when a window's variance is rounding residue: at most FLAT_REL x its mean square."""
    return var <= FLAT_REL * mean_square


@nb.njit(cache=True)
def _var(s1, s2, n):
    mean = s1 / n
    raw = s2 / n
    var = raw - mean * mean
    if _flat(var, raw):
        var = 0.0
    return mean, var


@nb.njit(cache=True)
def _extreme_last(s, ring, n, k, is_max):
    """Max (or min) of the last k values pushed into a W_LONG ring after push number n (0-based)."""
    m = s[ring + n % W_LONG]
    for j in range(1, k):
        x = s[ring + (n - j) % W_LONG]
        if x > m if is_max else x < m:
            m = x
    return m


@nb.njit(cache=True)
def _update_extreme(s, k, ring, n, win, x, leaving, is_max):
    """Rolling max (min) over ``win`` bars: O(1) unless the extreme leaves the window (then rescan)."""
    m = s[k]
    if n == 0 or (x >= m if is_max else x <= m):
        s[k] = x
    elif n >= win and leaving == m:
        s[k] = _extreme_last(s, ring, n, win, is_max)


@nb.njit(cache=True)
def tf_step(s, b, ts, o, h, lo, c, v, tb, mh, ml, mc, prem, frate, ftime, out, ob):
    """Advance the (symbol, timeframe) state at ``s[b:]`` by one closed bar; write features 0..39 at ``out[ob:]``.

    Uses this bar and the state only (bars up to and including this one). The BTC features
    (40..43) are written by ``tf_cross``.
    """
    nan = np.nan
    n = int(s[b + S_N])
    pc = s[b + S_PREV_C]

    # --- returns from the log-close ring ---
    lc = math.log(c)
    wl = W_LONG + 1
    s[b + R_LC + n % wl] = lc
    r = lc - s[b + R_LC + (n - 1) % wl] if n >= 1 else nan
    s[b + S_R1] = r
    out[ob + F_RET_1] = r
    out[ob + F_RET_5] = lc - s[b + R_LC + (n - 5) % wl] if n >= 5 else nan
    out[ob + F_RET_15] = lc - s[b + R_LC + (n - 15) % wl] if n >= 15 else nan
    out[ob + F_RET_60] = lc - s[b + R_LC + (n - 60) % wl] if n >= 60 else nan

    # --- ATR (Wilder, TA-Lib seed): true range of the mark price when this bar and the previous have it ---
    atr = s[b + S_ATR]
    if n >= 1:
        pmc = s[b + S_PREV_MC]
        if mh == mh and ml == ml and pmc == pmc:
            tr = max(mh - ml, abs(mh - pmc), abs(ml - pmc))
        else:
            tr = max(h - lo, abs(h - pc), abs(lo - pc))
        if n <= P_ATR:
            s[b + S_ATR_SUM] += tr
            if n == P_ATR:
                atr = s[b + S_ATR_SUM] / P_ATR
        else:
            atr = (atr * (P_ATR - 1) + tr) / P_ATR
        s[b + S_ATR] = atr
    if atr < ATR_FLOOR_REL * c:
        atr = 0.0  # a flat market (see ATR_FLOOR_REL); the state keeps Wilder's value
    out[ob + F_ATR] = atr
    out[ob + F_NATR] = atr / c * 100.0
    atr_ok = atr > 0.0  # features in ATR units are NaN while ATR warms up or is 0 (flat market)
    out[ob + F_RANGE_ATR] = (h - lo) / atr if atr_ok else nan

    # --- RSI (TA-Lib order of operations) ---
    if n >= 1:
        d = c - pc
        gain = s[b + S_RSI_GAIN]
        loss = s[b + S_RSI_LOSS]
        if n > P_RSI:
            loss *= P_RSI - 1
            gain *= P_RSI - 1
        if d < 0:
            loss -= d
        else:
            gain += d
        if n >= P_RSI:
            loss /= P_RSI
            gain /= P_RSI
            den = gain + loss
            s[b + S_RSI] = 100.0 * (gain / den) if den != 0.0 else 50.0
        s[b + S_RSI_GAIN] = gain
        s[b + S_RSI_LOSS] = loss
    out[ob + F_RSI] = s[b + S_RSI]

    # --- ADX and DI (TA-Lib: 13 summed bars, Wilder-smoothed sums, first ADX at bar 27) ---
    if n >= 1:
        ph = s[b + S_PREV_H]
        pl = s[b + S_PREV_L]
        dp = h - ph
        dm = pl - lo
        mdm = s[b + S_DM_M]
        pdm = s[b + S_DM_P]
        tr2 = max(h - lo, abs(h - pc), abs(lo - pc))
        if n < P_ADX:
            if dm > 0 and dp < dm:
                mdm += dm
            elif dp > 0 and dp > dm:
                pdm += dp
            s[b + S_ADX_TR] += tr2
        else:
            mdm -= mdm / P_ADX
            pdm -= pdm / P_ADX
            if dm > 0 and dp < dm:
                mdm += dm
            elif dp > 0 and dp > dm:
                pdm += dp
            atr2 = s[b + S_ADX_TR]
            atr2 = atr2 - atr2 / P_ADX + tr2
            s[b + S_ADX_TR] = atr2
            di = 0.0
            if atr2 != 0.0:
                mdi = 100.0 * (mdm / atr2)
                pdi = 100.0 * (pdm / atr2)
                di = pdi - mdi
                sdi = mdi + pdi
                if sdi != 0.0:
                    dx = 100.0 * (abs(mdi - pdi) / sdi)
                    if n < 2 * P_ADX:
                        s[b + S_SUM_DX] += dx
                    else:
                        s[b + S_ADX] = (s[b + S_ADX] * (P_ADX - 1) + dx) / P_ADX
            if n == 2 * P_ADX - 1:
                s[b + S_ADX] = s[b + S_SUM_DX] / P_ADX
            s[b + S_DI] = di
        s[b + S_DM_M] = mdm
        s[b + S_DM_P] = pdm
    out[ob + F_ADX] = s[b + S_ADX]
    out[ob + F_DI_DIFF] = s[b + S_DI]

    # --- EMA(50) and MACD(12, 26, 9) with TA-Lib's seeds ---
    if n < P_EMA:
        s[b + S_EMA_SUM] += c
        if n == P_EMA - 1:
            s[b + S_EMA] = s[b + S_EMA_SUM] / P_EMA
    else:
        e = s[b + S_EMA]
        s[b + S_EMA] = ((c - e) * _K_EMA) + e
    out[ob + F_EMA_DIST_ATR] = (c - s[b + S_EMA]) / atr if atr_ok else nan
    hist = nan
    if n <= _MACD_SEED:
        s[b + S_SLOW_SUM] += c
        if n > _MACD_SEED - P_MACD_FAST:
            s[b + S_FAST_SUM] += c
        if n == _MACD_SEED:
            s[b + S_SLOW] = s[b + S_SLOW_SUM] / P_MACD_SLOW
            s[b + S_FAST] = s[b + S_FAST_SUM] / P_MACD_FAST
    else:
        e = s[b + S_SLOW]
        s[b + S_SLOW] = ((c - e) * _K_SLOW) + e
        e = s[b + S_FAST]
        s[b + S_FAST] = ((c - e) * _K_FAST) + e
    if n >= _MACD_SEED:
        macd = s[b + S_FAST] - s[b + S_SLOW]
        if n <= _MACD_FIRST:
            s[b + S_SIG_SUM] += macd
            if n == _MACD_FIRST:
                s[b + S_SIG] = s[b + S_SIG_SUM] / P_MACD_SIGNAL
        else:
            e = s[b + S_SIG]
            s[b + S_SIG] = ((macd - e) * _K_SIGNAL) + e
        if n >= _MACD_FIRST:
            hist = macd - s[b + S_SIG]
    out[ob + F_MACD_Z] = hist / atr if atr_ok else nan

    # --- Bollinger z (20, ddof 0): exact two-pass over the ring ---
    s[b + R_C + n % P_BB] = c
    if n >= P_BB - 1:
        acc = 0.0
        for i in range(P_BB):
            acc += s[b + R_C + i]
        mean = acc / P_BB
        acc = 0.0
        for i in range(P_BB):
            dd = s[b + R_C + i] - mean
            acc += dd * dd
        var = acc / P_BB
        out[ob + F_BB_Z] = (c - mean) / math.sqrt(var) if var > FLAT_REL * FLAT_REL * mean * mean else 0.0
    else:
        out[ob + F_BB_Z] = nan

    # --- log-return window (60): moments, short window (15), lag-1 autocorrelation, |r| ---
    if n >= 1:
        m = n - 1  # returns pushed before this one
        pos = m % W_LONG
        has_old = m >= W_LONG
        old = s[b + R_R + pos] if has_old else 0.0
        if m >= 1:
            prev_r = s[b + R_R + (m - 1) % W_LONG]
            s[b + S_R_P] += prev_r * r
        if has_old:
            s[b + S_R_P] -= old * s[b + R_R + (m + 1) % W_LONG]
        q_old = s[b + R_R + (m - W_SHORT) % W_LONG] if m >= W_SHORT else 0.0
        s[b + R_R + pos] = r
        nz = _nz(s, b + S_R_NZ, r, old, has_old)
        r2 = r * r
        o2 = old * old
        _acc(s, b + S_R_S1, r, old, has_old, nz)
        _acc(s, b + S_R_S2, r2, o2, has_old, nz)
        _acc(s, b + S_R_S3, r2 * r, o2 * old, has_old, nz)
        _acc(s, b + S_R_S4, r2 * r2, o2 * o2, has_old, nz)
        _acc(s, b + S_R_ABS, abs(r), abs(old), has_old, nz)
        if nz == 0.0:
            s[b + S_R_P] = 0.0
        q_has_old = m >= W_SHORT
        qnz = _nz(s, b + S_Q_NZ, r, q_old, q_has_old)
        _acc(s, b + S_Q_S1, r, q_old, q_has_old, qnz)
        _acc(s, b + S_Q_S2, r2, q_old * q_old, q_has_old, qnz)
        if (m + 1) % W_LONG == 0:  # exact re-sum once per window
            acc1 = acc2 = acc3 = acc4 = acca = 0.0
            for i in range(W_LONG):
                x = s[b + R_R + i]
                x2 = x * x
                acc1 += x
                acc2 += x2
                acc3 += x2 * x
                acc4 += x2 * x2
                acca += abs(x)
            accp = 0.0
            for j in range(m - W_LONG + 2, m + 1):
                accp += s[b + R_R + (j - 1) % W_LONG] * s[b + R_R + j % W_LONG]
            accq1 = accq2 = 0.0
            for j in range(m - W_SHORT + 1, m + 1):
                x = s[b + R_R + j % W_LONG]
                accq1 += x
                accq2 += x * x
            if s[b + S_R_NZ] > 0.0:
                s[b + S_R_S1], s[b + S_R_S2], s[b + S_R_S3], s[b + S_R_S4] = acc1, acc2, acc3, acc4
                s[b + S_R_ABS], s[b + S_R_P] = acca, accp
            if s[b + S_Q_NZ] > 0.0:
                s[b + S_Q_S1], s[b + S_Q_S2] = accq1, accq2
    _return_window_features(s, b, n, r, out, ob)

    # --- range estimators (60) and candle shape ---
    lhl = math.log(h / lo)
    lco = math.log(c / o)
    pk = lhl * lhl
    gk = 0.5 * pk - _GK_C * lco * lco
    pos = n % W_LONG
    has_old = n >= W_LONG
    old_pk = s[b + R_PK + pos]
    old_gk = s[b + R_GK + pos]
    _acc(s, b + S_PK, pk, old_pk, has_old, _nz(s, b + S_PK_NZ, pk, old_pk, has_old))
    _acc(s, b + S_GK, gk, old_gk, has_old, _nz(s, b + S_GK_NZ, gk, old_gk, has_old))
    s[b + R_PK + pos] = pk
    s[b + R_GK + pos] = gk
    if (n + 1) % W_LONG == 0:
        if s[b + S_PK_NZ] > 0.0:
            _resum(s, b + R_PK, W_LONG, b + S_PK)
        if s[b + S_GK_NZ] > 0.0:
            _resum(s, b + R_GK, W_LONG, b + S_GK)
    if n >= W_LONG - 1:
        out[ob + F_PARKINSON] = math.sqrt(s[b + S_PK] / _PK_DEN)
        out[ob + F_GARMAN_KLASS] = math.sqrt(max(s[b + S_GK] / W_LONG, 0.0))
    else:
        out[ob + F_PARKINSON] = nan
        out[ob + F_GARMAN_KLASS] = nan
    rng = h - lo
    out[ob + F_BODY] = (c - o) / rng if rng > 0.0 else 0.0
    out[ob + F_CLV] = ((c - lo) - (h - c)) / rng if rng > 0.0 else 0.0

    # --- rolling extremes (60 and 14), Williams %R, distance to the 60-bar high/low ---
    old_h60 = s[b + R_H + pos]
    old_l60 = s[b + R_L + pos]
    old_h14 = s[b + R_H + (n - P_WILLR) % W_LONG]
    old_l14 = s[b + R_L + (n - P_WILLR) % W_LONG]
    s[b + R_H + pos] = h
    s[b + R_L + pos] = lo
    _update_extreme(s, b + S_MX60, b + R_H, n, W_LONG, h, old_h60, True)
    _update_extreme(s, b + S_MN60, b + R_L, n, W_LONG, lo, old_l60, False)
    _update_extreme(s, b + S_MX14, b + R_H, n, P_WILLR, h, old_h14, True)
    _update_extreme(s, b + S_MN14, b + R_L, n, P_WILLR, lo, old_l14, False)
    if n >= P_WILLR - 1:
        hh = s[b + S_MX14]
        ll = s[b + S_MN14]
        out[ob + F_WILLR] = (hh - c) / ((hh - ll) / (-100.0)) if hh != ll else -50.0
    else:
        out[ob + F_WILLR] = nan
    if n >= W_LONG - 1:
        out[ob + F_DIST_HIGH] = c / s[b + S_MX60] - 1.0
        out[ob + F_DIST_LOW] = c / s[b + S_MN60] - 1.0
    else:
        out[ob + F_DIST_HIGH] = nan
        out[ob + F_DIST_LOW] = nan

    _volume_features(s, b, n, h, lo, c, v, tb, out, ob)
    _carry_features(s, b, n, ts, c, mc, prem, frate, ftime, out, ob)

    s[b + S_N] = n + 1
    s[b + S_LAST_TS] = ts
    s[b + S_PREV_C] = c
    s[b + S_PREV_H] = h
    s[b + S_PREV_L] = lo
    s[b + S_PREV_MC] = mc


@nb.njit(cache=True)
def _return_window_features(s, b, n, r, out, ob):
    nan = np.nan
    if n < W_LONG:
        for k in (F_VOL_60, F_VOL_RATIO, F_SKEW, F_KURT, F_AUTOCORR, F_AMIHUD, F_RV_Z):
            out[ob + k] = nan
        return
    s1 = s[b + S_R_S1]
    s2 = s[b + S_R_S2]
    mean, m2 = _var(s1, s2, _W_LONG_F)
    vol = math.sqrt(m2)
    out[ob + F_VOL_60] = vol
    _, q2 = _var(s[b + S_Q_S1], s[b + S_Q_S2], _W_SHORT_F)
    out[ob + F_VOL_RATIO] = math.sqrt(q2) / vol if vol > 0.0 else nan
    if m2 > 0.0:
        e2 = s2 / W_LONG
        e3 = s[b + S_R_S3] / W_LONG
        e4 = s[b + S_R_S4] / W_LONG
        mm = mean * mean
        m3 = e3 - 3.0 * mean * e2 + 2.0 * mm * mean
        m4 = e4 - 4.0 * mean * e3 + 6.0 * mm * e2 - 3.0 * mm * mm
        out[ob + F_SKEW] = m3 / (m2 * vol)
        out[ob + F_KURT] = m4 / (m2 * m2) - 3.0
    else:
        out[ob + F_SKEW] = nan
        out[ob + F_KURT] = nan
    # lag-1 autocorrelation: Pearson over the 59 adjacent pairs of the window. A sub-window (the
    # window without its newest or without its oldest return) of zero returns is flat, so NaN, by
    # its count of non-zero returns: its sums, differences of running sums, keep a rounding residue
    # of returns that left the window earlier, unrelated in size to the window's own returns.
    m = n - 1
    oldest = s[b + R_R + (m + 1) % W_LONG]
    pairs = W_LONG - 1.0
    nz = s[b + S_R_NZ]
    nz_x = nz - (1.0 if r != 0.0 else 0.0)
    nz_y = nz - (1.0 if oldest != 0.0 else 0.0)
    out[ob + F_AUTOCORR] = nan
    if nz_x > 0.0 and nz_y > 0.0:
        mx, vx = _var(s1 - r, s2 - r * r, pairs)
        my, vy = _var(s1 - oldest, s2 - oldest * oldest, pairs)
        if vx > 0.0 and vy > 0.0:
            out[ob + F_AUTOCORR] = (s[b + S_R_P] / pairs - mx * my) / math.sqrt(vx * vy)
    # rv_z: z of log vol_60 against the last W_RV_REF values
    lv = math.log(max(vol, LOG_VOL_FLOOR))
    k2 = int(s[b + S_LV_N])
    pos = k2 % W_RV_REF
    has_old = k2 >= W_RV_REF
    old = s[b + R_LV + pos] if has_old else 0.0
    s[b + R_LV + pos] = lv
    s[b + S_LV1] += lv - old
    s[b + S_LV2] += lv * lv - old * old
    if (k2 + 1) % W_RV_REF == 0:
        a1 = a2 = 0.0
        for i in range(W_RV_REF):
            x = s[b + R_LV + i]
            a1 += x
            a2 += x * x
        s[b + S_LV1] = a1
        s[b + S_LV2] = a2
    s[b + S_LV_N] = k2 + 1
    if k2 + 1 >= W_RV_REF:
        mean_lv, var_lv = _var(s[b + S_LV1], s[b + S_LV2], _W_RV_REF_F)
        out[ob + F_RV_Z] = (lv - mean_lv) / math.sqrt(var_lv) if var_lv > 0.0 else 0.0
    else:
        out[ob + F_RV_Z] = nan


@nb.njit(cache=True)
def _volume_features(s, b, n, h, lo, c, v, tb, out, ob):
    nan = np.nan
    pos = n % W_LONG
    has_old = n >= W_LONG
    old_v = s[b + R_V + pos]
    tp = (h + lo + c) / 3.0
    tpv = tp * v
    cvv = c * v
    # sums over 60 bars; all of V, TP·V and C·V are zero exactly when V is
    nz = _nz(s, b + S_V_NZ, v, old_v, has_old)
    _acc(s, b + S_V1, v, old_v, has_old, nz)
    _acc(s, b + S_V2, v * v, old_v * old_v, has_old, nz)
    _acc(s, b + S_TPV, tpv, s[b + R_TPV + pos], has_old, nz)
    _acc(s, b + S_CV, cvv, s[b + R_CV + pos], has_old, nz)
    old15 = s[b + R_V + (n - W_SHORT) % W_LONG]
    has15 = n >= W_SHORT
    _acc(s, b + S_V15, v, old15, has15, _nz(s, b + S_V15_NZ, v, old15, has15))
    s[b + R_V + pos] = v
    s[b + R_TPV + pos] = tpv
    s[b + R_CV + pos] = cvv
    if (n + 1) % W_LONG == 0 and s[b + S_V_NZ] > 0.0:
        a1 = a2 = a3 = a4 = 0.0
        for i in range(W_LONG):
            x = s[b + R_V + i]
            a1 += x
            a2 += x * x
            a3 += s[b + R_TPV + i]
            a4 += s[b + R_CV + i]
        s[b + S_V1], s[b + S_V2], s[b + S_TPV], s[b + S_CV] = a1, a2, a3, a4
        if s[b + S_V15_NZ] > 0.0:
            a1 = 0.0
            for j in range(n - W_SHORT + 1, n + 1):
                a1 += s[b + R_V + j % W_LONG]
            s[b + S_V15] = a1
    if n >= W_LONG - 1:
        mean, var = _var(s[b + S_V1], s[b + S_V2], _W_LONG_F)
        out[ob + F_VOL_Z] = (v - mean) / math.sqrt(var) if var > 0.0 else 0.0
        out[ob + F_VWAP_DIST] = c * s[b + S_V1] / s[b + S_TPV] - 1.0 if s[b + S_V1] > 0.0 else nan
    else:
        out[ob + F_VOL_Z] = nan
        out[ob + F_VWAP_DIST] = nan
    if n >= W_LONG:
        cv = s[b + S_CV]
        out[ob + F_AMIHUD] = 1e6 * s[b + S_R_ABS] / cv if cv > 0.0 else nan

    # taker buys (15): NaN-aware, the imbalance needs all 15 bars
    tpos = n % W_SHORT
    t_has_old = n >= W_SHORT
    old_tb = s[b + R_TB + tpos] if t_has_old else 0.0
    if old_tb != old_tb:
        s[b + S_TB_NAN] -= 1.0
        old_tb = 0.0
    new_tb = tb
    if tb != tb:
        s[b + S_TB_NAN] += 1.0
        new_tb = 0.0
    _acc(s, b + S_TB, new_tb, old_tb, t_has_old, _nz(s, b + S_TB_NZ, new_tb, old_tb, t_has_old))
    s[b + R_TB + tpos] = tb
    if (n + 1) % W_SHORT == 0 and s[b + S_TB_NZ] > 0.0:
        a1 = 0.0
        for i in range(W_SHORT):
            x = s[b + R_TB + i]
            if x == x:
                a1 += x
        s[b + S_TB] = a1
    out[ob + F_TAKER_RATIO] = tb / v if v > 0.0 else nan
    if n >= W_SHORT - 1 and s[b + S_TB_NAN] == 0.0 and s[b + S_V15] > 0.0:
        out[ob + F_TAKER_IMB] = 2.0 * s[b + S_TB] / s[b + S_V15] - 1.0
    else:
        out[ob + F_TAKER_IMB] = nan

    # MFI (14): positive and negative money flows of the typical price (TA-Lib)
    if n >= 1:
        ptp = s[b + S_PREV_TP]
        d = tp - ptp
        # TA-Lib's scaled dead zone: a typical price equal up to rounding is no movement
        flow = 0.0 if abs(d) <= 1e-14 * (abs(tp) + abs(ptp)) else tpv
        pf = 0.0 if d < 0.0 else flow
        nf = flow if d < 0.0 else 0.0
        k = n - 1
        mpos = k % P_MFI
        m_has_old = k >= P_MFI
        op = s[b + R_MP + mpos]
        on = s[b + R_MN + mpos]
        _acc(s, b + S_MF_POS, pf, op, m_has_old, _nz(s, b + S_MF_POS_NZ, pf, op, m_has_old))
        _acc(s, b + S_MF_NEG, nf, on, m_has_old, _nz(s, b + S_MF_NEG_NZ, nf, on, m_has_old))
        s[b + R_MP + mpos] = pf
        s[b + R_MN + mpos] = nf
        if (k + 1) % P_MFI == 0:
            if s[b + S_MF_POS_NZ] > 0.0:
                _resum(s, b + R_MP, P_MFI, b + S_MF_POS)
            if s[b + S_MF_NEG_NZ] > 0.0:
                _resum(s, b + R_MN, P_MFI, b + S_MF_NEG)
    s[b + S_PREV_TP] = tp
    if n >= P_MFI:
        p = s[b + S_MF_POS]
        tot = p + s[b + S_MF_NEG]
        p = 0.0 if p < 0.0 else (tot if p > tot else p)
        out[ob + F_MFI] = 100.0 * (p / tot) if tot > 0.0 else 50.0
    else:
        out[ob + F_MFI] = nan


@nb.njit(cache=True)
def _carry_features(s, b, n, ts, c, mc, prem, frate, ftime, out, ob):
    nan = np.nan
    # funding: the rate in force; z against the last W_FUNDING settled events (two-pass on each event)
    if ftime == ftime and ftime != s[b + S_F_TIME] and frate == frate:
        k = int(s[b + S_F_N])
        s[b + R_F + k % W_FUNDING] = frate
        s[b + S_F_N] = k + 1
        s[b + S_F_TIME] = ftime
        if k + 1 >= W_FUNDING:
            acc = 0.0
            for i in range(W_FUNDING):
                acc += s[b + R_F + i]
            mean = acc / W_FUNDING
            acc = 0.0
            for i in range(W_FUNDING):
                d = s[b + R_F + i] - mean
                acc += d * d
            var = acc / W_FUNDING
            # equal rates leave a rounding residue in var (z would be ±1), hence the relative test
            s[b + S_F_Z] = 0.0 if _flat(var, var + mean * mean) else (frate - mean) / math.sqrt(var)
    out[ob + F_FUNDING_RATE] = frate
    out[ob + F_FUNDING_Z] = s[b + S_F_Z] if frate == frate else nan

    # basis: premium index close if known, else (last - mark) / mark; z over 60 bars with no gap
    basis = prem if prem == prem else ((c - mc) / mc if mc == mc else nan)
    out[ob + F_BASIS] = basis
    pos = n % W_LONG
    has_old = n >= W_LONG
    old = s[b + R_BA + pos] if has_old else 0.0
    if old != old:
        s[b + S_BA_NAN] -= 1.0
        old = 0.0
    new = basis
    if basis != basis:
        s[b + S_BA_NAN] += 1.0
        new = 0.0
    nz = _nz(s, b + S_BA_NZ, new, old, has_old)
    _acc(s, b + S_BA1, new, old, has_old, nz)
    _acc(s, b + S_BA2, new * new, old * old, has_old, nz)
    s[b + R_BA + pos] = basis
    if (n + 1) % W_LONG == 0 and s[b + S_BA_NZ] > 0.0:
        a1 = a2 = 0.0
        for i in range(W_LONG):
            x = s[b + R_BA + i]
            if x == x:
                a1 += x
                a2 += x * x
        s[b + S_BA1] = a1
        s[b + S_BA2] = a2
    if n >= W_LONG - 1 and s[b + S_BA_NAN] == 0.0:
        mean, var = _var(s[b + S_BA1], s[b + S_BA2], _W_LONG_F)
        out[ob + F_BASIS_Z] = (basis - mean) / math.sqrt(var) if var > 0.0 else 0.0
    else:
        out[ob + F_BASIS_Z] = nan

    # time of the bar's open, UTC
    t = int(ts)
    minute = (t % _DAY_MS) // _MINUTE_MS
    dow = (t // _DAY_MS + 3) % 7  # epoch day 0 was a Thursday; 0 = Monday
    out[ob + F_HOUR_SIN] = _HOUR_SIN[minute]
    out[ob + F_HOUR_COS] = _HOUR_COS[minute]
    out[ob + F_DOW_SIN] = _DOW_SIN[dow]
    out[ob + F_DOW_COS] = _DOW_COS[dow]


@nb.njit(cache=True)
def regime_code(rv_z):
    """0 calm, 1 normal, 2 high volatility, NaN while rv_z warms up."""
    if rv_z != rv_z:
        return np.nan
    if rv_z > REGIME_Z:
        return 2.0
    if rv_z < -REGIME_Z:
        return 0.0
    return 1.0


@nb.njit(cache=True)
def tf_cross(s, b, ts, out, ob, cross, xb, is_btc):
    """Write the BTC features (40..43) of a bar just stepped by ``tf_step``.

    For BTC itself, first publish its context (bar ts, return, ret_60, vol_60, regime) into
    ``cross[xb:]``; other symbols read it. The BTC return pairs with the symbol's return only when
    both belong to the same bar (same open ts); otherwise the pair counts as missing.
    """
    r = s[b + S_R1]
    if is_btc:
        cross[xb + X_TS] = ts
        cross[xb + X_R1] = r
        cross[xb + X_RET_60] = out[ob + F_RET_60]
        cross[xb + X_VOL_60] = out[ob + F_VOL_60]
        cross[xb + X_REGIME] = regime_code(out[ob + F_RV_Z])
    out[ob + F_BTC_RET_60] = cross[xb + X_RET_60]
    out[ob + F_BTC_VOL_60] = cross[xb + X_VOL_60]
    out[ob + F_BTC_REGIME] = cross[xb + X_REGIME]
    y = cross[xb + X_R1] if cross[xb + X_TS] == ts else np.nan
    x = r
    n = int(s[b + S_N]) - 1  # this bar's index (tf_step has counted it)
    pos = n % W_LONG
    has_old = n >= W_LONG
    ox = s[b + R_CX + pos]
    oy = s[b + R_CY + pos]
    if has_old:
        if ox != ox or oy != oy:
            s[b + S_C_BAD] -= 1.0
            ox = oy = 0.0
    else:
        ox = oy = 0.0
    if x != x or y != y:
        s[b + S_C_BAD] += 1.0
        nx = ny = 0.0
    else:
        nx, ny = x, y
    s[b + R_CX + pos] = x
    s[b + R_CY + pos] = y
    # non-zero count of the pair (x, y): both sums of a window without any non-zero pair are 0
    nz = _nz(
        s,
        b + S_C_NZ,
        1.0 if (nx != 0.0 or ny != 0.0) else 0.0,
        1.0 if (ox != 0.0 or oy != 0.0) else 0.0,
        has_old,
    )
    _acc(s, b + S_CX, nx, ox, has_old, nz)
    _acc(s, b + S_CY, ny, oy, has_old, nz)
    _acc(s, b + S_CXX, nx * nx, ox * ox, has_old, nz)
    _acc(s, b + S_CYY, ny * ny, oy * oy, has_old, nz)
    _acc(s, b + S_CXY, nx * ny, ox * oy, has_old, nz)
    if (n + 1) % W_LONG == 0 and s[b + S_C_NZ] > 0.0:
        a1 = a2 = a3 = a4 = a5 = 0.0
        for i in range(W_LONG):
            px = s[b + R_CX + i]
            py = s[b + R_CY + i]
            if px == px and py == py:
                a1 += px
                a2 += py
                a3 += px * px
                a4 += py * py
                a5 += px * py
        s[b + S_CX], s[b + S_CY], s[b + S_CXX], s[b + S_CYY], s[b + S_CXY] = a1, a2, a3, a4, a5
    if n >= W_LONG - 1 and s[b + S_C_BAD] == 0.0:
        mx, vx = _var(s[b + S_CX], s[b + S_CXX], _W_LONG_F)
        my, vy = _var(s[b + S_CY], s[b + S_CYY], _W_LONG_F)
        if vx > 0.0 and vy > 0.0:
            out[ob + F_BTC_CORR] = (s[b + S_CXY] / W_LONG - mx * my) / math.sqrt(vx * vy)
        else:
            out[ob + F_BTC_CORR] = np.nan
    else:
        out[ob + F_BTC_CORR] = np.nan


# --- one symbol's 1m bar, higher timeframes, batch and incremental loops --------------------------

#: Input columns of one 1m bar, in this order (``SymbolInputs.values``, ``FeatureEngine.update``).
INPUT_COLUMNS: tuple[str, ...] = (
    "open", "high", "low", "close", "volume", "taker_buy_volume", "mark_high", "mark_low", "mark_close",
    "premium_close", "funding_rate", "funding_time_ms",
)  # fmt: skip
N_INPUTS = len(INPUT_COLUMNS)
(I_OPEN, I_HIGH, I_LOW, I_CLOSE, I_VOLUME, I_TAKER, I_MARK_HIGH, I_MARK_LOW, I_MARK_CLOSE, I_PREMIUM,
 I_FUNDING_RATE, I_FUNDING_TIME) = range(N_INPUTS)  # fmt: skip

N_TIMEFRAMES = 3
N_MERGED = N_TIMEFRAMES * N_TF_FEATURES
CROSS_LEN = N_TIMEFRAMES * CROSS_TF_LEN

#: Status of one symbol in one update.
OK, NOT_CLOSED, OUT_OF_ORDER, BAD_VALUES, FUTURE_FUNDING, OFF_GRID = range(6)
STATUS_TEXT = {
    OK: "ok",
    NOT_CLOSED: "no bar in this update",
    OUT_OF_ORDER: "bar ts not after the symbol's last bar (duplicate or out of order)",
    BAD_VALUES: "non-finite or non-positive price, negative or non-finite volume, or high < low",
    FUTURE_FUNDING: "funding time after the bar's close (look-ahead)",
    OFF_GRID: "bar ts not on the 1m grid",
}

_MINUTE_MS = 60_000
_M15_MS = 15 * _MINUTE_MS
_H1_MS = 60 * _MINUTE_MS

# accumulator of a higher-timeframe bar being built from 1m bars
A_BUCKET, A_COUNT = 0, 1
A_VALUES = 2  # then the N_INPUTS aggregated input columns
ACC_LEN = A_VALUES + N_INPUTS

B_1M = 0
B_15M = TF_STATE_LEN
B_1H = 2 * TF_STATE_LEN
ACC_15M = 3 * TF_STATE_LEN
ACC_1H = ACC_15M + ACC_LEN
LAST_15M = ACC_1H + ACC_LEN  # features of the last complete 15m bar
LAST_1H = LAST_15M + N_TF_FEATURES
SYMBOL_STATE_LEN = LAST_1H + N_TF_FEATURES


def new_symbol_state() -> np.ndarray:
    """Return the initial state vector of one symbol (three timeframes, two accumulators)."""
    s = np.full(SYMBOL_STATE_LEN, np.nan)
    tf = new_tf_state()
    for base in (B_1M, B_15M, B_1H):
        s[base : base + TF_STATE_LEN] = tf
    for acc in (ACC_15M, ACC_1H):
        s[acc + A_COUNT] = 0.0
    return s


@nb.njit(cache=True)
def _nan_max(a, x):
    return np.nan if (a != a or x != x) else max(a, x)


@nb.njit(cache=True)
def _nan_min(a, x):
    return np.nan if (a != a or x != x) else min(a, x)


@nb.njit(cache=True)
def _accumulate(s, a, ts, x, interval_ms):
    """Add a 1m bar to the higher-timeframe bar being built; return True when that bar is complete.

    open = first, high = max, low = min, close = last, volumes summed (NaN propagates), mark
    high/low max/min (NaN propagates), mark and premium close, funding in force: the last bar's.
    """
    bucket = ts - ts % interval_ms
    v = a + A_VALUES
    if s[a + A_BUCKET] != bucket:
        s[a + A_BUCKET] = bucket
        s[a + A_COUNT] = 1.0
        for k in range(N_INPUTS):
            s[v + k] = x[k]
    else:
        s[a + A_COUNT] += 1.0
        s[v + I_HIGH] = max(s[v + I_HIGH], x[I_HIGH])
        s[v + I_LOW] = min(s[v + I_LOW], x[I_LOW])
        s[v + I_CLOSE] = x[I_CLOSE]
        s[v + I_VOLUME] += x[I_VOLUME]
        s[v + I_TAKER] += x[I_TAKER]
        s[v + I_MARK_HIGH] = _nan_max(s[v + I_MARK_HIGH], x[I_MARK_HIGH])
        s[v + I_MARK_LOW] = _nan_min(s[v + I_MARK_LOW], x[I_MARK_LOW])
        for k in (I_MARK_CLOSE, I_PREMIUM, I_FUNDING_RATE, I_FUNDING_TIME):
            s[v + k] = x[k]
    return s[a + A_COUNT] == interval_ms // _MINUTE_MS


@nb.njit(cache=True)
def _step_inputs(s, base, ts, x, out, ob, cross, xb, is_btc):
    tf_step(s, base, ts, x[I_OPEN], x[I_HIGH], x[I_LOW], x[I_CLOSE], x[I_VOLUME], x[I_TAKER],
            x[I_MARK_HIGH], x[I_MARK_LOW], x[I_MARK_CLOSE], x[I_PREMIUM], x[I_FUNDING_RATE],
            x[I_FUNDING_TIME], out, ob)  # fmt: skip
    tf_cross(s, base, ts, out, ob, cross, xb, is_btc)


@nb.njit(cache=True)
def check_bar(ts, x, s):
    """Return the status of a 1m bar for a symbol state (OK or why it is rejected); no state change."""
    if ts % _MINUTE_MS != 0:
        return OFF_GRID
    last = s[B_1M + S_LAST_TS]
    if last == last and ts <= last:
        return OUT_OF_ORDER
    o, h, lo, c, v = x[I_OPEN], x[I_HIGH], x[I_LOW], x[I_CLOSE], x[I_VOLUME]
    if not (o > 0.0 and h > 0.0 and lo > 0.0 and c > 0.0 and v >= 0.0 and h >= lo):
        return BAD_VALUES
    if not (o < np.inf and h < np.inf and c < np.inf and v < np.inf):
        return BAD_VALUES
    ft = x[I_FUNDING_TIME]
    if ft == ft and ft > ts + _MINUTE_MS:
        return FUTURE_FUNDING
    return OK


@nb.njit(cache=True)
def symbol_bar(ts, x, s, cross, is_btc, out):
    """Take one closed 1m bar [ts, ts + 1m) of a symbol; write its merged 132-feature row to ``out``.

    Uses bars up to and including this one: the 15m and 1h parts are the features of the last
    15m/1h bar completed by this bar's close. Returns a status; a rejected bar changes no state
    and leaves ``out`` untouched. ``cross`` is the BTC context (written when ``is_btc``).
    """
    st = check_bar(ts, x, s)
    if st != OK:
        return st
    # offsets are computed at run time on purpose: literal int arguments would make numba compile
    # tf_step once per timeframe
    for tf in range(N_TIMEFRAMES):
        base = tf * TF_STATE_LEN
        ob = tf * N_TF_FEATURES
        xb = tf * CROSS_TF_LEN
        if tf == 0:
            _step_inputs(s, base, ts, x, out, ob, cross, xb, is_btc)
            continue
        acc = ACC_15M + (tf - 1) * ACC_LEN
        last = LAST_15M + (tf - 1) * N_TF_FEATURES
        interval_ms = _M15_MS if tf == 1 else _H1_MS
        if _accumulate(s, acc, ts, x, interval_ms):
            bucket = ts - ts % interval_ms
            _step_inputs(s, base, bucket, s[acc + A_VALUES : acc + ACC_LEN], s, last, cross, xb, is_btc)
        for k in range(N_TF_FEATURES):
            out[ob + k] = s[last + k]
    return OK


@nb.njit(cache=True)
def run_symbol(ts, x, s, is_btc, cross, table, btc_row, out):
    """Run one symbol's bars through ``symbol_bar``; return (first rejected bar or -1, its status).

    BTC (``is_btc``) publishes its context into ``cross`` and, after bar i, ``table[i]``; another
    symbol's bar i reads ``table[btc_row[i]]`` (row -1: the NaN row, no BTC bar yet).
    """
    for i in range(len(ts)):
        if is_btc:
            st = symbol_bar(ts[i], x[i], s, cross, is_btc, out[i])
            table[i, :] = cross
        else:
            st = symbol_bar(ts[i], x[i], s, table[btc_row[i]], is_btc, out[i])
        if st != OK:
            return i, st
    return -1, OK


@nb.njit(cache=True)
def run_group(ts, x, starts, btc_k, states, cross, table, btc_row, out, bad):
    """Batch over a group stored back to back (symbol k: rows starts[k]..starts[k+1]); BTC first."""
    n_sym = len(starts) - 1
    if btc_k >= 0:
        a, z = starts[btc_k], starts[btc_k + 1]
        bad[btc_k, 0], bad[btc_k, 1] = run_symbol(ts[a:z], x[a:z], states[btc_k], btc_k >= 0, cross, table,
                                                  btc_row[a:z], out[a:z])  # fmt: skip
    for k in range(n_sym):
        if k != btc_k:
            a, z = starts[k], starts[k + 1]
            bad[k, 0], bad[k, 1] = run_symbol(ts[a:z], x[a:z], states[k], k == btc_k, cross, table,
                                              btc_row[a:z], out[a:z])  # fmt: skip


@nb.njit(cache=True, parallel=True)
def run_group_parallel(ts, x, starts, btc_k, states, cross, table, btc_row, out, bad):
    """``run_group`` with the non-BTC symbols spread over the numba threads (BTC still first)."""
    n_sym = len(starts) - 1
    if btc_k >= 0:
        a, z = starts[btc_k], starts[btc_k + 1]
        bad[btc_k, 0], bad[btc_k, 1] = run_symbol(ts[a:z], x[a:z], states[btc_k], btc_k >= 0, cross, table,
                                                  btc_row[a:z], out[a:z])  # fmt: skip
    for k in nb.prange(n_sym):
        if k != btc_k:
            a, z = starts[k], starts[k + 1]
            bad[k, 0], bad[k, 1] = run_symbol(ts[a:z], x[a:z], states[k], k == btc_k, cross, table,
                                              btc_row[a:z], out[a:z])  # fmt: skip


@nb.njit(cache=True)
def group_update(ts, x, closed, btc_k, states, cross, out, status):
    """Incremental step of a group at 1m bar ``ts``: BTC (row ``btc_k``) first, then every other
    symbol with ``closed[k]``. Rows of symbols without an accepted bar are set to NaN."""
    n_sym = len(closed)
    for j in range(n_sym + 1):
        if j == 0:
            k = btc_k
            if k < 0:
                continue
        else:
            k = j - 1
            if k == btc_k:
                continue
        st = symbol_bar(ts, x[k], states[k], cross, k == btc_k, out[k]) if closed[k] else NOT_CLOSED
        status[k] = st
        if st != OK:
            out[k, :] = np.nan


@nb.njit(cache=True)
def run_bars(ts, x, s, cross, is_btc, out):
    """Step one timeframe's state (``new_tf_state``) over already-built bars of that timeframe.

    Writes the 44 features of bar i to ``out[i]``; ``cross[i]`` is the BTC context for bar i (for
    BTC itself it is written). No validation and no higher timeframes: the building block that
    ``symbol_bar`` applies to 1m bars and to the 15m/1h bars it completes.
    """
    zero = np.int64(0)  # not a literal: see symbol_bar
    for i in range(len(ts)):
        _step_inputs(s, zero, ts[i], x[i], out[i], zero, cross[i], zero, is_btc)
