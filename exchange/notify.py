"""Send ``core.notify`` notifications to Slack (incoming webhook) and Telegram (Bot API ``sendMessage``).

``Notifier.send`` never raises: the trading path calls it (through the health actor) and a chat
service being down must not stop anything. Each request has a timeout; a 429 is retried after its
``Retry-After`` (seconds, capped by ``retry_max_wait_s``; Telegram also gives
``parameters.retry_after`` in its JSON), a 5xx or a transport error after 0.5 s, 1 s, 2 s …, up to
``retries`` times; any other 4xx is given up at once. The webhook URL and the bot token (which sits
in the Telegram URL path) are masked with ``core.redact`` in every log line and returned error: what
is logged names the channel, the status and the attempt, never the URL; and the secrets are added to the
process's log redaction (``exchange.logging_safety``), since httpx itself logs each request URL. Lives in ``exchange``, the
layer of outbound HTTP, so the health actor can use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.notify import Notification, NotifyConfig, Throttle, slack_payload, telegram_payload
from core.redact import redact
from exchange.logging_safety import install_redaction

__all__ = ["TELEGRAM_API", "Notifier", "SendResult"]

log = logging.getLogger(__name__)
TELEGRAM_API = "https://api.telegram.org"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one notification on one channel: ``ok``, the attempts and the last error (redacted)."""

    channel: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str = ""


@dataclass
class _Stats:
    sent: int = 0
    failed: int = 0
    results: list[SendResult] = field(default_factory=list)


class Notifier:
    """Send notifications to the configured channels (module docstring). Thread-compatible: one owner."""

    def __init__(
        self,
        config: NotifyConfig,
        *,
        telegram_api: str = TELEGRAM_API,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        self.config = config
        self.throttle = Throttle(config)
        self._telegram_api = telegram_api.rstrip("/")
        self._sleep = sleep
        self._client = client or httpx.Client(timeout=config.timeout_s, follow_redirects=False)
        self._secrets = config.secrets()
        # httpx logs every request line (URL included) at INFO: mask the secrets in every record of the process
        install_redaction(self._secrets)
        self.stats = _Stats()

    def close(self) -> None:
        self._client.close()

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def send(self, n: Notification) -> list[SendResult]:
        """Send ``n`` to every configured channel unless the throttle drops it; never raises."""
        try:
            if not self.config.enabled or not self.throttle.allow(n):
                return []
            results = []
            if self.config.slack_enabled:
                assert self.config.slack_webhook_url is not None
                results.append(
                    self._post("slack", self.config.slack_webhook_url.get_secret_value(), slack_payload(n))
                )
            if self.config.telegram_enabled:
                assert self.config.telegram_bot_token is not None and self.config.telegram_chat_id is not None
                url = (
                    f"{self._telegram_api}/bot{self.config.telegram_bot_token.get_secret_value()}/sendMessage"
                )
                body = telegram_payload(n, self.config.telegram_chat_id.get_secret_value())
                results.append(self._post("telegram", url, body))
        except Exception as e:  # never into the trading path
            log.error("notify: could not send %s: %s", n.kind, self._redact(f"{type(e).__name__}: {e}"))
            return [SendResult("?", False, 0, None, self._redact(str(e)))]
        for r in results:
            self.stats.sent += r.ok
            self.stats.failed += not r.ok
            self.stats.results = [*self.stats.results[-99:], r]
        return results

    def _post(self, channel: str, url: str, body: dict[str, Any]) -> SendResult:
        attempts, status, error = 0, None, ""
        for attempt in range(self.config.retries + 1):
            attempts = attempt + 1
            wait: float | None
            try:
                resp = self._client.post(url, json=body, timeout=self.config.timeout_s)
            except httpx.HTTPError as e:
                status, error = None, self._redact(f"{type(e).__name__}: {e}")
                wait = 0.5 * 2**attempt
            else:
                status = resp.status_code
                if status < 300:
                    return SendResult(channel, True, attempts, status)
                error = self._redact(f"HTTP {status}: {resp.text[:200]}")
                if status == 429:
                    wait = self._retry_after(resp, attempt)
                elif status >= 500:
                    wait = 0.5 * 2**attempt
                else:
                    wait = None  # a 4xx other than 429: the request is wrong, sending it again will not help
            log.warning("notify: %s attempt %d failed: %s", channel, attempts, error)
            if wait is None or attempt == self.config.retries:
                break
            self._sleep(min(wait, self.config.retry_max_wait_s))
        log.error("notify: %s gave up after %d attempt(s): %s", channel, attempts, error)
        return SendResult(channel, False, attempts, status, error)

    @staticmethod
    def _retry_after(resp: httpx.Response, attempt: int) -> float:
        header = resp.headers.get("Retry-After")
        try:
            if header is not None:
                return max(0.0, float(header))
            params = resp.json().get("parameters") or {}
            return max(0.0, float(params["retry_after"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return 0.5 * 2**attempt
