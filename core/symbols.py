"""Symbol canonicalization (spec 001 §4).

Internally a symbol is one key: upper case, no separator, quote asset attached (``BTCUSDT``).
Adapters convert at the edge: WebSocket stream keys are lower case (``btcusdt``), REST takes the
internal form, and ccxt-style unified markets look like ``BTC/USDT:USDT``.
"""

from __future__ import annotations

import re
from typing import Literal

SymbolSource = Literal["internal", "rest", "ws", "ccxt"]

#: Quote assets of USD-M perpetuals, longest first so ``FDUSD`` wins over ``USD`` style prefixes.
QUOTE_ASSETS: tuple[str, ...] = ("FDUSD", "USDT", "USDC")

_INTERNAL = re.compile(r"^[A-Z0-9]{1,20}$")
_CCXT = re.compile(r"^(?P<base>[A-Za-z0-9]{1,20})/(?P<quote>[A-Za-z]{3,5})(?::(?P<settle>[A-Za-z]{3,5}))?$")


class SymbolError(ValueError):
    """A symbol string that cannot be a USD-M perpetual in the given form."""


def validate_internal(internal: str) -> None:
    """Raise SymbolError naming what is wrong unless ``internal`` is a canonical symbol."""
    if not isinstance(internal, str):
        raise SymbolError(f"symbol must be a string, got {type(internal).__name__}")
    if internal == "":
        raise SymbolError("symbol is empty")
    if internal != internal.strip():
        raise SymbolError(f"symbol {internal!r} has surrounding white space")
    if internal != internal.upper():
        raise SymbolError(f"symbol {internal!r} is not upper case (internal form is e.g. 'BTCUSDT')")
    if not _INTERNAL.match(internal):
        raise SymbolError(
            f"symbol {internal!r} has characters other than A-Z and 0-9 (internal form is e.g. 'BTCUSDT')"
        )
    quote = next((q for q in QUOTE_ASSETS if internal.endswith(q)), None)
    if quote is None:
        raise SymbolError(f"symbol {internal!r} does not end in a quote asset ({', '.join(QUOTE_ASSETS)})")
    if len(internal) == len(quote):
        raise SymbolError(f"symbol {internal!r} has no base asset before {quote}")


def split_internal(internal: str) -> tuple[str, str]:
    """Return (base, quote) of a canonical symbol."""
    validate_internal(internal)
    quote = next(q for q in QUOTE_ASSETS if internal.endswith(q))
    return internal[: -len(quote)], quote


def to_internal(symbol: str, source: SymbolSource) -> str:
    """Convert a venue- or library-specific symbol to the internal key, validating it."""
    if not isinstance(symbol, str):
        raise SymbolError(f"{source} symbol must be a string, got {type(symbol).__name__}")
    if source in ("internal", "rest"):
        out = symbol
    elif source == "ws":
        if symbol != symbol.lower():
            raise SymbolError(f"ws stream symbol {symbol!r} must be lower case, e.g. 'btcusdt'")
        out = symbol.upper()
    elif source == "ccxt":
        m = _CCXT.match(symbol)
        if m is None:
            raise SymbolError(
                f"ccxt symbol {symbol!r} is not of the form 'BASE/QUOTE:SETTLE', e.g. 'BTC/USDT:USDT'"
            )
        base, quote, settle = m.group("base"), m.group("quote"), m.group("settle")
        if settle is not None and settle.upper() != quote.upper():
            raise SymbolError(
                f"ccxt symbol {symbol!r} settles in {settle} but quotes in {quote}: not a USD-M linear perpetual"
            )
        out = f"{base}{quote}".upper()
    else:
        raise SymbolError(f"unknown symbol source {source!r}; expected one of internal, rest, ws, ccxt")
    try:
        validate_internal(out)
    except SymbolError as e:
        raise SymbolError(f"{source} symbol {symbol!r}: {e}") from None
    return out


def to_ws(internal: str) -> str:
    """Return the WebSocket stream key (``btcusdt``) of a canonical symbol."""
    validate_internal(internal)
    return internal.lower()


def to_rest(internal: str) -> str:
    """Return the REST ``symbol`` parameter of a canonical symbol (the same string)."""
    validate_internal(internal)
    return internal


def to_ccxt(internal: str) -> str:
    """Return the ccxt unified linear-perpetual market (``BTC/USDT:USDT``) of a canonical symbol."""
    base, quote = split_internal(internal)
    return f"{base}/{quote}:{quote}"


def parse_universe(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse a comma-separated (or listed) universe into canonical symbols, in order, without duplicates.

    Raises SymbolError naming every bad entry and any duplicate.
    """
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(s).strip() for s in text]
    items = [s for s in items if s]
    if not items:
        raise SymbolError("universe is empty")
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, s in enumerate(items):
        try:
            validate_internal(s)
        except SymbolError as e:
            problems.append(f"entry {i + 1}: {e}")
            continue
        if s in seen:
            problems.append(f"entry {i + 1}: {s} repeats entry {seen[s] + 1}")
        else:
            seen[s] = i
    if problems:
        raise SymbolError("; ".join(problems))
    return tuple(seen)


#: The fixed 30-symbol universe of spec 001 §26.1.
DEFAULT_UNIVERSE: tuple[str, ...] = parse_universe(
    "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT,DOGEUSDT,ADAUSDT,AVAXUSDT,DOTUSDT,LINKUSDT,LTCUSDT,BCHUSDT,"
    "SUIUSDT,AAVEUSDT,1000PEPEUSDT,FILUSDT,AXSUSDT,ENAUSDT,ZKUSDT,XAUUSDT,XAGUSDT,HYPEUSDT,ZECUSDT,BNXUSDT,"
    "ALPHAUSDT,ZORAUSDT,TRUMPUSDT,PUMPUSDT,NEARUSDT,PAXGUSDT"
)
