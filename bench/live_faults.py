"""Fault injection on the live path (issue 15, "Fault-injection suite"): every scenario runs the live
book (``actors.live_book``: the signed client, protected entries, the user data stream, the ledger on
SQLite, reconciliation, the kill switch) against the replay venue's paper broker on loopback, with the
venue's fault hooks producing the failure, and then checks the venue's own record against the ledger:

- duplicate orders: client ids the venue holds more than one order or algo order for (must be 0)
- time naked: the longest time between an entry's fill and both protections acknowledged or the
  position closed (≤ 1 s)
- fills mismatched: trades the venue made and the ledger lacks, or the reverse (0)
- positions mismatched: symbols whose ledger position differs from the venue's (0)
- orphan algo orders: protections resting on a flat position (0)
- the kill switch in the state the scenario expects

Then the order path's latency on loopback with 20 ms injected into every venue request: decision →
entry acknowledged → both protections acknowledged, p50/p99 over ``--entries`` entries
(``protect_p99_ms``, target ≤ 150 ms).

    .venv/bin/python bench/live_faults.py [--entries 60]

Ends with one JSON line carrying the issue's keys: scenarios, scenarios_passed, duplicate_orders,
naked_ms_max, fills_mismatched, positions_mismatched, orphan_algo_orders, protect_p99_ms (the p50s, the
whole decision's latency and the failed scenarios' names are in the lines above it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the replay venue set-up the tests use

from venue_fixtures import BTC, MARK, Clock, filter_exchange_info, load_exchange_info, serve_venue  # noqa: E402

from actors.live_book import LiveBook, LiveConfig  # noqa: E402
from core.config import RiskConfig  # noqa: E402
from core.killswitch import KillSwitchConfig  # noqa: E402
from core.messages import EntryIntent  # noqa: E402
from exchange.binance.signed import TradingConfig  # noqa: E402
from exchange.binance.user_stream import UserStreamConfig  # noqa: E402
from exchange.venue import Faults  # noqa: E402
from exchange.venue.streams import StreamHub  # noqa: E402
from storage import db  # noqa: E402

KEY = "live-faults-key"
SECRET = "live-faults-secret-5e2a"
MINUTE = 60_000
NAKED_BOUND_MS = 1_000.0
CAP_MESSAGE = "Reach max stop order limit."  # Binance's -4045: the conditional-order cap
SHARED = Path(os.environ.get("RAYTRADE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@dataclass
class Harness:
    """One scenario's venue, database and live book."""

    venue_wall: Clock
    faults: Faults
    broker: Any
    url: str
    engine: sa.Engine
    tmp: Path
    book: LiveBook | None = None
    mono: list[float] = field(default_factory=lambda: [0.0])

    def quote(self, bid: float, ask: float, mark: float) -> None:
        ts = self.venue_wall()
        self._on_loop(self.broker.on_book, BTC, ts, bid, ask)
        self._on_loop(self.broker.on_mark, BTC, ts, mark, mark)

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        import asyncio

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self.server._loop).result(10)

    server: Any = None

    def config(self, **overrides: Any) -> LiveConfig:
        trading = TradingConfig(base_url=self.url, api_key=SecretStr(KEY), api_secret=SecretStr(SECRET),
                                recv_window_ms=1_000, timeout_s=0.5, backoff_s=0.0)  # fmt: skip
        stream = UserStreamConfig(ws_url="ws" + self.url.removeprefix("http") + "/", silence_s=1.0, ping_interval_s=0.1,
                                  backoff_base_s=0.05, backoff_cap_s=0.3, connect_timeout_s=2.0)  # fmt: skip
        cfg: dict[str, Any] = {
            "session_id": "faults", "symbols": (BTC,), "database_url": self.engine.url.render_as_string(False),
            "trading": trading, "audit_dir": self.tmp / "audit", "user_stream": stream,
            "killswitch": KillSwitchConfig(user_stream_silence_ms=500, user_stream_closed_ms=300),
        }  # fmt: skip
        return LiveConfig(**(cfg | overrides))

    def start(self, **overrides: Any) -> LiveBook:
        self.book = LiveBook(self.config(**overrides), monotonic=lambda: self.mono[0])
        return self.book

    def intent(self, sl: float = 59_400.0, tp: float = 60_600.0) -> EntryIntent:
        now = self.venue_wall()
        decision = now - now % MINUTE - MINUTE  # the bar that closed last: within the entry delay
        return EntryIntent(
            BTC, decision, 1, 0.02, 3, sl, tp, MARK, 50.0, 1e9, 60_000.0, 60_000.1, now, mark=MARK
        )

    def settle(self, timeout_s: float = 3.0) -> None:
        """Let the stream's events in, then one reconciliation round (the periodic one, brought forward)."""
        assert self.book is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.book.poll(0.05)
            if self.book.stream is None or self.book.stream.health().connected:
                break
        self.book.poll(0.2)
        self.mono[0] += 3_600.0
        self.book.sync()


