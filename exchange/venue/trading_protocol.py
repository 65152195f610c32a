"""The paper broker's side of Binance USDⓈ-M's signed REST protocol, apart from the book.

``RequestAuth`` checks a request as Binance does: X-MBX-APIKEY (-2014 missing, -2015 wrong), then for
signed endpoints ``timestamp`` against the *wall clock* with ``recvWindow`` (-1021; python-binance
stamps wall time, not the replay clock) and the HMAC-SHA256 ``signature`` over the query string and
body (-1022). ``ListenKeys`` keeps the user-stream keys (60 wall minutes; PUT extends; unknown or
expired: -1125). ``Rejections`` queues the errors ``reject_next`` asks for. ``AccountModes`` keeps the
position mode (one-way or hedge) and the Multi-Assets mode; ``OrderCounts`` the order-rate headers
(X-MBX-ORDER-COUNT-10S/-1M) of order placements. The parameter parsers
check values with Binance's codes; quantities and trigger prices are exact Decimals checked against
the symbol's filters (MARKET_LOT_SIZE, PRICE_FILTER) and precisions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web

from exchange.venue.state import BinanceError
from exchange.venue.trading_events import SIDE_SIGN, SymbolRules

LISTEN_KEY_LIFE_MS = 60 * 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
#: Security of an endpoint: none, API key only (listenKey), API key and signature.
PUBLIC, USER_STREAM, SIGNED = 0, 1, 2
UNKNOWN_OUTCOME_CODES = (-1000, -1001, -1006, -1007, -1008)
CANCEL_ALL = {"code": 200, "msg": "The operation of cancel all open order is done."}
_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")

Params = Mapping[str, str]


class RequestAuth:
    """Parse a request's parameters (body, then the query string, which wins) and check its security."""

    def __init__(self, api_key: str, api_secret: str, wall_ms: Callable[[], int]) -> None:
        self._api_key = api_key
        self._secret = api_secret.encode()
        self._wall_ms = wall_ms

    async def params(self, request: web.Request, security: int) -> dict[str, str]:
        """Return the request's parameters; raise the BinanceError Binance answers a bad key or signature."""
        query = request.rel_url.raw_query_string
        body = await request.text() if request.can_read_body else ""
        params = dict(parse_qsl(body, keep_blank_values=True))
        params.update(parse_qsl(query, keep_blank_values=True))  # the query string wins, as on Binance
        if security == PUBLIC:
            return params
        key = request.headers.get("X-MBX-APIKEY", "")
        if not key:
            raise BinanceError(-2014, "API-key format invalid.", status=401)
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)
        if security == USER_STREAM:
            return params
        timestamp = int_param(params, "timestamp")
        recv_window = int_param(params, "recvWindow", DEFAULT_RECV_WINDOW_MS)
        if recv_window > MAX_RECV_WINDOW_MS:
            raise BinanceError(-1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}.")
        now = self._wall_ms()
        if timestamp >= now + 1000:
            raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - timestamp > recv_window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        signature = required(params, "signature")
        payload = _strip_signature(query) + _strip_signature(body)
        digests = {
            hmac.new(self._secret, p.encode(), hashlib.sha256).hexdigest()
            for p in (payload, unquote_plus(payload))
        }
        if not any(hmac.compare_digest(signature.lower(), d) for d in digests):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        return params


class ListenKeys:
    """The user-data stream's listenKeys, each alive 60 minutes of the wall clock after its last PUT.

    Thread-safe: ``expire_all`` comes from a test's thread while the venue's loop serves requests.
    """

    def __init__(self, wall_ms: Callable[[], int]) -> None:
        self._wall_ms = wall_ms
        self._expiry_ms: dict[str, int] = {}
        self._lock = threading.Lock()

    def valid(self, key: str) -> bool:
        """Whether ``key`` is live (created, not closed, kept alive within 60 minutes)."""
        with self._lock:
            expiry = self._expiry_ms.get(key)
        return expiry is not None and expiry > self._wall_ms()

    def new(self, p: Params) -> dict[str, str]:
        """``POST /fapi/v1/listenKey``: the live key, extended, or a new one."""
        now = self._wall_ms()
        with self._lock:
            live = [k for k, expiry in self._expiry_ms.items() if expiry > now]
            key = live[0] if live else secrets.token_hex(32)  # Binance answers the live key, extended
            self._expiry_ms[key] = now + LISTEN_KEY_LIFE_MS
        return {"listenKey": key}

    def keepalive(self, p: Params) -> dict[str, str]:
        """``PUT /fapi/v1/listenKey``: extend the given (or the live) key; -1125 when there is none."""
        now = self._wall_ms()
        with self._lock:
            key = p.get("listenKey") or next((k for k, e in self._expiry_ms.items() if e > now), "")
            if self._expiry_ms.get(key, 0) <= now:
                raise BinanceError(-1125, "This listenKey does not exist.")
            self._expiry_ms[key] = now + LISTEN_KEY_LIFE_MS
        return {"listenKey": key}

    def close(self, p: Params) -> dict[str, str]:
        """``DELETE /fapi/v1/listenKey``: forget the given key, or all of them."""
        key = p.get("listenKey")
        with self._lock:
            if key:
                self._expiry_ms.pop(key, None)
            else:
                self._expiry_ms.clear()
        return {}

    def expire_all(self) -> list[str]:
        """Forget every live key now, as if its 60 minutes had passed; return them."""
        now = self._wall_ms()
        with self._lock:
            live = [k for k, expiry in self._expiry_ms.items() if expiry > now]
            for key in live:
                del self._expiry_ms[key]
        return live


