"""Signed Binance USDⓈ-M REST transport: signing, clock offset, rate limits and what a failure means.

``SignedTransport`` sends requests over one keep-alive ``requests`` session to ``/fapi`` (Binance, the
testnet or the replay venue: ``TradingConfig.base_url``). Signed requests carry ``timestamp`` (our
clock plus the offset kept from ``/fapi/v1/time``), ``recvWindow`` and an HMAC-SHA256 ``signature``
of the query string, with the API key in ``X-MBX-APIKEY``; -1021 resyncs the clock and sends once
more. ``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-ORDER-COUNT-10S``/``-1M`` are kept (``usage``): at the
budget (limit × headroom) a request waits for the next window. 429/418 set a back-off from
``Retry-After``: a request waits when it is within ``max_rate_wait_s``, otherwise it raises
``RateLimitedError`` carrying the wait, and is not sent.

What a failure means depends on the request. Reads and settings (``action`` read/write) retry
transient failures and then raise ``TransientError`` (``UnreachableError`` when nothing answered).
An order request (new, cancel) that may have been carried out — a read timeout, a connection closed
after sending, HTTP 5xx, -1006/-1007 — raises ``OrderOutcomeUnknown``, never a rejection; one that
surely was not — nothing connected, 429/418, a 4xx with a Binance code (``BinanceRejection`` with
``code`` and ``msg``) — raises that. The API secret appears in no log, exception or repr; neither do
signatures or query strings.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from core.errors import (
    FatalError,
    MalformedMessage,
    RejectedError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from exchange.binance.rest import FAPI_MAINNET, WEIGHT_HEADER
from exchange.net import describe, is_unreachable

FAPI_TESTNET = "https://testnet.binancefuture.com"
#: Order-rate headers and the length of their windows, ms.
ORDER_COUNT_HEADERS = {"X-MBX-ORDER-COUNT-10S": 10_000, "X-MBX-ORDER-COUNT-1M": 60_000}
#: Binance codes whose order may or may not have been executed (with HTTP 5xx: always unknown).
UNKNOWN_OUTCOME_CODES = (-1006, -1007)
#: New-order paths, counted against the order-rate limits.
PLACEMENT_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder")
Action = Literal["read", "write", "order"]

log = logging.getLogger(__name__)


class TradingConfig(BaseModel):
    """How the trading client reaches Binance and what it accepts at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(FAPI_MAINNET, description="REST base: Binance, FAPI_TESTNET or the replay venue")
    api_key: SecretStr
    api_secret: SecretStr
    recv_window_ms: int = Field(5_000, ge=100, le=60_000, description="recvWindow of signed requests, ms")
    connect_timeout_s: float = Field(3.0, gt=0, description="TCP connect timeout, s (nothing is sent before)")
    timeout_s: float = Field(10.0, gt=0, description="read timeout, s; past it an order's outcome is unknown")
    read_attempts: int = Field(
        3, ge=1, le=10, description="attempts of a read or setting on transient failures"
    )
    backoff_s: float = Field(0.2, ge=0, description="first back-off between attempts, s (doubles)")
    sync_clock: bool = Field(
        True,
        description="keep the offset from /fapi/v1/time; False for the replay venue, whose /fapi/v1/time is "
        "replay time while it checks timestamps against the wall clock",
    )
    max_clock_offset_ms: int = Field(
        60_000, gt=0, description="a larger offset is refused (ClockOffsetError)"
    )
    max_rate_wait_s: float = Field(5.0, ge=0, description="longest rate-limit wait inside a call, s")
    weight_limit_1m: int = Field(2_400, gt=0, description="request weight per minute (exchangeInfo)")
    order_limit_10s: int = Field(300, gt=0, description="orders per 10 s (exchangeInfo)")
    order_limit_1m: int = Field(1_200, gt=0, description="orders per minute (exchangeInfo)")
    rate_headroom: float = Field(0.9, gt=0, le=1, description="share of a limit used before waiting")
    allow_hedge_mode: bool = Field(
        False, description="accept an account in hedge mode (orders carry positionSide)"
    )
    allow_multi_assets_mode: bool = Field(False, description="accept an account in Multi-Assets mode")
    margin_type: Literal["ISOLATED", "CROSSED"] = Field("ISOLATED", description="set on every traded symbol")
    remembered_ids: int = Field(10_000, ge=100, description="client ids remembered against duplicates")

    @model_validator(mode="after")
    def _check(self) -> TradingConfig:
        if self.allow_multi_assets_mode and self.margin_type == "ISOLATED":
            raise ValueError(
                "allow_multi_assets_mode needs margin_type CROSSED: Multi-Assets mode has no isolated margin"
            )
        return self


