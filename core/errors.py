"""Error taxonomy: grouped by what the caller should do (STYLE.md).

A risk denial is not an error: it is a returned value with reason codes.
"""

from __future__ import annotations


class RaytradeError(Exception):
    """Base of every error raised on purpose by raytrade."""


class FatalError(RaytradeError):
    """Stop: bad configuration or a broken invariant. Retrying cannot help."""


class ConfigError(FatalError):
    """Configuration is invalid; the message names the key and the problem."""


class TransientError(RaytradeError):
    """Retry with backoff: network, 5xx, rate limit, database temporarily down."""


class UnreachableError(TransientError):
    """The server could not be reached at all (connection refused, DNS failure, connect timeout)."""


class RejectedError(RaytradeError):
    """The venue or a validator said no. Never retry as is."""


class UnknownOutcomeError(RaytradeError):
    """The outcome of a request is unknown (timeout, 5xx on an order): query before doing anything else."""


class DataQualityError(RejectedError):
    """Input data failed validation; the message names the field and the problem."""


class MalformedMessage(DataQualityError):
    """A message from the venue that cannot be used (missing field, bad number, crossed book, …).

    Rejected, not transient: the same payload parsed again fails again, so it is never retried; the
    caller records it (a ``data_quality.malformed_message`` event with the raw payload) and goes on
    with the next message. Not fatal: one bad message says nothing about the connection or the
    configuration. ``reason`` is a short code (``missing_field``, ``bad_number``, ``bad_value``,
    ``bad_shape``, ``bad_symbol``, ``off_grid``, ``ohlc_outside_range``, ``crossed_book``,
    ``unknown_stream``, ``wrong_event``, ``wrong_symbol``, ``wrong_interval``), ``detail`` says what
    was wrong, ``payload`` is the raw message and ``symbol`` the symbol it concerns when known.
    """

    def __init__(self, reason: str, detail: str, payload: object, symbol: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.payload = payload
        self.symbol = symbol

    def __reduce__(self) -> tuple[type[MalformedMessage], tuple[str, str, object, str | None]]:
        # the default rebuilds from ``args`` (the message only); Ray pickles errors across processes
        return type(self), (self.reason, self.detail, self.payload, self.symbol)


class SchemaMismatchError(FatalError):
    """Rows, features or models of another schema version or spec hash."""