class Rejections:
    """Errors to answer the next new orders with (thread-safe: faults arrive from other threads); each
    for any new order, or only for a regular order (``"order"``) or only for an algo order (``"algo"``)."""

    def __init__(self) -> None:
        self._queue: list[tuple[int, str, str | None]] = []
        self._lock = threading.Lock()

    def add(self, code: int, msg: str, n: int, kind: str | None = None) -> None:
        if n < 0:
            raise ValueError(f"n must be ≥ 0, got {n}")
        if kind not in (None, "order", "algo"):
            raise ValueError(f"kind must be None, 'order' or 'algo', got {kind!r}")
        with self._lock:
            self._queue.extend([(int(code), str(msg), kind)] * n)

    def take(self, kind: str) -> None:
        """Raise the next queued error for a new order of ``kind``, if any: HTTP 503 for an unknown
        outcome, 429 for rate limits."""
        with self._lock:
            at = next((i for i, q in enumerate(self._queue) if q[2] in (None, kind)), None)
            if at is None:
                return
            code, msg, _ = self._queue.pop(at)
        status = 503 if code in UNKNOWN_OUTCOME_CODES else 429 if code in (-1003, -1015) else 400
        raise BinanceError(code, msg, status=status)


class AccountModes:
    """Position mode (``dualSidePosition``: hedge) and Multi-Assets mode; one-way single-asset by default.

    ``exposure()`` returns (has a position, has an open order or algo order): Binance refuses to
    change the position mode with either (-4068, -4067), and an unchanged mode with -4059. The
    paper book is one-way: in hedge mode every new order is refused with -4061 as Binance refuses
    ``positionSide=BOTH`` there (LONG/SHORT orders, which Binance would take, are not modelled).
    """

    def __init__(self, exposure: Callable[[], tuple[bool, bool]]) -> None:
        self._exposure = exposure
        self.dual_side = False
        self.multi_assets = False

    def get_dual(self, p: Params) -> dict[str, bool]:
        """``GET /fapi/v1/positionSide/dual``."""
        return {"dualSidePosition": self.dual_side}

    def set_dual(self, p: Params) -> dict[str, object]:
        """``POST /fapi/v1/positionSide/dual`` with ``dualSidePosition=true|false``."""
        value = _required_bool(p, "dualSidePosition")
        if value == self.dual_side:
            raise BinanceError(-4059, "No need to change position side.")
        has_position, has_orders = self._exposure()
        if has_position:
            raise BinanceError(-4068, "Position side cannot be changed if there exists position.")
        if has_orders:
            raise BinanceError(-4067, "Position side cannot be changed if there exists open orders.")
        self.dual_side = value
        return {"code": 200, "msg": "success"}

    def get_multi_assets(self, p: Params) -> dict[str, bool]:
        """``GET /fapi/v1/multiAssetsMargin``."""
        return {"multiAssetsMargin": self.multi_assets}

    def set_multi_assets(self, p: Params) -> dict[str, object]:
        """``POST /fapi/v1/multiAssetsMargin`` with ``multiAssetsMargin=true|false``."""
        self.multi_assets = _required_bool(p, "multiAssetsMargin")
        return {"code": 200, "msg": "success"}

    def check_order(self) -> None:
        """Refuse a new order in hedge mode (-4061): the venue's orders are one-way (``BOTH``)."""
        if self.dual_side:
            raise BinanceError(-4061, "Order's position side does not match user's setting. "
                                      "(The replay venue trades one-way positions only.)")  # fmt: skip


