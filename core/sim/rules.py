"""Per-symbol venue rules the simulator and the risk guard enforce: leverage brackets, order filters.

Pure: the callers load the JSON (``GET /fapi/v1/leverageBracket``, ``GET /fapi/v1/exchangeInfo``, or
ccxt's ``fetch_leverage_tiers`` dump) and pass the decoded object; the parsers turn it into small
frozen tables in USDT. Venue field names stay inside the two parsers.

Leverage brackets (isolated margin, one-way). A position of notional N (USDT) falls in the bracket
with ``notional_floor ≤ N < notional_cap``; that bracket gives the maintenance margin rate MMR, the
maintenance amount ``cum`` (USDT, makes the maintenance margin continuous across brackets) and the
largest initial leverage allowed. Maintenance margin = ``N · MMR − cum``. ``DEFAULT_BRACKETS`` is
DOGEUSDT's table (leverage_brackets.json, late 2025), a mid-cap table, used for symbols without one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import DataQualityError
from core.symbols import SymbolError, SymbolSource, to_internal


@dataclass(frozen=True, slots=True)
class LeverageBracket:
    """One notional bracket of a symbol's leverage table (Binance ``leverageBracket``)."""

    notional_floor_usdt: float
    notional_cap_usdt: float
    maint_margin_rate: float  # fraction of notional
    maint_amount_usdt: float  # Binance "cum"
    max_leverage: int  # largest initial leverage allowed in this bracket


#: DOGEUSDT's brackets (leverage_brackets.json, late 2025): the table of symbols without their own.
DEFAULT_BRACKETS: tuple[LeverageBracket, ...] = tuple(
    LeverageBracket(float(lo), float(hi), mmr, float(cum), lev)
    for lo, hi, mmr, cum, lev in (
        (0, 10_000, 0.005, 0, 75),
        (10_000, 50_000, 0.007, 20, 50),
        (50_000, 750_000, 0.01, 170, 40),
        (750_000, 800_000, 0.02, 7_670, 25),
        (800_000, 1_600_000, 0.025, 11_670, 20),
        (1_600_000, 8_000_000, 0.05, 51_670, 10),
        (8_000_000, 16_000_000, 0.1, 451_670, 5),
        (16_000_000, 20_000_000, 0.125, 851_670, 4),
        (20_000_000, 40_000_000, 0.25, 3_351_670, 2),
        (40_000_000, 80_000_000, 0.5, 13_351_670, 1),
    )
)


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    """Order filters of one symbol (exchangeInfo): PRICE_FILTER, MARKET_LOT_SIZE, MIN_NOTIONAL.

    Zero step or tick means "no rounding"; the defaults accept every order.
    """

    tick_size: float = 0.0
    min_price: float = 0.0
    max_price: float = math.inf
    step_size: float = 0.0  # MARKET_LOT_SIZE: market orders floor their quantity to it
    min_qty: float = 0.0
    max_qty: float = math.inf
    min_notional_usdt: float = 0.0  # checked against qty · mark price


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """Everything the simulator and the risk guard know about one symbol besides its prices."""

    filters: SymbolFilters = field(default_factory=SymbolFilters)
    brackets: tuple[LeverageBracket, ...] = DEFAULT_BRACKETS
    btc_beta: float = 1.0  # weight of the symbol's notional in the BTC-beta exposure limit

    def __post_init__(self) -> None:
        check_brackets(self.brackets)


def check_brackets(brackets: Sequence[LeverageBracket]) -> None:
    """Raise DataQualityError unless the brackets start at 0, are contiguous and sane."""
    if not brackets:
        raise DataQualityError("leverage brackets: empty table")
    if brackets[0].notional_floor_usdt != 0:
        raise DataQualityError(f"leverage brackets: first floor is {brackets[0].notional_floor_usdt}, not 0")
    for i, b in enumerate(brackets):
        if not b.notional_cap_usdt > b.notional_floor_usdt:
            raise DataQualityError(f"leverage brackets: bracket {i + 1} has cap ≤ floor")
        if i and b.notional_floor_usdt != brackets[i - 1].notional_cap_usdt:
            raise DataQualityError(f"leverage brackets: bracket {i + 1} does not start at the previous cap")
        if not (0 < b.maint_margin_rate < 1) or b.maint_amount_usdt < 0 or b.max_leverage < 1:
            raise DataQualityError(f"leverage brackets: bracket {i + 1} has a bad rate, amount or leverage")


def _bracket_from_binance(raw: Mapping[str, Any]) -> LeverageBracket:
    return LeverageBracket(
        notional_floor_usdt=float(raw["notionalFloor"]),
        notional_cap_usdt=float(raw["notionalCap"]),
        maint_margin_rate=float(raw["maintMarginRatio"]),
        maint_amount_usdt=float(raw["cum"]),
        max_leverage=int(float(raw["initialLeverage"])),
    )


