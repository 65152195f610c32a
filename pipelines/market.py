"""Markets into the lake: a generated synthetic market, with the 15m/1h bars built from its 1m bars."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from core.errors import DataQualityError
from core.resample import resample_candles
from core.synthetic import SyntheticMarket
from core.time import MINUTE_MS, interval_ms
from storage.candle_door import screen_rows
from storage.lake import Lake

#: Higher timeframes the lake keeps next to 1m candles (features and label ATR use them).
HIGHER_TIMEFRAMES = ("15m", "1h")


@dataclass(frozen=True, slots=True)
class MarketWrite:
    """Rows written to the lake per dataset, summed over symbols."""

    rows: dict[str, int]
    symbols: tuple[str, ...]
    source: str


def higher_timeframes(candles_1m: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Return ``{"15m": columns, "1h": columns}`` built from complete 1m buckets only."""
    return {tf: resample_candles(candles_1m, MINUTE_MS, interval_ms(tf)) for tf in HIGHER_TIMEFRAMES}


def write_synthetic_market(
    market: SyntheticMarket, lake: Lake, on_symbol: Callable[[str], None] | None = None
) -> MarketWrite:
    """Write every dataset of ``market`` to ``lake`` (source ``synthetic``), plus 15m/1h candles.

    Every dataset passes the data-quality door first (storage.candle_door.screen_rows); a refused
    row raises DataQualityError before anything of that dataset is written. Idempotent: writing the same market twice leaves the lake unchanged.
    """
    rows: dict[str, int] = {}

    def put(dataset: str, symbol: str, columns: Mapping[str, np.ndarray]) -> None:
        screen = screen_rows(dataset, symbol, columns, source=market.source, now_ms=0)
        if screen.rejections:  # a generator bug: refuse the market rather than store a bad row
            first = screen.rejections[0]
            raise DataQualityError(
                f"synthetic {dataset} {symbol}: {len(screen.rejections)} row(s) refused by the "
                f"data-quality door (first: {first.reason}: {first.detail})"
            )
        lake.write(dataset, symbol, screen.accepted, source=market.source)
        rows[dataset] = rows.get(dataset, 0) + screen.rows_accepted

    for symbol in market.symbols:
        candles = market.candles_1m[symbol]
        put("candles_1m", symbol, candles)
        for tf, columns in higher_timeframes(candles).items():
            put(f"candles_{tf}", symbol, columns)
        put("mark_1m", symbol, market.mark_1m[symbol])
        put("premium_1m", symbol, market.premium_1m[symbol])
        put("funding", symbol, market.funding[symbol])
        if on_symbol is not None:
            on_symbol(symbol)
    return MarketWrite(rows, market.symbols, market.source)
