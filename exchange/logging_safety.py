"""Install secret redaction on this process's logging (issue 15, safety of operation). It lives in
``exchange``, beside the clients whose libraries log request lines, so that the live book's actor and
the CLI both install it (``actors`` may not import ``raytrade``).

``install_redaction(secrets)`` puts one ``core.redact.RedactingFilter`` in two places:

- the log record factory (``logging.setLogRecordFactory``): every record any logger creates —
  ours, ``urllib3``'s (which logs each request line, ``signature=`` included, at DEBUG),
  ``requests``', ``websockets``' — is redacted as it is made, before any handler, including
  handlers added later or attached to non-root loggers, can see it;
- every handler of the root logger: records that reach them without going through the factory
  (``logging.makeLogRecord``, a ``QueueListener`` replaying records) are redacted there too.

A logger-level filter alone would not do: filters on a logger see only the records logged on
that logger, never the ones propagated up from ``urllib3.connectionpool``.

Calling it again adds the new secrets to the same filter; it never stacks a second factory or
a second filter. Each process installs its own (a Ray worker is another process).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from core.redact import RedactingFilter

__all__ = ["install_redaction", "redaction_filter", "uninstall_redaction"]

_lock = threading.Lock()
_installed: dict[str, Any] = {}  # "filter" → the filter, "previous" → the factory it wraps


def redaction_filter() -> RedactingFilter | None:
    """Return the installed filter, or None when ``install_redaction`` has not run."""
    return _installed.get("filter")


def install_redaction(secrets: Iterable[str | None] = ()) -> RedactingFilter:
    """Redact ``secrets`` (and signatures, API-key headers, listen keys, Fernet tokens) in every log record.

    Return the one filter of this process; ``add_secret`` on it masks a secret learned later
    (a listen key, say).
    """
    with _lock:
        filt: RedactingFilter | None = _installed.get("filter")
        if filt is None:
            filt = RedactingFilter()
            previous = logging.getLogRecordFactory()
            _installed.update(filter=filt, previous=previous)
            logging.setLogRecordFactory(_factory(previous, filt))
        for s in secrets:
            filt.add_secret(s)
        for handler in logging.getLogger().handlers:
            if filt not in handler.filters:
                handler.addFilter(filt)
        return filt


def uninstall_redaction() -> None:
    """Undo ``install_redaction`` (tests): restore the record factory and detach the filter."""
    with _lock:
        filt = _installed.pop("filter", None)
        previous = _installed.pop("previous", None)
        if filt is None:
            return
        if previous is not None:
            logging.setLogRecordFactory(previous)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(filt)


def _factory(
    previous: Callable[..., logging.LogRecord], filt: RedactingFilter
) -> Callable[..., logging.LogRecord]:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        filt.filter(record)
        return record

    return make_record
