"""core.redact: each secret-bearing pattern, given secrets, and the logging filter."""

from __future__ import annotations

import io
import json
import logging

import pytest
from cryptography.fernet import Fernet

from core.redact import MASK, RedactingFilter, redact

SIG = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


def test_signature_query_parameter_is_masked():
    url = f"https://fapi.binance.com/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature={SIG}&x=1"
    out = redact(url)
    assert SIG not in out
    assert out.endswith(f"timestamp=1&signature={MASK}&x=1")


def test_api_key_header_line_and_headers_dict_repr_are_masked():
    assert redact(f"X-MBX-APIKEY: {KEY}") == f"X-MBX-APIKEY: {MASK}"
    headers = repr({"User-Agent": "python-requests", "X-MBX-APIKEY": KEY, "Accept": "*/*"})
    out = redact(headers)
    assert KEY not in out and f"'X-MBX-APIKEY': '{MASK}'" in out and "'Accept': '*/*'" in out


def test_listen_key_query_parameter_and_json_value_are_masked():
    lk = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"
    assert redact(f"wss://fstream.binance.com/private?listenKey={lk}") == (
        f"wss://fstream.binance.com/private?listenKey={MASK}"
    )
    assert lk not in redact(json.dumps({"listenKey": lk}))


@pytest.mark.parametrize("field", ["apiKey", "api_key", "secret", "signature", "listenKey"])
def test_json_and_repr_values_of_secret_fields_are_masked(field):
    value = 's3cr3t-value-with-\\"quote'
    text = json.dumps({"symbol": "BTCUSDT", field: value, "qty": "0.01"})
    out = redact(text)
    assert json.loads(out) == {"symbol": "BTCUSDT", field: MASK, "qty": "0.01"}
    assert redact(repr({field: "plain-secret"})) == repr({field: MASK})


def test_fernet_token_is_masked():
    token = Fernet(Fernet.generate_key()).encrypt(b"api secret").decode()
    assert redact(f"token={token} end") == f"token={MASK} end"


def test_given_secrets_are_masked_also_url_encoded_and_short_ones_ignored():
    secret = "pa ss/w+rd=1"
    out = redact("a pa ss/w+rd=1 b pa%20ss%2Fw%2Brd%3D1 c pa+ss%2Fw%2Brd%3D1", [secret, "", "ab"])
    assert out == f"a {MASK} b {MASK} c {MASK}"
    assert redact("ab abc", ["ab"]) == "ab abc"  # too short to be a secret


def test_text_without_secrets_is_unchanged():
    text = "entry BTCUSDT LONG 0.010 @ 65000.1 signature_ok listen for keys"
    assert redact(text, ["not-in-there"]) == text


def _logger(filt: logging.Filter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(filt)
    logger = logging.getLogger(f"test_redact.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_filter_masks_a_secret_passed_in_the_arguments():
    filt = RedactingFilter()
    filt.add_secret(SECRET)
    logger, stream = _logger(filt)
    logger.info("sending %s with %r", {"secret_value": SECRET}, SECRET)
    logger.debug("GET /fapi/v1/order?signature=%s", SIG)
    out = stream.getvalue()
    assert SECRET not in out and SIG not in out
    assert out.count(MASK) == 3 and out.count("\n") == 2  # both records kept


def test_filter_masks_a_secret_in_an_exception_traceback():
    filt = RedactingFilter([KEY])
    logger, stream = _logger(filt)
    try:
        raise RuntimeError(f"refused key {KEY}")
    except RuntimeError:
        logger.exception("order failed")
    out = stream.getvalue()
    assert KEY not in out
    assert "Traceback (most recent call last)" in out and f"RuntimeError: refused key {MASK}" in out


def test_filter_never_drops_or_raises_on_a_bad_record():
    filt = RedactingFilter([SECRET])
    logger, stream = _logger(filt)
    logger.info("two args %s %s", SECRET)  # wrong argument count: logging would print an error
    logger.info("plain")
    out = stream.getvalue()
    assert SECRET not in out and "plain" in out and out.count("\n") == 2

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no")

        __repr__ = __str__

    record = logging.LogRecord("x", logging.INFO, __file__, 1, Unprintable(), (Unprintable(),), None)
    assert filt.filter(record) is True
    assert "could not be redacted" in record.getMessage()


def test_filter_is_idempotent_and_counts_secrets():
    filt = RedactingFilter([SECRET, SECRET, ""])
    filt.add_secret(None)
    assert filt.secret_count == 1
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "k=%s 100%%", (SECRET,), None)
    assert filt.filter(record) and filt.filter(record)
    assert record.getMessage() == f"k={MASK} 100%"