class OrderCounts:
    """Order placements in the last 10 s and 60 s of the wall clock, as Binance's order-rate headers."""

    def __init__(self, wall_ms: Callable[[], int]) -> None:
        self._wall_ms = wall_ms
        self._times: deque[int] = deque()
        self._lock = threading.Lock()

    def add(self) -> dict[str, str]:
        """Count one placement now; return the ``X-MBX-ORDER-COUNT-10S``/``-1M`` headers."""
        now = self._wall_ms()
        with self._lock:
            self._times.append(now)
            while self._times and self._times[0] <= now - 60_000:
                self._times.popleft()
            last_10s = sum(1 for t in self._times if t > now - 10_000)
            return {"X-MBX-ORDER-COUNT-10S": str(last_10s), "X-MBX-ORDER-COUNT-1M": str(len(self._times))}


# --- parameters ------------------------------------------------------------------------------------
def required(p: Params, name: str) -> str:
    value = p.get(name)
    if value is None or value == "":
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return str(value)


def parse_int(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 20:
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(value)


def _required_bool(p: Params, name: str) -> bool:
    value = required(p, name).lower()
    if value not in ("true", "false"):
        raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return value == "true"


def int_param(p: Params, name: str, default: int | None = None) -> int:
    if default is not None and not p.get(name):
        return default
    return parse_int(name, required(p, name))


def limit(p: Params, default: int, maximum: int) -> int:
    value = int_param(p, "limit", default)
    if not 1 <= value <= maximum:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    return value


def bool_param(p: Params, name: str) -> bool:
    value = p.get(name, "false").lower()
    if value not in ("true", "false"):
        raise BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return value == "true"


def symbol_param(p: Params, rules: Mapping[str, SymbolRules]) -> tuple[str, SymbolRules]:
    """Return ``symbol`` and its rules; -1121 for a symbol the venue does not trade."""
    symbol = required(p, "symbol")
    if symbol not in rules:
        raise BinanceError(-1121, "Invalid symbol.")
    return symbol, rules[symbol]


def side_param(p: Params) -> str:
    side = required(p, "side")
    if side not in SIDE_SIGN:
        raise BinanceError(-1117, "Invalid side.")
    return side


def check_position_side(p: Params) -> None:
    if p.get("positionSide", "BOTH") != "BOTH":
        raise BinanceError(-4061, "Order's position side does not match user's setting.")


def client_id(p: Params, name: str) -> str:
    """Return the client id ``name`` (newClientOrderId, clientAlgoId), or a generated one; -4015 if bad."""
    value = p.get(name) or f"venue-{secrets.token_hex(11)}"
    if not _CLIENT_ID.match(value):
        raise BinanceError(
            -4015, f"Client order id is not valid: {name} must match ^[.A-Z:/a-z0-9_-]{{1,36}}$."
        )
    return value


def decimal_param(p: Params, name: str) -> Decimal:
    raw = required(p, name)
    if not _DECIMAL.match(raw):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")  # fmt: skip
    try:
        return Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.") from None


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def quantity(p: Params, rules: SymbolRules) -> Decimal:
    """Parse ``quantity`` and check it against MARKET_LOT_SIZE and quantityPrecision."""
    qty = decimal_param(p, "quantity")
    if qty <= 0:
        raise BinanceError(-4003, "Quantity less than or equal to zero.")
    if _places(qty) > rules.quantity_precision:
        raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
    if qty < rules.min_qty:
        raise BinanceError(-4004, f"Quantity less than min quantity ({rules.min_qty}).")
    if qty > rules.max_qty:
        raise BinanceError(-4005, f"Quantity greater than max quantity ({rules.max_qty}).")
    if rules.step and (qty - rules.min_qty) % rules.step:
        raise BinanceError(-4023, f"Qty not increased by step size ({rules.step}).")
    return qty


def trigger_price(p: Params, rules: SymbolRules) -> Decimal:
    """Parse ``triggerPrice`` and check it against PRICE_FILTER and pricePrecision."""
    price = decimal_param(p, "triggerPrice")
    if price <= 0:
        raise BinanceError(-4006, "Stop price less than zero.")
    if _places(price) > rules.price_precision:
        raise BinanceError(-1111, "Precision is over the maximum defined for this asset.")
    if price < rules.min_price:
        raise BinanceError(-4013, f"Price less than min price ({rules.min_price}).")
    if price > rules.max_price:
        raise BinanceError(-4007, f"Stop price greater than max price ({rules.max_price}).")
    if rules.tick and (price - rules.min_price) % rules.tick:
        raise BinanceError(-4014, f"Price not increased by tick size ({rules.tick}).")
    return price


def notional_msg(rules: SymbolRules) -> str:
    return f"Order's notional must be no smaller than {rules.min_notional:f} (unless you choose reduce only)."


def _strip_signature(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))