@contextmanager
def harness(exchange_info: dict[str, Any]) -> Iterator[Harness]:
    with tempfile.TemporaryDirectory(prefix="live-faults-") as tmp_dir:
        tmp = Path(tmp_dir)
        wall, faults = Clock(), Faults()
        hub = StreamHub(faults)
        server, broker = serve_venue(exchange_info, tmp / "lake", wall, hub.publish_user, key=KEY, secret=SECRET,
                                     faults=faults, hub=hub)  # fmt: skip
        url = server.start()
        engine = db.make_engine(f"sqlite:///{tmp / 'raytrade.db'}")
        db.upgrade(engine)
        h = Harness(wall, faults, broker, url, engine, tmp)
        h.server = server
        h.quote(60_000.0, 60_000.1, MARK)
        try:
            yield h
        finally:
            if h.book is not None:
                h.book.close()
            engine.dispose()
            server.stop()


@dataclass
class Outcome:
    name: str
    passed: bool
    duplicate_orders: int = 0
    naked_ms_max: float = 0.0
    fills_mismatched: int = 0
    positions_mismatched: int = 0
    orphan_algo_orders: int = 0
    kill_ok: bool = True
    note: str = ""


def check(name: str, h: Harness, *, kill_active: bool = False, note: str = "") -> Outcome:
    """The venue's record against the ledger, after the book has settled."""
    book = h.book
    assert book is not None
    broker = h.broker
    duplicates = 0  # a triggered algo order's child order may carry its id: orders and algo orders apart
    for ids in (Counter(o.client_order_id for o in broker.orders.values()),
                Counter(a.client_algo_id for a in broker.algos.values())):  # fmt: skip
        duplicates += sum(n - 1 for cid, n in ids.items() if n > 1 and not cid.startswith("autoclose"))
    venue_fills = {(f.symbol, f.trade_id) for f in broker.order_state.fills}
    ledger_fills = {(f.symbol, f.trade_id) for f in book.store.fills(BTC)}
    venue_pos = {s: Decimal(p.amount) for s, p in broker.positions.items() if Decimal(p.amount) != 0}
    ledger_pos = {s: p.qty for s, p in book.store.positions().items() if p.qty != 0}
    positions_off = len(
        {s for s in set(venue_pos) | set(ledger_pos) if venue_pos.get(s) != ledger_pos.get(s)}
    )
    orphans = sum(1 for a in broker.algos.values() if a.status == "NEW" and a.symbol not in venue_pos)
    naked = max(book.stats.naked_ms, default=0.0)
    kill_ok = book.kill.active == kill_active
    out = Outcome(
        name, False, duplicates, naked, len(venue_fills ^ ledger_fills), positions_off, orphans, kill_ok, note
    )
    out.passed = (duplicates == 0 and naked <= NAKED_BOUND_MS and out.fills_mismatched == 0 and positions_off == 0
                  and orphans == 0 and kill_ok)  # fmt: skip
    return out


