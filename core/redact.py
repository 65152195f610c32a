"""Redact secrets from text before it reaches a log, an audit file or a terminal.

``redact`` masks, with ``***``, every given secret value (and its URL-encoded form) and, by
pattern, whatever Binance requests carry that must never be written down: the ``signature=``
query parameter, the ``X-MBX-APIKEY`` header (as a header line or in a ``dict`` repr), the
``listenKey`` (query parameter or JSON value), the JSON (or ``repr``) values of ``apiKey``,
``api_key``, ``secret``, ``signature`` and ``listenKey``, and Fernet tokens.

``RedactingFilter`` is a ``logging.Filter`` that does the same to a record's message, arguments,
exception and stack text. It never drops a record and never raises: a record it cannot format is
replaced by a placeholder naming the logger, not passed through unredacted.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable

__all__ = ["MASK", "RedactingFilter", "redact"]

MASK = "***"

#: Secrets shorter than this are not replaced as plain text: a 1–3 character "secret" would shred
#: every log line, and no real key or passphrase is that short.
MIN_SECRET_CHARS = 4

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # query parameters: signature=<hex>, listenKey=<value> (also URL-encoded in a logged URL)
    (re.compile(r"(?P<k>\b(?:signature|listenKey)=)[^&\s\"'<>]+", re.IGNORECASE), rf"\g<k>{MASK}"),
    # the API key header: "X-MBX-APIKEY: value" and "'X-MBX-APIKEY': 'value'" (a headers dict repr)
    (
        re.compile(r"(?P<k>X-MBX-APIKEY(?P<q>['\"]?)\s*[:=]\s*)(?P<o>['\"]?)[^\s'\",}]+", re.IGNORECASE),
        rf"\g<k>\g<o>{MASK}",
    ),
    # JSON or repr values of the secret fields: "apiKey": "v", 'secret': 'v', "listenKey":"v"
    (
        re.compile(
            r"(?P<k>(?P<q>['\"])(?:apiKey|api_key|api_secret|apiSecret|secret|signature|listenKey)(?P=q)\s*:\s*)"
            r"(?P<o>['\"])(?:\\.|(?!(?P=o)).)*(?P=o)",
            re.IGNORECASE,
        ),
        rf"\g<k>\g<o>{MASK}\g<o>",
    ),
    # Fernet tokens: url-safe base64 of version byte 0x80 + 8-byte timestamp + IV + ciphertext + HMAC
    (re.compile(r"gAAAAA[A-Za-z0-9_\-]{40,}={0,2}"), MASK),
)


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _percent_encoded(secret: str, *, plus: bool) -> str:
    # urllib.parse.quote(safe="") / quote_plus, without importing urllib into core (no I/O modules)
    out = []
    for byte in secret.encode("utf-8"):
        if byte in _UNRESERVED:
            out.append(chr(byte))
        elif plus and byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _variants(secret: str) -> set[str]:
    return {secret, _percent_encoded(secret, plus=False), _percent_encoded(secret, plus=True)}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret value and every known secret-bearing pattern replaced by ``***``.

    Secrets shorter than ``MIN_SECRET_CHARS`` characters are ignored; longer ones are replaced first
    (so a secret that contains another is masked whole).
    """
    values = {v for s in secrets if s and len(s) >= MIN_SECRET_CHARS for v in _variants(s)}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Redact a record's message, arguments, exception and stack text; keep every record.

    The formatted message replaces ``msg`` and ``args`` is emptied, so no handler or formatter can
    format the raw arguments again. A record's exception is formatted here, redacted into
    ``exc_text`` and its ``exc_info`` dropped (a handler that renders ``exc_info`` itself would
    otherwise show the raw values). Thread-safe: ``add_secret`` may run while others log.
    """

    def __init__(self, secrets: Iterable[str] = (), name: str = "") -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        for s in secrets:
            self.add_secret(s)

    def add_secret(self, value: str | None) -> None:
        """Mask ``value`` in every record from now on (empty and ``None`` are ignored)."""
        if not value:
            return
        with self._lock:
            if value not in self._secrets:
                self._secrets = (*self._secrets, value)

    @property
    def secret_count(self) -> int:
        return len(self._secrets)

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact_record(record)
        except Exception:  # a filter that raises loses the record; one that passes it through leaks
            try:
                record.msg = f"<log record of {record.name} could not be redacted>"
                record.args = ()
                record.exc_info = record.exc_text = record.stack_info = None
            except Exception:
                pass
        return True

    def _redact_record(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # bad format arguments: logging would print its own error; show the parts
            message = f"{record.msg!s} {record.args!r}"
        record.msg = self.redact(message)
        record.args = ()
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
