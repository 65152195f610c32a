"""Is the planted edge of the synthetic market learnable from the real features, and what does it pay?

For each seed, two markets with the same noise: the planted one (``edge_strength`` =
``--strength``, default ``core.synthetic.PLANTED_EDGE_STRENGTH``) and the null one (0). For each:

- the 132 features of schema v1 from the project's batch code (``core.features.build_inputs`` +
  ``compute_features``, what ``pipelines.features`` runs);
- a LightGBM regressor of the forward ``--horizon``-bar log return ``ln(C_{t+h} / C_t)`` of the
  non-BTC symbols (pooled; in units of the 15m NATR at t, ``f_15m_natr``), fitted on the first 70% of the bars (rows whose target reaches into the
  test span purged) and scored on the last 30%: out-of-sample Spearman IC of predictions against
  the realized forward log return, pooled over symbols; for reference the IC of the single feature
  ``f_1m_btc_ret_60`` (the planted drift's own input) on the same rows;
- the oracle (``core.synthetic_edge.oracle_backtest``: trades the known drift with the label
  preset's barriers and costs through the one simulator) on the test span: its annualised Sharpe,
  trades and per-trade Sharpe; on the null market the oracle assumes the planted strength (it
  trades noise: the negative control).

Ends with one JSON line.

    python bench/edge_check.py [--days 20] [--seeds 1,2,3] [--strength K] [--horizon 60]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightgbm as lgb
from scipy.stats import spearmanr

from core.features import FEATURE_NAMES, build_inputs, compute_features
from core.synthetic import FACTOR_SYMBOL, PLANTED_EDGE_STRENGTH, SyntheticParams, generate_market
from core.synthetic_edge import oracle_backtest
from core.time import MINUTE_MS, parse_utc

START = parse_utc("2025-01-06")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XAUUSDT")
TRAIN_SHARE = 0.7
BTC_RET_COLUMN = FEATURE_NAMES.index("f_1m_btc_ret_60")
NATR_COLUMN = FEATURE_NAMES.index("f_15m_natr")


def _ic(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic) if len(a) > 2 else math.nan


def _dataset(market, horizon: int, split: int):
    """Rows (features, forward return, is-train) of the non-BTC symbols, pooled."""
    inputs = {s: build_inputs(market.candles_1m[s], market.mark_1m[s], market.premium_1m[s], market.funding[s])
              for s in market.symbols}  # fmt: skip
    frames = compute_features(inputs)
    xs, ys, train = [], [], []
    for s in market.symbols:
        if s == FACTOR_SYMBOL:
            continue
        log_close = np.log(market.candles_1m[s]["close"])
        n = len(log_close)
        t = np.arange(n - horizon)
        keep = (t + horizon < split) | (t >= split)  # purge: no train target reaches into the test span
        xs.append(frames[s].values[t[keep]])
        ys.append(log_close[t[keep] + horizon] - log_close[t[keep]])
        train.append(t[keep] < split)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(train)


def _fit_ic(x: np.ndarray, y: np.ndarray, train: np.ndarray, seed: int) -> tuple[float, float]:
    # target in units of the 15m NATR at t (the unit of the labels' barriers): comparable across
    # symbols whose volatilities differ 5x; shallow, heavily pooled trees, because overlapping 60-bar
    # targets leave only a few hundred independent samples for 132 features
    target = y / x[:, NATR_COLUMN]
    usable = np.isfinite(target)
    model = lgb.LGBMRegressor(
        n_estimators=200, learning_rate=0.03, num_leaves=4, max_depth=2, min_child_samples=3000,
        subsample=0.7, subsample_freq=1, colsample_bytree=0.7, random_state=seed, n_jobs=1, verbose=-1,
        deterministic=True, force_row_wise=True,
    )  # fmt: skip
    model.fit(x[train & usable], target[train & usable])
    test = ~train
    pred = model.predict(x[test])
    btc = x[test, BTC_RET_COLUMN]
    ok = np.isfinite(btc)
    return _ic(pred, y[test]), _ic(btc[ok], y[test][ok])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--strength", type=float, default=PLANTED_EDGE_STRENGTH)
    ap.add_argument("--horizon", type=int, default=60, help="forward return horizon, 1m bars")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    n = args.days * 1440
    split = int(TRAIN_SHARE * n)
    test_start = START + split * MINUTE_MS
    print(f"{len(SYMBOLS)} symbols x {args.days} days, edge_strength {args.strength}, "
          f"forward {args.horizon} bars, train first {TRAIN_SHARE:.0%}, test last {1 - TRAIN_SHARE:.0%}")  # fmt: skip
    t0 = time.perf_counter()
    rows = []
    for seed in seeds:
        row: dict[str, float | int] = {"seed": seed}
        for kind, strength in (("planted", args.strength), ("null", 0.0)):
            market = generate_market(SYMBOLS, START, n, seed, SyntheticParams(edge_strength=strength))
            x, y, train = _dataset(market, args.horizon, split)
            ic, btc_ic = _fit_ic(x, y, train, seed)
            oracle = oracle_backtest(market, strength=args.strength, start_ms=test_start)
            row.update({f"{kind}_ic": round(ic, 4), f"{kind}_btc_ret_ic": round(btc_ic, 4),
                        f"{kind}_oracle_sharpe": round(oracle.sharpe, 3), f"{kind}_oracle_trades": oracle.trades,
                        f"{kind}_oracle_trade_sharpe": round(oracle.trade_sharpe, 3)})  # fmt: skip
        rows.append(row)
        print(f"seed {seed}: planted IC {row['planted_ic']:+.3f} (f_1m_btc_ret_60 {row['planted_btc_ret_ic']:+.3f}), "
              f"oracle Sharpe {row['planted_oracle_sharpe']:.2f} on {row['planted_oracle_trades']} trades "
              f"(per trade {row['planted_oracle_trade_sharpe']:.2f}) | null IC {row['null_ic']:+.3f} "
              f"(f_1m_btc_ret_60 {row['null_btc_ret_ic']:+.3f}), oracle Sharpe {row['null_oracle_sharpe']:.2f} "
              f"on {row['null_oracle_trades']} trades", flush=True)  # fmt: skip

    def col(name: str) -> list[float]:
        return [float(r[name]) for r in rows]

    result = {
        "edge_strength": args.strength,
        "days": args.days,
        "horizon_bars": args.horizon,
        "seeds": seeds,
        "planted_ic": col("planted_ic"),
        "null_ic": col("null_ic"),
        "planted_ic_min": min(col("planted_ic")),
        "null_ic_max_abs": max(abs(v) for v in col("null_ic")),
        "oracle_sharpe": col("planted_oracle_sharpe"),
        "oracle_trade_sharpe": col("planted_oracle_trade_sharpe"),
        "null_oracle_sharpe": col("null_oracle_sharpe"),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