def poll_until(book: LiveBook, condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll the book (draining its stream) until ``condition`` holds; whether it did in time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        book.poll(0.05)
    return True


def arm_before(book: LiveBook, method: str, nth: int, arm: Callable[[], None]) -> None:
    """Arm a venue fault right before the ``nth`` call of the client's ``method`` (a moment the scenario
    cannot reach from outside: between an entry's fill and its protection, as the close leaves)."""
    real = getattr(book.trading, method)
    calls = [0]

    def armed(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            arm()
        return real(*args, **kwargs)

    setattr(book.trading, method, armed)


# --- scenarios --------------------------------------------------------------------------------------


def one_entry(h: Harness, name: str, arm: Callable[[LiveBook], Any] | None = None) -> Outcome:
    """Start the book, arm the fault (``arm``), make one entry, settle, check."""
    book = h.start()
    if arm is not None:
        arm(book)
    (r,) = book.submit([h.intent()])
    h.settle()
    return check(name, h, note=str(r.get("outcome") or r.get("reasons")))


def plain(h: Harness) -> Outcome:
    return one_entry(h, "plain entry protected")


def entry_timeout(h: Harness) -> Outcome:
    return one_entry(h, "entry timeout, status unknown",
                     lambda _: h.faults.rest_timeout("/fapi/v1/order", sleep_s=1.0, apply=True))  # fmt: skip


def entry_5xx_filled(h: Harness) -> Outcome:
    return one_entry(
        h, "entry 5xx then filled", lambda _: h.faults.rest_error("/fapi/v1/order", status=503, apply=True)
    )


def sl_rejected(h: Harness) -> Outcome:
    return one_entry(h, "SL rejected", lambda _: h.faults.reject_order(-4045, CAP_MESSAGE, kind="algo"))


def tp_rejected(h: Harness) -> Outcome:
    return one_entry(h, "TP rejected", lambda book: arm_before(
        book, "place_protection", 2, lambda: h.faults.reject_order(-4045, CAP_MESSAGE, kind="algo")))  # fmt: skip


def sl_would_trigger(h: Harness) -> Outcome:
    return one_entry(h, "SL -2021 would trigger immediately", lambda book: arm_before(
        book, "place_protection", 1, lambda: h.quote(59_300.0, 59_300.1, 59_300.0)))  # mark past the SL  # fmt: skip


def algo_invisible(h: Harness) -> Outcome:
    if not hasattr(h.faults, "hide_algo_orders"):
        return Outcome("algo order acknowledged, invisible 60 s (-2013)", False, note="venue fault missing")
    book = h.start()
    h.faults.hide_algo_orders(50.0, n=2)  # the client refuses a clock 60 s off: 50 s shows the same
    (r,) = book.submit([h.intent()])
    h.settle()  # reconciles while both protections are invisible: nothing cancelled, nothing placed again
    h.venue_wall.shift_ms += 10_000  # past the reconciler's grace, still invisible
    h.settle()
    h.venue_wall.shift_ms += 45_000  # visible again
    h.settle()
    resting = sorted(a.order_type for a in h.broker.algos.values() if a.status == "NEW")
    if resting != ["STOP_MARKET", "TAKE_PROFIT_MARKET"]:
        return Outcome("algo order acknowledged, invisible 60 s (-2013)", False, note=f"resting {resting}")
    return check("algo order acknowledged, invisible 60 s (-2013)", h, note=r["outcome"])


def trigger_events(h: Harness) -> Outcome:
    book = h.start()
    h.faults.duplicate("private", n=6)
    h.faults.reorder("private", pairs=2)
    book.submit([h.intent()])
    h.quote(60_700.0, 60_700.1, 60_700.0)  # TRIGGERED → child order (its fill may precede FINISHED)
    h.settle()
    return check("ALGO_UPDATE TRIGGERED, child fill, duplicate and out-of-order events", h)


def tp_then_sl_cancelled(h: Harness) -> Outcome:
    book = h.start()
    book.submit([h.intent()])
    h.quote(60_700.0, 60_700.1, 60_700.0)
    h.settle()
    return check("TP fills, then the SL is cancelled", h)


def liquidation(h: Harness) -> Outcome:
    book = h.start()
    book.submit([h.intent()])
    h.quote(38_000.0, 38_000.1, 38_000.0)  # far through the liquidation price of 3x isolated, in one tick
    h.settle()
    return check("position closed by liquidation", h)


def stream_silent(h: Harness) -> Outcome:
    """No message and no pong: entries blocked past the bound; the switch stays on until a resume."""
    book = h.start()
    book.submit([h.intent()])
    h.faults.stall("private", 3.0)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and book.kill.entries_allowed:
        book.poll(0.05)
    blocked = not book.kill.entries_allowed
    (refused,) = book.submit([h.intent()])
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline and book.kill.holding(h.venue_wall()):
        book.poll(0.05)  # the watchdog replaces the connection; signs of life clear the condition
    h.settle(timeout_s=5.0)
    still_on = book.kill.active
    resumed = book.resume()["active"] is False
    out = check("user stream silent", h, kill_active=False)
    out.passed = (
        out.passed and blocked and refused.get("reasons") == ("KILL_SWITCH",) and still_on and resumed
    )
    out.note = f"blocked {blocked}, on until resumed {still_on}, resumed {resumed}"
    return out


def listen_key_expired(h: Harness) -> Outcome:
    book = h.start()
    book.submit([h.intent()])
    h.faults.expire_listen_keys()
    h.quote(60_700.0, 60_700.1, 60_700.0)  # the TP fills while the stream replaces its key
    stats = book.stream.stream.stats if book.stream is not None else None
    poll_until(book, lambda: stats is not None and stats.rotations >= 1)
    h.settle(timeout_s=5.0)
    out = check("listenKey expired mid-trade", h)
    rotations = stats.rotations if stats is not None else 0
    out.passed = out.passed and rotations >= 1
    out.note = f"rotations {rotations}"
    return out


def keepalive_fails(h: Harness) -> Outcome:
    stream = UserStreamConfig(ws_url="ws" + h.url.removeprefix("http") + "/", silence_s=1.0, ping_interval_s=0.1,
                              backoff_base_s=0.05, backoff_cap_s=0.3, connect_timeout_s=2.0, keepalive_s=0.3)  # fmt: skip
    book = h.start(user_stream=stream)
    h.faults.rest_error("/fapi/v1/listenKey", n=3, status=503)  # one keepalive with all 3 attempts refused
    book.submit([h.intent()])
    stats = book.stream.stream.stats if book.stream is not None else None
    poll_until(book, lambda: stats is not None and stats.rotations >= 1)
    h.quote(60_700.0, 60_700.1, 60_700.0)
    h.settle(timeout_s=5.0)
    out = check("keepalive fails once", h)
    failed = stats is not None and stats.keepalive_failures >= 1 and stats.rotations >= 1
    out.passed = out.passed and failed
    out.note = (
        f"keepalive failures {stats.keepalive_failures}, rotations {stats.rotations}"
        if stats
        else "no stream"
    )
    return out


def disconnect_during_fill(h: Harness) -> Outcome:
    book = h.start()
    book.submit([h.intent()])
    h.faults.disconnect("private")
    h.quote(60_700.0, 60_700.1, 60_700.0)
    poll_until(book, lambda: book.stream is not None and book.stream.stream.stats.gaps >= 1)
    h.settle(timeout_s=5.0)
    out = check("disconnect during a fill", h)
    gaps = book.stream.stream.stats.gaps if book.stream is not None else 0
    out.passed = out.passed and gaps >= 1
    out.note = f"gaps {gaps}"
    return out


def close_503_filled(h: Harness) -> Outcome:
    book = h.start()
    h.faults.reject_order(-4045, CAP_MESSAGE, kind="algo")
    arm_before(
        book, "close_position", 1, lambda: h.faults.rest_error("/fapi/v1/order", status=503, apply=True)
    )
    (r,) = book.submit([h.intent()])
    h.settle()
    return check("close order 503, the close filled", h, note=r["outcome"])


def restart_with_resting_stop(h: Harness) -> Outcome:
    """The actor died after its entry and a closePosition stop: the new book adopts both and adds the TP."""
    first = h.start()
    first.submit([h.intent()])  # records the engine signal (the levels); then the actor "dies"
    first.trading.cancel_all_algo_orders(BTC)
    first.trading.place_protection(BTC, "SL", "LONG", 59_400, 60_000, "rt-manual-stop")  # closePosition
    first.close()
    h.book = None
    h.start(session_id="faults-restarted")
    h.settle()
    stops = [a for a in h.broker.algos.values() if a.status == "NEW" and a.order_type == "STOP_MARKET"]
    out = check("actor killed between entry and protection, restarted with a resting closePosition stop", h)
    out.passed = out.passed and len(stops) == 1
    return out


def restart_naked(h: Harness) -> Outcome:
    """The actor died between the entry's fill and its protection: the new book finds the position naked
    and protects it at the levels its engine signal recorded, at once on start."""
    first = h.start()
    first.submit([h.intent()])
    first.trading.cancel_all_algo_orders(BTC)  # as if neither protection had been sent
    first.close()
    h.book = None
    h.venue_wall.shift_ms += 6_000  # the restart takes longer than the reconciler's 5 s protection grace
    h.start(session_id="faults-restarted")
    h.settle()
    kinds = sorted(a.order_type for a in h.broker.algos.values() if a.status == "NEW")
    out = check("actor killed between entry and protection, restarted: protected", h)
    out.passed = out.passed and kinds == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    out.note = ", ".join(kinds)
    return out


def db_down(h: Harness) -> Outcome:
    """The database goes away while the TP fills (its file moved: every write fails, as with a server
    that refuses connections); back again, the book's reconciliation brings the ledger level with the venue."""
    book = h.start()
    book.submit([h.intent()])
    path = Path(h.engine.url.database or "")
    away = path.with_name(path.name + ".away")
    book.engine.dispose()
    h.engine.dispose()
    path.rename(away)
    try:
        h.quote(60_700.0, 60_700.1, 60_700.0)
        for _ in range(10):
            with contextlib.suppress(Exception):  # the book's writes fail; the venue holds the facts
                book.poll(0.05)
        try:
            book.store.fills(BTC)
            down = False
        except Exception:
            down = True
    finally:
        book.engine.dispose()
        path.unlink(missing_ok=True)  # the empty file a connection made meanwhile
        away.rename(path)
    h.settle()
    out = check("database down during fills", h)
    out.passed = out.passed and down
    out.note = "writes failed while down" if down else "the database never went down"
    return out


def rate_limited(h: Harness) -> Outcome:
    book = h.start()
    h.faults.reject_order(-1003, "Too many requests; current limit is 2400 request weight per 1 MINUTE.", n=3,
                          kind="order")  # fmt: skip
    (r,) = book.submit([h.intent()])
    h.settle()
    return check("429 storm", h, note=r.get("outcome", str(r.get("reasons"))))


def clock_skew(h: Harness) -> Outcome:
    book = h.start()
    h.venue_wall.shift_ms = 4_000  # our timestamps fall out of the venue's recvWindow: -1021
    (r,) = book.submit([h.intent()])
    h.settle()
    return check("-1021 clock skew", h, note=r["outcome"])


def hedge_mode(h: Harness) -> Outcome:
    from exchange.binance.trading import AccountModeError, BinanceTrading

    with BinanceTrading(h.config().trading) as setup:
        setup.http.call("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "true"}, action="write")
    try:
        h.start()
    except AccountModeError as e:
        refused = "hedge mode" in str(e)
    else:
        refused = False
    orders = len(h.broker.orders) + len(h.broker.algos)
    return Outcome(
        "hedge-mode account at start-up", refused and orders == 0, note="refused" if refused else "started"
    )


SCENARIOS = [plain, entry_timeout, entry_5xx_filled, sl_rejected, tp_rejected, sl_would_trigger, algo_invisible,
             trigger_events, tp_then_sl_cancelled, liquidation, stream_silent, listen_key_expired, keepalive_fails,
             disconnect_during_fill, close_503_filled, restart_with_resting_stop, restart_naked, db_down, rate_limited, clock_skew,
             hedge_mode]  # fmt: skip


def latency(exchange_info: dict[str, Any], entries: int, injected_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Per entry, with ``injected_ms`` added to every venue request: the order path (entry sent → entry
    ack → both protections ack, ms) and the whole ``submit`` call (guards, the engine signal written,
    the order path, the venue's answers and fills into the ledger, ms)."""
    out, whole = [], []
    with harness(exchange_info) as h:
        book = h.start(user_stream=None, risk=RiskConfig(max_orders_per_s=100))  # time, not pace, the entries
        book.submit([h.intent()])  # connections and symbol set-up before timing
        book.flatten("BENCH")
        h.faults.rest_timeout("/fapi", n=10**6, sleep_s=injected_ms / 1000.0, apply=True)
        for k in range(entries):
            t0 = time.perf_counter()
            (r,) = book.submit([h.intent()])
            if r.get("outcome") == "protected":
                whole.append((time.perf_counter() - t0) * 1000)
                out.append(book.entries[BTC].protected_ms or np.nan)
            book.flatten(f"BENCH{k}")
    if len(out) < entries:
        raise RuntimeError(f"only {len(out)} of {entries} timed entries were protected")
    return np.array(out), np.array(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=60, help="entries timed for the order-path latency")
    parser.add_argument(
        "--injected-ms", type=float, default=20.0, help="latency added to every venue request"
    )
    args = parser.parse_args()
    info = filter_exchange_info(load_exchange_info(SHARED), [BTC])
    results: list[Outcome] = []
    for scenario in SCENARIOS:
        t0 = time.perf_counter()
        try:
            with harness(info) as h:
                out = scenario(h)
        except Exception as e:  # a scenario that crashes is a failed scenario, with its reason
            out = Outcome(scenario.__name__, False, note=f"{type(e).__name__}: {e}")
            traceback.print_exc(limit=3)
        results.append(out)
        mark = "ok  " if out.passed else "FAIL"
        print(f"{mark} {out.name:<88} dup {out.duplicate_orders} naked {out.naked_ms_max:6.1f} ms fills± "
              f"{out.fills_mismatched} pos± {out.positions_mismatched} orphans {out.orphan_algo_orders} "
              f"kill {'ok' if out.kill_ok else 'WRONG'} {out.note} ({time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip
    lat, whole = latency(info, args.entries, args.injected_ms)
    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99))
    s50, s99 = (float(np.percentile(whole, q)) for q in (50, 99))
    print(f"order path with {args.injected_ms:.0f} ms per venue request, {len(lat)} entries: entry sent → both "
          f"protections acknowledged p50 {p50:.1f} ms, p99 {p99:.1f} ms (target ≤ 150 ms); the whole decision "
          f"(guards, signal written, orders, answers and fills into the ledger) p50 {s50:.1f} ms, p99 {s99:.1f} ms")  # fmt: skip
    summary = {
        "scenarios": len(results), "scenarios_passed": sum(r.passed for r in results),
        "duplicate_orders": sum(r.duplicate_orders for r in results),
        "naked_ms_max": round(max(r.naked_ms_max for r in results), 1),
        "fills_mismatched": sum(r.fills_mismatched for r in results),
        "positions_mismatched": sum(r.positions_mismatched for r in results),
        "orphan_algo_orders": sum(r.orphan_algo_orders for r in results),
        "protect_p99_ms": round(p99, 1),
    }  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
