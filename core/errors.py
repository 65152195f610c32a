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


class SchemaMismatchError(FatalError):
    """Rows, features or models of another schema version or spec hash."""
