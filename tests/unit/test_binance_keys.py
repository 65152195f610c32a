"""Where live trading on Binance takes its keys (``raytrade.realtime.binance_keys``): the settings, else the
file ``raytrade encrypt-keys`` wrote, decrypted with RAYTRADE_KEYS_PASSPHRASE; a clear error otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from core.errors import ConfigError
from raytrade.keystore import encrypt_keys, keys_path
from raytrade.realtime import binance_keys
from raytrade.settings import Settings


def test_keys_come_from_the_settings_then_from_the_encrypted_file(tmp_path: Path, monkeypatch) -> None:
    given = Settings(_env_file=None, data_dir=tmp_path, binance_api_key=SecretStr("k" * 16),
                     binance_api_secret=SecretStr("s" * 32))  # fmt: skip
    assert [v.get_secret_value() for v in binance_keys(given)] == ["k" * 16, "s" * 32]
    settings = Settings(_env_file=None, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="raytrade encrypt-keys"):
        binance_keys(settings)
    encrypt_keys(keys_path(settings), "file-key-123456", "file-secret-abcdef", "a long passphrase")
    monkeypatch.delenv("RAYTRADE_KEYS_PASSPHRASE", raising=False)
    with pytest.raises(ConfigError, match="RAYTRADE_KEYS_PASSPHRASE"):
        binance_keys(settings)
    monkeypatch.setenv("RAYTRADE_KEYS_PASSPHRASE", "a wrong passphrase")
    with pytest.raises(ConfigError) as wrong:
        binance_keys(settings)
    assert "file-secret" not in str(wrong.value)
    monkeypatch.setenv("RAYTRADE_KEYS_PASSPHRASE", "a long passphrase")
    assert [v.get_secret_value() for v in binance_keys(settings)] == ["file-key-123456", "file-secret-abcdef"]