class BinanceRejection(RejectedError):
    """Binance refused the request (HTTP 4xx with a code): never retry it as is."""

    def __init__(self, path: str, http_status: int, code: int | None, msg: str) -> None:
        super().__init__(f"{path}: HTTP {http_status}, code {code}: {msg}")
        self.path, self.http_status, self.code, self.msg = path, http_status, code, msg

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.http_status, self.code, self.msg)


class OrderOutcomeUnknown(UnknownOutcomeError):
    """An order request may or may not have been carried out: resolve ``client_id`` before anything else.

    ``settled_after_ms`` (server time) is the request's timestamp plus recvWindow: Binance refuses
    the request after it, so an order absent then is not one still on its way.
    """

    def __init__(self, path: str, symbol: str, client_id: str, reason: str, settled_after_ms: int) -> None:
        super().__init__(f"{path} {symbol} {client_id}: outcome unknown ({reason})")
        self.path, self.symbol, self.client_id = path, symbol, client_id
        self.reason, self.settled_after_ms = reason, settled_after_ms

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.symbol, self.client_id, self.reason, self.settled_after_ms)


class RateLimitedError(TransientError):
    """Rate limited (429/418, or our own budget): not carried out; retry after ``retry_after_s``."""

    def __init__(self, path: str, retry_after_s: float, detail: str) -> None:
        super().__init__(f"{path}: rate limited for {retry_after_s:.1f} s ({detail})")
        self.path, self.retry_after_s, self.detail = path, retry_after_s, detail

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.retry_after_s, self.detail)


class ClockOffsetError(FatalError):
    """Our clock and Binance's differ by more than ``max_clock_offset_ms``: fix the system clock."""


@dataclass(frozen=True, slots=True)
class RateUsage:
    """Request weight and order counts from the last answers' headers (None before one)."""

    used_weight_1m: int | None
    order_count_10s: int | None
    order_count_1m: int | None
    backoff_until_ms: int  # server time until which a 429/418 asked us to wait; 0 when none


