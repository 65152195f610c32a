"""The actors' warm-up compiles every kernel the first close runs, for the signatures it runs them with.

A fresh interpreter (numba dispatchers start with no signature there; its on-disk cache may load
them, which is what a warm-up is for) warms an ``IngestBook`` and a ``Decider`` the way the ingest
actor does, then closes a minute through ``IngestBook.close`` and decides it as ``Decider`` does on
the Predictor's answer (whose arrays Ray hands over read-only). No numba dispatcher may gain a
signature in that close: one that did would be compiled (or loaded) on the first real close.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, sys
import numpy as np
from numba.core.registry import CPUDispatcher

from actors.backfill import FundingBook
from actors.decide import Decider, DeciderConfig, decide_symbols
from actors.ingest_book import IngestBook
from actors.ingest_config import IngestConfig
from core.features import build_inputs
from core.messages import Prediction
from core.policy import PREDICTION_KEYS
from core.synthetic import generate_market
from exchange.updates import BookUpdate, KlineUpdate, MarkUpdate

MINUTE, T0, N = 60_000, 1_736_121_600_000, 300
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def signatures():
    out = {}
    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] in ("core", "actors"):
            for attr, v in vars(mod).items():
                if isinstance(v, CPUDispatcher):
                    out[v.py_func.__module__ + "." + v.py_func.__qualname__] = [str(s) for s in v.signatures]
    return out


class Remote:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        async def call():
            return self.fn(*args)
        return call()


def predict(features):  # the Predictor's answer as Ray hands it over: read-only arrays
    preds = {k: np.full(len(features), 0.002) for k in PREDICTION_KEYS}
    for a in preds.values():
        a.setflags(write=False)
    return Prediction(name="m", version="1", model_id=None, preds=preds)


market = generate_market(list(SYMBOLS), T0, N + 5, seed=5)
cfg = IngestConfig(group_id=0, symbols=SYMBOLS[1:], rest_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:1/",
                   database_url="sqlite://")
book = IngestBook(cfg)
inputs = {s: build_inputs(market.candles_1m[s], market.mark_1m[s], market.premium_1m[s], market.funding[s])
          .until(T0 + (N - 1) * MINUTE) for s in book.symbols}
funding = {s: FundingBook(market.funding[s]["ts"], market.funding[s]["funding_rate"]) for s in book.symbols}
book.warm(inputs, funding, now_ms=T0 + N * MINUTE + 500, wall_ms=1)

decider = object.__new__(Decider)  # no Ray: the Predictor and the execution actor are stand-ins
decider.cfg = DeciderConfig(session_id="s", database_url="sqlite://", model_name="m", trade_symbols=SYMBOLS[1:])
decider._bars, decider._model_ids, decider._rl = {}, {"1": "model-id"}, None  # supervised: no RL policy
decider._predictor = type("P", (), {"predict": Remote(predict)})()
decider._execution = type("E", (), {"equity": Remote(lambda: 1000.0)})()
asyncio.run(decider.warm(inputs))
before = signatures()

t = T0 + N * MINUTE
for s in SYMBOLS:
    book.on_book(BookUpdate(s, t + 100, 1, 99.0, 1.0, 101.0, 1.0))
    for dt in (0, 30_000, 59_000):
        book.on_mark(MarkUpdate(s, t + dt, 100.0, 99.9, 0.0001, 0))
for s in book.symbols:
    c = market.candles_1m[s]
    book.on_kline(KlineUpdate(s, "1m", t, t + MINUTE, *(float(c[k][N]) for k in ("open", "high", "low", "close", "volume")),
                              123.0, 7, float(c["taker_buy_volume"][N]), True), 1)
book.on_connection("market", True, t + MINUTE + 10)
book.on_connection("public", True, t + MINUTE + 10)
due = book.next_close(t + MINUTE + 10)
book.close_requests(due.minute, t + MINUTE + 10)
event = book.close(due.minute, t + MINUTE + 10, 2).event

fresh = [k for k, s in enumerate(event.symbols) if s in SYMBOLS[1:]]
symbols = [event.symbols[k] for k in fresh]
for k, s in enumerate(event.symbols):
    row = event.inputs[k]
    decider._bars[s].add(event.ts_ms, row[1], row[2], row[3])
answer = predict(np.ascontiguousarray(event.features[fresh]))
preds = {k: answer.output(k) for k in PREDICTION_KEYS}
price = np.array([event.close[s] for s in symbols])
atr = np.array([decider._bars[s].atr(decider.cfg.label) for s in symbols])
decide_symbols(event.features[fresh], preds, price, atr, decider.cfg.policy, decider.cfg.label)

after = signatures()
print(json.dumps({"before": before, "new": {k: v for k, v in after.items() if v != before.get(k)}}))
"""


def test_first_close_compiles_nothing_after_the_warm_up():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["new"] == {}, "kernels compiled on the first close: " + json.dumps(result["new"], indent=1)
    warmed = result["before"]
    # the two the warm-up used to miss: the incremental feature step and the policy on read-only predictions
    assert warmed["core.features_kernel.group_update"]
    assert any("'C', True" in s for s in warmed["core.policy._decide_many"])
