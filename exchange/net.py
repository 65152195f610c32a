"""Classification of HTTP transport failures shared by the venue adapters."""

from __future__ import annotations

import requests
import urllib3.exceptions


def is_unreachable(error: BaseException) -> bool:
    """Return True if ``error`` means the server could not be reached at all.

    Connection refused, DNS failure and connect timeouts count; a reset or read timeout on an open
    connection does not (the server was there).
    """
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(error, requests.ConnectionError):
        return False
    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(
        reason,
        urllib3.exceptions.NewConnectionError
        | urllib3.exceptions.NameResolutionError
        | urllib3.exceptions.ConnectTimeoutError,
    )


def describe(error: BaseException | None) -> str:
    """Return a one-line description of a transport error, without the vendor's nested reprs."""
    if error is None:
        return "no attempt made"
    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "DNS lookup failed"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return (
            "connection refused" if "refused" in str(reason).lower() else f"cannot connect ({reason})"[:200]
        )
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return "read timeout"
    return f"{type(error).__name__}: {error}"[:300]