class SignedTransport:
    """One session to ``config.base_url`` (module docstring).

    ``sleep`` (seconds) and ``wall_clock_ms`` (our clock, epoch ms) default to the system's; tests
    inject them.
    """

    def __init__(
        self,
        config: TradingConfig,
        *,
        sleep: Callable[[float], None] | None = None,
        wall_clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/").removesuffix("/fapi")
        self._session = requests.Session()
        self._sleep = sleep or time.sleep
        self._wall_clock_ms = wall_clock_ms or (lambda: int(time.time() * 1000))
        #: Server time minus our clock, ms (0 until synced, or with sync_clock off).
        self.clock_offset_ms = 0
        self._usage: dict[str, tuple[int, int]] = {}  # header → (value, server ms when read)
        self._backoff_until_ms = 0

    def __repr__(self) -> str:
        return f"SignedTransport(base_url={self.base_url!r}, api_key='**********')"

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def now_ms(self) -> int:
        """Our estimate of Binance's clock, epoch ms."""
        return self._wall_clock_ms() + self.clock_offset_ms

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` with the injected sleep (nothing for ≤ 0)."""
        if seconds > 0:
            self._sleep(seconds)

    def sync_clock(self) -> int:
        """Measure the offset to ``/fapi/v1/time`` (midpoint of the round trip), keep it and return it, ms."""
        before = self._wall_clock_ms()
        server_ms = int(self.call("GET", "/fapi/v1/time", signed=False)["serverTime"])
        after = self._wall_clock_ms()
        offset = server_ms - (before + after) // 2
        if abs(offset) > self.config.max_clock_offset_ms:
            raise ClockOffsetError(
                f"{self.base_url}: server clock differs from ours by {offset} ms (limit "
                f"{self.config.max_clock_offset_ms} ms): fix the system clock (NTP); against the replay "
                "venue set sync_clock=False"
            )
        self.clock_offset_ms = offset
        return offset

    @property
    def usage(self) -> RateUsage:
        """The request weight and order counts Binance last reported, and any back-off."""
        value = {name: v for name, (v, _) in self._usage.items()}
        return RateUsage(
            value.get(WEIGHT_HEADER),
            value.get("X-MBX-ORDER-COUNT-10S"),
            value.get("X-MBX-ORDER-COUNT-1M"),
            self._backoff_until_ms,
        )

    def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        signed: bool = True,
        action: Action = "read",
        ref: tuple[str, str] = ("", ""),
    ) -> Any:
        """Send one request and return its decoded JSON (module docstring for retries and errors).

        ``ref`` (symbol, client id) names the order of an ``order`` request in OrderOutcomeUnknown.
        """
        attempts = 1 if action == "order" else self.config.read_attempts
        attempt, resynced, waited = 0, False, False
        while True:
            self._respect_limits(path, placement=method == "POST" and path in PLACEMENT_PATHS)
            timestamp_ms, url = self._url(path, params, signed=signed)
            began = time.monotonic()
            try:
                response = self._session.request(
                    method,
                    url,
                    headers={"X-MBX-APIKEY": self.config.api_key.get_secret_value()},
                    timeout=(self.config.connect_timeout_s, self.config.timeout_s),
                    allow_redirects=False,
                )
            except requests.RequestException as e:
                what = _describe(e)
                log.warning("%s %s: %s", method, path, what)
                if action == "order" and not is_unreachable(e):
                    raise self._unknown(path, ref, what, timestamp_ms) from e
                attempt += 1
                if attempt < attempts:
                    self.sleep(self.config.backoff_s * 2 ** (attempt - 1))
                    continue
                error = UnreachableError if is_unreachable(e) else TransientError
                raise error(f"{method} {path}: {what} after {attempt} attempt(s) to {self.base_url}") from e
            self._note_usage(response)
            status = response.status_code
            body = _decode(response)
            log.debug("%s %s: HTTP %s in %.0f ms", method, path, status, (time.monotonic() - began) * 1000)
            if 200 <= status < 300:
                if body is _NOT_JSON:
                    if action == "order":
                        raise self._unknown(path, ref, f"HTTP {status} without a JSON answer", timestamp_ms)
                    raise MalformedMessage(
                        "bad_shape", f"{method} {path}: HTTP {status} without a JSON answer", None
                    )
                return body
            code, msg = _error_of(body)
            detail = f"HTTP {status}, code {code}: {msg}"
            if status in (418, 429):  # refused for the rate: nothing was carried out
                wait_s = self._back_off(response)
                if not waited and wait_s <= self.config.max_rate_wait_s:
                    waited = True
                    log.warning("%s %s: %s; waiting %.1f s", method, path, detail, wait_s)
                    self.sleep(wait_s)
                    continue
                raise RateLimitedError(path, wait_s, detail)
            if status >= 500 or code in UNKNOWN_OUTCOME_CODES:
                if action == "order":
                    raise self._unknown(path, ref, detail, timestamp_ms)
                attempt += 1
                if attempt < attempts:
                    self.sleep(self.config.backoff_s * 2 ** (attempt - 1))
                    continue
                raise TransientError(f"{method} {path}: {detail} after {attempt} attempt(s)")
            if code == -1021 and not resynced:  # refused for its timestamp: nothing was carried out
                resynced = True
                log.warning("%s %s: %s; resyncing the clock and sending again", method, path, detail)
                if self.config.sync_clock:
                    self.sync_clock()
                continue
            raise BinanceRejection(path, status, code, msg)

    def _url(self, path: str, params: Mapping[str, str | int] | None, *, signed: bool) -> tuple[int, str]:
        query = dict(params or {})
        timestamp_ms = self.now_ms()
        if signed:
            query["recvWindow"] = self.config.recv_window_ms
            query["timestamp"] = timestamp_ms
        encoded = urlencode(query)
        if signed:
            secret = self.config.api_secret.get_secret_value().encode()
            encoded += "&signature=" + hmac.new(secret, encoded.encode(), hashlib.sha256).hexdigest()
        return timestamp_ms, f"{self.base_url}{path}" + (f"?{encoded}" if encoded else "")

    def _unknown(
        self, path: str, ref: tuple[str, str], reason: str, timestamp_ms: int
    ) -> OrderOutcomeUnknown:
        log.warning("%s %s %s: outcome unknown (%s)", path, ref[0], ref[1], reason)
        return OrderOutcomeUnknown(path, ref[0], ref[1], reason, timestamp_ms + self.config.recv_window_ms)

    def _note_usage(self, response: requests.Response) -> None:
        now = self.now_ms()
        for name in (WEIGHT_HEADER, *ORDER_COUNT_HEADERS):
            value = response.headers.get(name)
            if value is not None and value.isdigit():
                self._usage[name] = (int(value), now)

    def _back_off(self, response: requests.Response) -> float:
        try:
            wait_s = max(float(response.headers.get("Retry-After", "")), 0.0)
        except ValueError:
            wait_s = 1.0  # Binance sends Retry-After with 429/418; without one, wait a second
        self._backoff_until_ms = max(self._backoff_until_ms, self.now_ms() + int(wait_s * 1000))
        return wait_s

    def _respect_limits(self, path: str, *, placement: bool) -> None:
        """Wait for (or refuse, beyond max_rate_wait_s) a Retry-After back-off or a spent budget."""
        now = self.now_ms()
        waits = [(self._backoff_until_ms - now, "the Retry-After of an earlier 429/418")]
        budgets = {WEIGHT_HEADER: (self.config.weight_limit_1m, 60_000)}
        if placement:
            budgets["X-MBX-ORDER-COUNT-10S"] = (self.config.order_limit_10s, 10_000)
            budgets["X-MBX-ORDER-COUNT-1M"] = (self.config.order_limit_1m, 60_000)
        for name, (limit, window_ms) in budgets.items():
            value, at_ms = self._usage.get(name, (0, 0))
            if value >= limit * self.config.rate_headroom and now // window_ms == at_ms // window_ms:
                waits.append(((now // window_ms + 1) * window_ms - now + 50, f"{name} {value} of {limit}"))
        wait_ms, reason = max(waits)
        if wait_ms <= 0:
            return
        if wait_ms / 1000 > self.config.max_rate_wait_s:
            raise RateLimitedError(path, wait_ms / 1000, f"not sent: {reason}")
        log.info("%s: waiting %.2f s for %s", path, wait_ms / 1000, reason)
        self.sleep(wait_ms / 1000)


_NOT_JSON = object()
_QUERY = re.compile(r"\?[^\s'\")]*")


def _describe(error: BaseException) -> str:
    # requests' messages can quote the URL, whose query string holds the signature
    return _QUERY.sub("?…", describe(error))


def _decode(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return _NOT_JSON


def _error_of(body: Any) -> tuple[int | None, str]:
    if isinstance(body, Mapping) and isinstance(body.get("code"), int):
        return int(body["code"]), str(body.get("msg", ""))
    return None, "no Binance error in the answer"
