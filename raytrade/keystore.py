"""Binance API keys encrypted at rest (issue 15): a Fernet token under a key derived with scrypt.

The keys file is JSON::

    {"version": 1, "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "length": 32},
     "salt": "<base64, 16 bytes>", "token": "<Fernet token of {\"api_key\", \"api_secret\"}>"}

written with mode 0600 (atomically: a temporary file in the same folder, then renamed). The
passphrase is never stored; it comes from ``RAYTRADE_KEYS_PASSPHRASE`` or a hidden prompt.
Fernet authenticates the token, so a wrong passphrase and an altered file both fail to decrypt
(they cannot be told apart); errors name the file, never a key, secret or passphrase.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import SecretStr

from core.errors import FatalError

if TYPE_CHECKING:
    from raytrade.settings import Settings

__all__ = [
    "PASSPHRASE_ENV",
    "KeystoreError",
    "encrypt_keys",
    "keys_path",
    "load_keys",
    "read_passphrase",
]

PASSPHRASE_ENV = "RAYTRADE_KEYS_PASSPHRASE"
VERSION = 1
#: scrypt cost: N=2**15, r=8 uses 32 MiB and about 0.1 s; a file may ask for at most N=2**20 (1 GiB),
#: so an altered file cannot make loading exhaust memory.
SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES, SALT_BYTES = 2**15, 8, 1, 32, 16
_MAX_N = 2**20
MIN_PASSPHRASE_CHARS = 8


class KeystoreError(FatalError):
    """The keys file is missing, malformed, altered, or the passphrase is wrong; the message names the file."""


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    kdf = Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p)
    return base64.urlsafe_b64encode(kdf.derive(passphrase.encode("utf-8")))


def encrypt_keys(
    path: Path | str, api_key: str, api_secret: str, passphrase: str, *, force: bool = False
) -> Path:
    """Encrypt ``api_key`` and ``api_secret`` under ``passphrase`` into ``path`` (mode 0600); return the path.

    Refuse (KeystoreError) an empty key or secret, a passphrase shorter than
    ``MIN_PASSPHRASE_CHARS``, or an existing file unless ``force``.
    """
    path = Path(path)
    if not api_key or not api_secret:
        raise KeystoreError(f"{path}: the API key and the API secret must both be given")
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise KeystoreError(f"{path}: the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")
    if path.exists() and not force:
        raise KeystoreError(f"{path} exists; pass --force to replace it")
    salt = secrets.token_bytes(SALT_BYTES)
    fernet = Fernet(_derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    token = fernet.encrypt(json.dumps({"api_key": api_key, "api_secret": api_secret}).encode("utf-8"))
    document = {
        "version": VERSION,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "length": KEY_BYTES},
        "salt": base64.b64encode(salt).decode("ascii"),
        "token": token.decode("ascii"),
    }
    _write_private(path, json.dumps(document, indent=2) + "\n")
    return path


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _kdf_params(path: Path, doc: Any) -> tuple[bytes, int, int, int, bytes]:
    def bad(what: str) -> KeystoreError:
        return KeystoreError(f"{path} is not a valid raytrade keys file: {what}")

    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    if doc.get("version") != VERSION:
        raise bad(f"unknown version {doc.get('version')!r} (expected {VERSION})")
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise bad("kdf must be scrypt")
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    if kdf.get("length") != KEY_BYTES:
        raise bad(f"kdf length must be {KEY_BYTES}")
    if not all(type(v) is int for v in (n, r, p)):
        raise bad("kdf n, r and p must be integers")
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise bad("kdf parameters out of range")
    try:
        salt = base64.b64decode(str(doc.get("salt")), validate=True)
    except (binascii.Error, ValueError):
        raise bad("salt is not base64") from None
    if len(salt) < 8:
        raise bad("salt too short")
    token = doc.get("token")
    if not isinstance(token, str) or not token:
        raise bad("no token")
    return salt, n, r, p, token.encode("ascii", errors="replace")


def load_keys(path: Path | str, passphrase: str) -> tuple[SecretStr, SecretStr]:
    """Decrypt the keys file at ``path``; return (API key, API secret).

    Raise KeystoreError naming the file when it is missing, unreadable, malformed, altered, or the
    passphrase is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeystoreError(f"{path} does not exist; create it with `raytrade encrypt-keys`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeystoreError(f"{path} cannot be read: {type(e).__name__}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise KeystoreError(f"{path} is not a valid raytrade keys file: not JSON (line {e.lineno})") from None
    salt, n, r, p, token = _kdf_params(path, doc)
    try:
        plain = Fernet(_derive(passphrase, salt, n, r, p)).decrypt(token)
    except InvalidToken:
        raise KeystoreError(
            f"{path}: wrong passphrase, or the file was altered (its token does not verify)"
        ) from None
    try:
        keys = json.loads(plain)
        api_key, api_secret = keys["api_key"], keys["api_secret"]
    except (ValueError, KeyError, TypeError):
        raise KeystoreError(
            f"{path} is not a valid raytrade keys file: the decrypted content has no keys"
        ) from None
    if not (isinstance(api_key, str) and isinstance(api_secret, str) and api_key and api_secret):
        raise KeystoreError(f"{path} is not a valid raytrade keys file: the decrypted keys are empty")
    return SecretStr(api_key), SecretStr(api_secret)


def read_passphrase(
    environ: Mapping[str, str], prompt: Callable[[str], str] | None, *, confirm: bool = False
) -> str:
    """Return the passphrase from ``RAYTRADE_KEYS_PASSPHRASE``, else from ``prompt`` (hidden input).

    With ``confirm`` (encrypting), a prompted passphrase is asked twice and must match. Raise
    KeystoreError when neither gives one.
    """
    value = environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if prompt is None:
        raise KeystoreError(f"no passphrase: set {PASSPHRASE_ENV} or run interactively")
    value = prompt("Keys passphrase: ")
    if confirm and prompt("Repeat the passphrase: ") != value:
        raise KeystoreError("the two passphrases differ")
    if not value:
        raise KeystoreError("empty passphrase")
    return value


def keys_path(settings: Settings) -> Path:
    """Return where the encrypted keys live: ``<data_dir>/keys.enc``."""
    return settings.data_dir / "keys.enc"
