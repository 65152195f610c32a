"""exchange.logging_safety: a real ``requests`` call to a local HTTP server with urllib3 DEBUG on logs
no signature, API key or secret, through handlers attached before and after the installation."""

from __future__ import annotations

import http.server
import io
import logging
import threading
from collections.abc import Iterator

import pytest
import requests

from core.redact import MASK
from exchange.logging_safety import install_redaction, redaction_filter, uninstall_redaction

KEY = "PLANTEDapikey8f2b1c9d0e7a6b5c4d3e2f1a0b9c8d7e6"
SECRET = "PLANTEDsecret0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
SIG = "3f9a7c1e5b2d8f4a6c0e9b7d5f3a1c8e6b4d2f0a9c7e5b3d1f8a6c4e2b0d9f7a"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"code": -1022, "msg": "Signature for this request is not valid."}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logging.getLogger("test.http_server").info(format, *args)  # the request line, signature included


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def root_streams() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    root = logging.getLogger()
    level = root.level
    before, after = io.StringIO(), io.StringIO()
    early = logging.StreamHandler(before)  # attached before install_redaction
    root.addHandler(early)
    root.setLevel(logging.DEBUG)
    late = logging.StreamHandler(after)
    try:
        yield before, after
    finally:
        for h in (early, late):
            root.removeHandler(h)
        root.setLevel(level)
        uninstall_redaction()


def test_urllib3_debug_logs_of_a_signed_request_carry_no_signature_or_key(server, root_streams):
    before, after = root_streams
    filt = install_redaction([KEY, None])
    late = logging.StreamHandler(after)  # a handler created after the installation
    logging.getLogger().addHandler(late)
    try:
        filt.add_secret(SECRET)  # learned later
        assert install_redaction([]) is filt and redaction_filter() is filt  # no second filter
        logging.getLogger("urllib3").setLevel(logging.DEBUG)
        url = f"{server}/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature={SIG}"
        response = requests.get(url, headers={"X-MBX-APIKEY": KEY}, timeout=5)
        assert response.status_code == 400
        log = logging.getLogger("exchange.test")
        log.debug("request headers %s", response.request.headers)
        log.warning("rejected %s: %s", response.request.url, response.text)
        try:
            raise RuntimeError(f"signed with {SECRET} for key {KEY}")
        except RuntimeError:
            log.exception("order failed")
    finally:
        logging.getLogger().removeHandler(late)
    for text in (before.getvalue(), after.getvalue()):
        assert "/fapi/v1/order?symbol=BTCUSDT" in text  # urllib3's request line is there, masked
        assert f"signature={MASK}" in text and "Traceback" in text and f"'X-MBX-APIKEY': '{MASK}'" in text
        for planted in (KEY, SECRET, SIG):
            assert planted not in text
