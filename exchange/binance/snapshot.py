"""What the venue says, for one reconciliation round (``core.reconcile.ExchangeSnapshot``), over REST.

``fetch_snapshot(trading, symbols, cursors, lookups, now_ms)`` reads, through the signed client
(``exchange.binance.trading.BinanceTrading``):

1. ``/fapi/v3/positionRisk`` first (``positions_ms`` is the server time just before it: an algo order
   created after it may protect a position that read did not show yet), then openOrders and
   openAlgoOrders — of every symbol, or of ``symbols`` only;
2. each symbol's userTrades from its sync cursor (``fromId`` = last trade id + 1, pages of 1000,
   Binance's limit, until a page comes back short). A symbol without a cursor, or a BACKFILL_TRADES
   lookup without a trade id, reads what the venue keeps (the last 7 days) and pages on by id;
3. the answers to the previous round's ``lookups``: an order by order id or by client id, an algo
   order by algo id; "no such order" (-2013) goes to the snapshot's ``absent_*`` sets.

Every payload becomes a ledger record through ``exchange.binance.ledger_records``. Rate usage: the
transport already waits at its headroom; beyond ``weight_budget`` of the minute's request weight
(``trading.usage``) the optional requests (lookups, further pages, trades of symbols not read yet)
are left for the next round and reported in ``FetchedSnapshot.deferred`` — the reconciler asks for
them again while they are still needed. Positions and open orders are always read: without them
there is nothing to compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from core.ledger import AlgoOrderState, Fill, OrderState, SyncCursor
from core.reconcile import ExchangePosition, ExchangeSnapshot, Lookup, LookupKind
from exchange.binance.ledger_records import algo_of_response, fill_of_trade, order_of_response, position_of
from exchange.binance.signed import BinanceRejection
from exchange.binance.trading import BinanceTrading
from exchange.binance.user_stream import TRADES_WINDOW_MS

#: Binance's largest userTrades page.
TRADES_PAGE_LIMIT = 1000
#: "Order does not exist."
NO_SUCH_ORDER = -2013


class SnapshotConfig(BaseModel):
    """How much one snapshot may read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trades_page_limit: int = Field(
        TRADES_PAGE_LIMIT, ge=1, le=TRADES_PAGE_LIMIT, description="userTrades rows per request"
    )
    max_trade_pages: int = Field(
        20, ge=1, description="userTrades pages per symbol and round; the rest waits for the next round"
    )
    weight_budget: float = Field(
        0.6,
        gt=0,
        le=1,
        description="share of the minute's request weight (TradingConfig.weight_limit_1m) past which "
        "optional requests wait for the next round",
    )
    trades_window_ms: int = Field(
        TRADES_WINDOW_MS,
        gt=0,
        description="how far back trades are read without a cursor, ms (Binance: 7 days)",
    )


@dataclass(frozen=True, slots=True)
class FetchedSnapshot:
    """A snapshot and what reading it left out: ``deferred`` lookups (rate budget) and ``errors``
    (a query the venue refused for another reason than "no such order"; it is asked again)."""

    snapshot: ExchangeSnapshot
    deferred: list[Lookup] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0


def fetch_snapshot(
    trading: BinanceTrading,
    symbols: Sequence[str] | None,
    cursors: Mapping[str, SyncCursor],
    lookups: Iterable[Lookup],
    now_ms: int,
    *,
    config: SnapshotConfig | None = None,
) -> ExchangeSnapshot:
    """Read the venue's positions, open orders, open algo orders, the trades after each symbol's
    cursor and the answers to ``lookups``, as ``ExchangeSnapshot`` at ``now_ms`` (module docstring).

    ``symbols`` None: every symbol the venue shows a position or open order for, plus those with a
    cursor or a lookup."""
    return fetch(trading, symbols, cursors, lookups, now_ms, config=config).snapshot


def fetch(
    trading: BinanceTrading,
    symbols: Sequence[str] | None,
    cursors: Mapping[str, SyncCursor],
    lookups: Iterable[Lookup],
    now_ms: int,
    *,
    config: SnapshotConfig | None = None,
) -> FetchedSnapshot:
    """``fetch_snapshot`` with what it deferred and the errors it met."""
    return _Reader(trading, config or SnapshotConfig(), symbols).read(cursors, list(lookups), now_ms)


