"""raytrade.keystore: round trip, wrong passphrase, altered or malformed files, mode 0600, and no
secret in any error."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from raytrade.keystore import PASSPHRASE_ENV, KeystoreError, encrypt_keys, load_keys, read_passphrase

KEY = "PLANTEDkeyvmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIg"
SECRET = "PLANTEDsecretNhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3U"
PASS = "correct horse battery staple"


def _no_secret(message: str) -> None:
    for planted in (KEY, SECRET, PASS):
        assert planted not in message


def test_round_trip_returns_secret_strings_and_writes_a_0600_file(tmp_path):
    path = encrypt_keys(tmp_path / "sub" / "keys.enc", KEY, SECRET, PASS)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    _no_secret(text)
    doc = json.loads(text)
    assert doc["version"] == 1 and doc["kdf"] == {"name": "scrypt", "n": 2**15, "r": 8, "p": 1, "length": 32}
    assert len(base64.b64decode(doc["salt"])) == 16 and doc["token"].startswith("gAAAAA")
    key, secret = load_keys(path, PASS)
    assert (key.get_secret_value(), secret.get_secret_value()) == (KEY, SECRET)
    assert KEY not in repr(key) and SECRET not in str(secret)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left


def test_an_existing_file_is_replaced_only_with_force_and_salt_changes(tmp_path):
    path = encrypt_keys(tmp_path / "keys.enc", KEY, SECRET, PASS)
    first = json.loads(path.read_text())
    with pytest.raises(KeystoreError, match="exists; pass --force"):
        encrypt_keys(path, "other-key", "other-secret", PASS)
    encrypt_keys(path, "other-key", "other-secret", PASS, force=True)
    assert json.loads(path.read_text())["salt"] != first["salt"]
    assert load_keys(path, PASS)[0].get_secret_value() == "other-key"


def test_wrong_passphrase_names_the_file_and_no_secret(tmp_path):
    path = encrypt_keys(tmp_path / "keys.enc", KEY, SECRET, PASS)
    with pytest.raises(KeystoreError, match="wrong passphrase, or the file was altered") as e:
        load_keys(path, PASS + "!")
    assert str(path) in str(e.value)
    _no_secret(str(e.value))
    assert e.value.__cause__ is None and e.value.__suppress_context__


@pytest.mark.parametrize("field", ["token", "salt"])
def test_an_altered_token_or_salt_does_not_decrypt(tmp_path, field):
    path = encrypt_keys(tmp_path / "keys.enc", KEY, SECRET, PASS)
    doc = json.loads(path.read_text())
    raw = bytearray(base64.urlsafe_b64decode(doc[field]))
    raw[len(raw) // 2] ^= 1
    doc[field] = (base64.urlsafe_b64encode if field == "token" else base64.b64encode)(bytes(raw)).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="wrong passphrase, or the file was altered") as e:
        load_keys(path, PASS)
    _no_secret(str(e.value))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: "{not json", "not JSON"),
        (lambda d: [], "not a JSON object"),
        (lambda d: {**d, "version": 2}, "unknown version 2"),
        (lambda d: {**d, "kdf": {**d["kdf"], "name": "pbkdf2"}}, "kdf must be scrypt"),
        (lambda d: {**d, "kdf": {**d["kdf"], "n": 2**30}}, "out of range"),
        (lambda d: {**d, "kdf": {**d["kdf"], "n": "16384"}}, "must be integers"),
        (lambda d: {**d, "salt": "!!"}, "salt is not base64"),
        (lambda d: {k: v for k, v in d.items() if k != "token"}, "no token"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_file(tmp_path, change, problem):
    path = encrypt_keys(tmp_path / "keys.enc", KEY, SECRET, PASS)
    doc = change(json.loads(path.read_text()))
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(KeystoreError, match=problem) as e:
        load_keys(path, PASS)
    assert str(path) in str(e.value)


def test_missing_file_and_bad_inputs(tmp_path):
    with pytest.raises(KeystoreError, match="does not exist; create it with `raytrade encrypt-keys`"):
        load_keys(tmp_path / "nope.enc", PASS)
    with pytest.raises(KeystoreError, match="at least 8 characters"):
        encrypt_keys(tmp_path / "k.enc", KEY, SECRET, "short")
    with pytest.raises(KeystoreError, match="must both be given"):
        encrypt_keys(tmp_path / "k.enc", KEY, "", PASS)
    assert not (tmp_path / "k.enc").exists()


def test_passphrase_from_environment_or_hidden_prompt():
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return PASS

    assert read_passphrase({PASSPHRASE_ENV: "from-env-pass"}, prompt) == "from-env-pass" and not asked
    assert read_passphrase({}, prompt, confirm=True) == PASS and len(asked) == 2
    answers = iter(["one-passphrase", "another-passphrase"])
    with pytest.raises(KeystoreError, match="differ"):
        read_passphrase({}, lambda _: next(answers), confirm=True)
    with pytest.raises(KeystoreError, match=PASSPHRASE_ENV):
        read_passphrase({}, None)
