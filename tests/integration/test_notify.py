"""Slack and Telegram notifications (exchange.notify) against a real HTTP server on loopback."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from core.notify import NotifyConfig, daily_report_notification, fill_notification, killswitch_notification
from exchange.logging_safety import uninstall_redaction
from exchange.notify import Notifier

HOOK_SECRET = "T000/B000/hooksecretXYZ123"
BOT_TOKEN = "123456:AAbotSECRETtoken987"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.script: list[tuple[int, dict[str, str]]] = []  # answers to give, in order; then 200


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rec.requests.append((self.path, body))
            status, headers = rec.script.pop(0) if rec.script else (200, {})
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            payload = b'{"ok": true}' if status == 200 else f"error at {self.path}".encode()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", rec
    httpd.shutdown()
    httpd.server_close()
    uninstall_redaction()


def notifier(base: str, sleeps: list[float], **kw: Any) -> Notifier:
    cfg = NotifyConfig(slack_webhook_url=SecretStr(f"{base}/services/{HOOK_SECRET}"), telegram_bot_token=SecretStr(BOT_TOKEN),
                       telegram_chat_id=SecretStr("-100777"), dedup_window_s=0, **kw)  # fmt: skip
    return Notifier(cfg, telegram_api=base, sleep=sleeps.append)


FILL = {"symbol": "BTCUSDT", "side": "LONG", "ts": 1_717_200_000_000, "event_type": "FINAL", "exit_reason": "TP",
        "exit_price": 61234.5, "amt": 0.01, "realized_pnl": 12.34, "trade_group_id": "g1", "mode": "shadow"}  # fmt: skip


def test_slack_and_telegram_get_their_payload_shapes(server: tuple[str, Recorder]) -> None:
    base, rec = server
    n = notifier(base, [])
    results = n.send(fill_notification(FILL))
    assert [r.ok for r in results] == [True, True]
    (slack_path, slack), (tg_path, tg) = rec.requests
    assert slack_path == f"/services/{HOOK_SECRET}"
    assert "BTCUSDT LONG closed (TP)" in slack["text"] and slack["blocks"][0]["type"] == "section"
    assert "12.34 USDT" in slack["blocks"][0]["text"]["text"]
    assert tg_path == f"/bot{BOT_TOKEN}/sendMessage"
    assert tg["chat_id"] == "-100777" and "BTCUSDT LONG closed" in tg["text"] and "parse_mode" not in tg


def test_retry_on_500_then_success_and_429_waits_retry_after(server: tuple[str, Recorder]) -> None:
    base, rec = server
    sleeps: list[float] = []
    n = notifier(base, sleeps, events=frozenset({"killswitch"}))
    rec.script = [(500, {}), (429, {"Retry-After": "7"}), (200, {}), (200, {})]
    (slack, tg) = n.send(killswitch_notification(1_717_200_000_000, "killswitch.entries_blocked",
                                                 {"event": {"reason": "operator", "detail": "cli kill"}}))  # fmt: skip
    assert slack.ok and slack.attempts == 3 and tg.ok and tg.attempts == 1
    assert sleeps == [0.5, 7.0]
    assert len(rec.requests) == 4


def test_gives_up_without_raising_and_secrets_never_logged(
    server: tuple[str, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    base, rec = server
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    n = notifier(base, sleeps, retries=2)
    rec.script = [(503, {})] * 3 + [(400, {})]
    (slack, tg) = n.send(daily_report_notification(1_717_200_000_000, "2024-05-31",
                                                   {"pnl": 5.0, "trades": 4, "wins": 3, "equity": 10_005.0, "open_positions": ["ETHUSDT"]}))  # fmt: skip
    assert not slack.ok and slack.attempts == 3 and slack.status == 503
    assert not tg.ok and tg.attempts == 1 and tg.status == 400  # a 4xx is not retried
    assert "error at" in slack.error and HOOK_SECRET not in slack.error and BOT_TOKEN not in tg.error
    text = caplog.text + repr(n.stats.results)
    assert "gave up" in caplog.text
    assert HOOK_SECRET not in text and BOT_TOKEN not in text and "hooksecret" not in text
    # an unreachable server: a transport error, retried, no exception
    dead = Notifier(NotifyConfig(slack_webhook_url=SecretStr(f"http://127.0.0.1:1/{HOOK_SECRET}"), retries=1, timeout_s=1),
                    sleep=sleeps.append)  # fmt: skip
    (r,) = dead.send(fill_notification(FILL))
    assert not r.ok and r.attempts == 2 and HOOK_SECRET not in r.error and HOOK_SECRET not in caplog.text


def test_throttle_drops_disabled_kinds_duplicates_and_bursts(server: tuple[str, Recorder]) -> None:
    base, rec = server
    cfg = NotifyConfig(
        slack_webhook_url=SecretStr(f"{base}/s/{HOOK_SECRET}"), events=frozenset({"fill"}), max_per_minute=2
    )
    n = Notifier(cfg, sleep=lambda s: None)
    assert n.send(killswitch_notification(0, "killswitch.resumed", {})) == []
    assert len(n.send(fill_notification(FILL))) == 1
    assert n.send(fill_notification(FILL)) == []  # same subject within the window
    assert len(n.send(fill_notification({**FILL, "ts": FILL["ts"] + 1}))) == 1
    assert n.send(fill_notification({**FILL, "ts": FILL["ts"] + 2})) == []  # 2 a minute
    assert n.throttle.dropped == {"disabled": 1, "duplicate": 1, "rate": 1} and len(rec.requests) == 2
