"""Binance USDⓈ-M market streams of one symbol group: names, URLs and routing to parsed updates.

Stream layout (Binance since 2025, see DESIGN.md): klines and ``markPrice@1s`` are served under
``<ws_url>market/stream?streams=…``, ``bookTicker`` under ``<ws_url>public/stream?streams=…``; a
stream asked for on the wrong path is acknowledged and then stays silent. ``ws_url`` is what
python-binance calls ``BinanceSocketManager.FSTREAM_URL`` (``wss://fstream.binance.com/``).
The connection that carries them and its supervision are ``exchange.binance.connection``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.errors import MalformedMessage
from core.symbols import to_internal, to_ws
from exchange.binance.payloads import parse_book, parse_kline, parse_mark
from exchange.updates import KlineUpdate, Update

MARK_STREAM = "markPrice@1s"
BOOK_STREAM = "bookTicker"
#: Stream kind → URL category (``/market`` or ``/public``).
CATEGORY = {"kline": "market", "markPrice": "market", "bookTicker": "public"}


def stream_names(symbols: Sequence[str], intervals: Sequence[str]) -> dict[str, list[str]]:
    """Return the combined-stream names per URL category (``market``, ``public``) for ``symbols``."""
    market: list[str] = []
    public: list[str] = []
    for symbol in symbols:
        key = to_ws(symbol)
        market.extend(f"{key}@kline_{interval}" for interval in intervals)
        market.append(f"{key}@{MARK_STREAM}")
        public.append(f"{key}@{BOOK_STREAM}")
    return {"market": market, "public": public}


def stream_kind(stream: str) -> str:
    """Return the kind of a stream name: ``kline_1m``, ``kline_15m``, …, ``markPrice`` or ``bookTicker``."""
    _, _, rest = stream.partition("@")
    return rest.split("@", 1)[0]


def stream_url(ws_url: str, category: str, streams: Sequence[str]) -> tuple[str, str, str]:
    """Return python-binance's (url, prefix, path) of a combined-stream connection."""
    if category not in ("market", "public"):
        raise ValueError(f"stream category must be 'market' or 'public', got {category!r}")
    base = ws_url if ws_url.endswith("/") else ws_url + "/"
    return f"{base}{category}/", "stream?", "streams=" + "/".join(streams)


_PARSERS: dict[str, Callable[[Mapping[str, Any], object], Update]] = {
    "kline": parse_kline,
    "markPriceUpdate": parse_mark,
    "bookTicker": parse_book,
}


class StreamRouter:
    """Route combined-stream messages (``{"stream": …, "data": …}``) of one group to parsed updates.

    A message of a stream the group did not subscribe, a payload whose event type or symbol does
    not match its stream name, or a payload that does not parse raises MalformedMessage.
    Subscription acknowledgements (``{"result": null, "id": …}``) route to None.
    """

    def __init__(self, symbols: Sequence[str], intervals: Sequence[str]) -> None:
        names = stream_names(symbols, intervals)
        self._streams: dict[str, tuple[str, str]] = {}
        for name in names["market"] + names["public"]:
            key, _, rest = name.partition("@")
            kind = rest.split("@", 1)[0]
            event = (
                "kline" if kind.startswith("kline_") else ("markPriceUpdate" if kind == "markPrice" else kind)
            )
            self._streams[name] = (event, to_internal(key, "ws"))
        self.names = names

    def route(self, message: object) -> Update | None:
        """Return the parsed update of ``message`` (None for an acknowledgement)."""
        if not isinstance(message, Mapping):
            raise MalformedMessage(
                "bad_shape", f"message is a {type(message).__name__}, not an object", message
            )
        if "result" in message and "id" in message and "stream" not in message:
            return None
        stream, data = message.get("stream"), message.get("data")
        if not isinstance(stream, str) or not isinstance(data, Mapping):
            raise MalformedMessage("bad_shape", "message lacks 'stream' or 'data'", message)
        if stream not in self._streams:
            raise MalformedMessage("unknown_stream", f"stream {stream!r} was not subscribed", message)
        event, symbol = self._streams[stream]
        if data.get("e") != event:
            raise MalformedMessage(
                "wrong_event",
                f"stream {stream} carries {event!r} events, got {data.get('e')!r}",
                message,
                symbol,
            )
        update = _PARSERS[event](data, message)
        if update.symbol != symbol:
            raise MalformedMessage(
                "wrong_symbol",
                f"stream {stream} is {symbol}'s, payload says {update.symbol}",
                message,
                symbol,
            )
        if isinstance(update, KlineUpdate) and stream_kind(stream) != f"kline_{update.interval}":
            raise MalformedMessage(
                "wrong_interval", f"stream {stream} got a {update.interval} kline", message, symbol
            )
        return update