def parse_leverage_brackets(payload: Any) -> dict[str, tuple[LeverageBracket, ...]]:
    """Return the bracket tables by internal symbol from a decoded leverage-bracket payload.

    Accepts Binance's ``GET /fapi/v1/leverageBracket`` (a list of ``{"symbol", "brackets": [...]}``)
    and ccxt's ``fetch_leverage_tiers`` (``{"BTC/USDT:USDT": [{"info": {...}}, ...]}``; non-linear
    or unparseable market names are skipped). Raises DataQualityError on a malformed table.
    """
    out: dict[str, tuple[LeverageBracket, ...]] = {}
    try:
        if isinstance(payload, Mapping):
            for name, tiers in payload.items():
                source: SymbolSource = "ccxt" if "/" in str(name) else "rest"
                try:
                    symbol = to_internal(str(name), source)
                except SymbolError:
                    continue
                table = tuple(_bracket_from_binance(t.get("info", t)) for t in tiers)
                out[symbol] = tuple(sorted(table, key=lambda b: b.notional_floor_usdt))
        else:
            for entry in payload:
                symbol = to_internal(str(entry["symbol"]), "rest")
                table = tuple(_bracket_from_binance(b) for b in entry["brackets"])
                out[symbol] = tuple(sorted(table, key=lambda b: b.notional_floor_usdt))
    except (KeyError, TypeError, ValueError) as e:
        raise DataQualityError(f"leverage brackets: malformed payload ({type(e).__name__}: {e})") from None
    for symbol, table in out.items():
        try:
            check_brackets(table)
        except DataQualityError as e:
            raise DataQualityError(f"{symbol}: {e}") from None
    return out


def parse_symbol_filters(exchange_info: Mapping[str, Any]) -> dict[str, SymbolFilters]:
    """Return the order filters by internal symbol from a decoded ``GET /fapi/v1/exchangeInfo``.

    Market orders use MARKET_LOT_SIZE (LOT_SIZE when it is absent); MIN_NOTIONAL's ``notional``;
    PRICE_FILTER for trigger prices. Raises DataQualityError on a malformed payload.
    """
    out: dict[str, SymbolFilters] = {}
    try:
        for entry in exchange_info["symbols"]:
            try:
                symbol = to_internal(str(entry["symbol"]), "rest")
            except SymbolError:
                continue
            filters = {f["filterType"]: f for f in entry.get("filters", ())}
            price = filters.get("PRICE_FILTER", {})
            lot = filters.get("MARKET_LOT_SIZE") or filters.get("LOT_SIZE") or {}
            notional = filters.get("MIN_NOTIONAL", {})
            out[symbol] = SymbolFilters(
                tick_size=_number(price, "tickSize", 0.0),
                min_price=_number(price, "minPrice", 0.0),
                max_price=_number(price, "maxPrice", math.inf),
                step_size=_number(lot, "stepSize", 0.0),
                min_qty=_number(lot, "minQty", 0.0),
                max_qty=_number(lot, "maxQty", math.inf),
                min_notional_usdt=_number(notional, "notional", 0.0),
            )
    except (KeyError, TypeError, ValueError) as e:
        raise DataQualityError(f"exchangeInfo: malformed payload ({type(e).__name__}: {e})") from None
    return out


def _number(d: Mapping[str, Any], key: str, default: float) -> float:
    value = float(d.get(key, default))
    return default if value == 0 and default == math.inf else value  # "0" upper bound: none


def bracket_for(brackets: Sequence[LeverageBracket], notional_usdt: float) -> LeverageBracket | None:
    """Return the bracket holding ``notional_usdt`` (floor ≤ N < cap), None beyond the table."""
    for b in brackets:
        if notional_usdt < b.notional_cap_usdt:
            return b
    return None


def pack_rules(
    symbols: Sequence[str], rules: Mapping[str, SymbolRules] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (symbol table, bracket table) in the kernel's layout for ``symbols`` in order."""
    from core.sim import kernel as k

    rules = rules or {}
    chosen = [rules.get(s, SymbolRules()) for s in symbols]
    n_brackets = max((len(r.brackets) for r in chosen), default=1)
    sym = np.zeros((len(symbols), k.S_LEN))
    brackets = np.full((len(symbols), n_brackets, k.B_LEN), np.nan)
    for i, r in enumerate(chosen):
        f = r.filters
        sym[i, k.S_BETA] = r.btc_beta
        sym[i, k.S_TICK] = f.tick_size
        sym[i, k.S_MIN_PRICE] = f.min_price
        sym[i, k.S_MAX_PRICE] = f.max_price
        sym[i, k.S_STEP] = f.step_size
        sym[i, k.S_MIN_QTY] = f.min_qty
        sym[i, k.S_MAX_QTY] = f.max_qty
        sym[i, k.S_MIN_NOTIONAL] = f.min_notional_usdt
        sym[i, k.S_N_BRACKETS] = len(r.brackets)
        for j, b in enumerate(r.brackets):
            brackets[i, j] = (b.notional_floor_usdt, b.notional_cap_usdt, b.maint_margin_rate,
                              b.maint_amount_usdt, b.max_leverage)  # fmt: skip
    return sym, brackets