class _Reader:
    def __init__(
        self, trading: BinanceTrading, config: SnapshotConfig, symbols: Sequence[str] | None
    ) -> None:
        self.trading = trading
        self.config = config
        self.wanted = None if symbols is None else frozenset(symbols)
        self.requests = 0
        self.deferred: list[Lookup] = []
        self.errors: list[str] = []

    def _in_scope(self, symbol: str) -> bool:
        return self.wanted is None or symbol in self.wanted

    def _over_budget(self) -> bool:
        usage = self.trading.usage
        if usage.backoff_until_ms > self.trading.http.now_ms():
            return True
        limit = self.trading.config.weight_limit_1m * self.config.weight_budget
        return usage.used_weight_1m is not None and usage.used_weight_1m >= limit

    def read(self, cursors: Mapping[str, SyncCursor], lookups: list[Lookup], now_ms: int) -> FetchedSnapshot:
        positions_ms = self.trading.http.now_ms()
        positions = self._positions()
        self.requests += 3
        open_orders = [order_of_response(o) for o in self.trading.open_orders() if self._in_scope(o.symbol)]
        open_algos = [
            algo_of_response(a) for a in self.trading.open_algo_orders() if self._in_scope(a.symbol)
        ]

        lookups = [lk for lk in dict.fromkeys(lookups) if self._in_scope(lk.symbol)]
        # where each symbol's trades start: the cursor's next id, or a backfill lookup's (None: all)
        starts: dict[str, int | None] = {}
        trade_symbols = (
            sorted(self.wanted)
            if self.wanted is not None
            else sorted(
                {p.symbol for p in positions}
                | {o.symbol for o in open_orders}
                | {a.symbol for a in open_algos}
                | set(cursors)
                | {lk.symbol for lk in lookups}
            )
        )
        for symbol in trade_symbols:
            cursor = cursors.get(symbol)
            starts[symbol] = None if cursor is None else cursor.last_trade_id + 1
        for lk in lookups:
            if lk.kind == LookupKind.BACKFILL_TRADES:
                current = starts.get(lk.symbol, lk.from_trade_id)
                starts[lk.symbol] = (
                    None if current is None or lk.from_trade_id is None else min(current, lk.from_trade_id)
                )
        trades: list[Fill] = []
        trades_from_id: dict[str, int | None] = {}
        for symbol, start in sorted(starts.items()):
            if self._over_budget():
                self.deferred += [
                    lk for lk in lookups if lk.kind == LookupKind.BACKFILL_TRADES and lk.symbol == symbol
                ]
                continue
            got, complete_from = self._trades(symbol, start, now_ms)
            trades += got
            trades_from_id[symbol] = complete_from

        orders: list[OrderState] = []
        algo_orders: list[AlgoOrderState] = []
        absent_orders: set[tuple[str, int]] = set()
        absent_client_ids: set[tuple[str, str]] = set()
        absent_algos: set[tuple[str, int]] = set()
        for lk in lookups:
            if lk.kind == LookupKind.BACKFILL_TRADES:
                continue
            if self._over_budget():
                self.deferred.append(lk)
                continue
            try:
                if lk.kind == LookupKind.QUERY_ORDER and lk.order_id is not None:
                    orders.append(self._order_by_id(lk.symbol, lk.order_id))
                elif lk.kind == LookupKind.QUERY_ORDER_BY_CLIENT_ID and lk.client_order_id is not None:
                    self.requests += 1
                    orders.append(order_of_response(self.trading.get_order(lk.symbol, lk.client_order_id)))
                elif lk.kind == LookupKind.QUERY_ALGO_ORDER and lk.algo_id is not None:
                    algo_orders.append(self._algo_by_id(lk.symbol, lk.algo_id))
                else:
                    self.errors.append(f"{lk.kind} {lk.symbol}: the lookup names no id ({lk.reason})")
            except BinanceRejection as e:
                if e.code != NO_SUCH_ORDER:
                    self.errors.append(f"{lk.kind} {lk.symbol}: {e}")
                elif lk.kind == LookupKind.QUERY_ORDER and lk.order_id is not None:
                    absent_orders.add((lk.symbol, lk.order_id))
                elif lk.kind == LookupKind.QUERY_ORDER_BY_CLIENT_ID and lk.client_order_id is not None:
                    absent_client_ids.add((lk.symbol, lk.client_order_id))
                elif lk.algo_id is not None:
                    absent_algos.add((lk.symbol, lk.algo_id))
        snapshot = ExchangeSnapshot(
            ts_ms=now_ms, positions=positions, open_orders=open_orders, open_algo_orders=open_algos,
            trades=trades, trades_from_id=trades_from_id, orders=orders, algo_orders=algo_orders,
            absent_orders=frozenset(absent_orders), absent_client_ids=frozenset(absent_client_ids),
            absent_algo_orders=frozenset(absent_algos), positions_ms=positions_ms,
        )  # fmt: skip
        return FetchedSnapshot(snapshot, self.deferred, self.errors, self.requests)

    def _positions(self) -> list[ExchangePosition]:
        rows = self.trading.positions()
        return [position_of(r) for r in rows if self._in_scope(r.symbol) and r.positionAmt != 0]

    def _trades(self, symbol: str, start: int | None, now_ms: int) -> tuple[list[Fill], int | None]:
        """The trades of ``symbol`` from id ``start`` (None: the venue's window), and the id from which
        they are complete (None: everything the venue keeps)."""
        limit = self.config.trades_page_limit
        self.requests += 1
        if start is None:
            since_ms = now_ms - self.config.trades_window_ms + 60_000
            page = self.trading.user_trades(symbol, start_ms=since_ms, limit=limit)
            # a full first page may have left older trades out: complete only from its first id
            complete_from = min((t.id for t in page), default=None) if len(page) == limit else None
        else:
            page = self.trading.user_trades(symbol, from_id=start, limit=limit)
            complete_from = start
        rows = list(page)
        pages = 1
        while len(page) == limit and pages < self.config.max_trade_pages and not self._over_budget():
            self.requests += 1
            page = self.trading.user_trades(symbol, from_id=max(t.id for t in page) + 1, limit=limit)
            rows += page
            pages += 1
        return [fill_of_trade(t) for t in rows], complete_from

    def _order_by_id(self, symbol: str, order_id: int) -> OrderState:
        self.requests += 1
        return order_of_response(self.trading.get_order(symbol, order_id=order_id))

    def _algo_by_id(self, symbol: str, algo_id: int) -> AlgoOrderState:
        self.requests += 1
        return algo_of_response(self.trading.get_algo_order(algo_id=algo_id))
