"""CLI: raytrade encrypt-keys and live-confirm on a temporary data folder; no key, secret or
passphrase in any output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from raytrade import cmd_db, cmd_keys
from raytrade.keystore import load_keys
from raytrade.live_guard import CONFIRM_FILE, OVERRIDE_KIND
from raytrade.settings import load_settings
from storage import db
from storage.model_catalog import ModelRow, set_production_row, upsert_model_row
from storage.schema import events

KEY = "PLANTEDclikeyQ8w7e6r5t4y3u2i1o0p9a8s7d6f5"
SECRET = "PLANTEDclisecretZ1x2c3v4b5n6m7q8w9e0r1t2"
PASS = "PLANTEDpassphrase-long-enough"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYTRADE_DATA_DIR", str(tmp_path / "data"))
    for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "RAYTRADE_KEYS_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    app = typer.Typer()
    cmd_db.register(app)
    cmd_keys.register(app)
    runner = CliRunner()

    def run(*args: str, code: int = 0, input: str | None = None, env: dict[str, str] | None = None) -> str:
        result = runner.invoke(app, list(args), input=input, env=env)
        assert result.exit_code == code, (result.output, result.exception)
        assert "Traceback" not in result.output
        for planted in (KEY, SECRET, PASS):
            assert planted not in result.output
        return " ".join(result.output.split())

    return run


def test_encrypt_keys_from_hidden_prompts_writes_a_0600_file_and_refuses_to_overwrite(cli, tmp_path):
    out = cli("encrypt-keys", input=f"{KEY}\n{SECRET}\n{PASS}\n{PASS}\n")
    path = tmp_path / "data" / "keys.enc"
    assert f"wrote the encrypted keys to {path} (mode 0600)" in out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [s.get_secret_value() for s in load_keys(path, PASS)] == [KEY, SECRET]

    out = cli("encrypt-keys", code=1, input=f"{KEY}\n{SECRET}\n{PASS}\n{PASS}\n")
    assert f"{path} exists; pass --force to replace it" in out

    out = cli("encrypt-keys", "--force", code=1, input=f"{KEY}\n{SECRET}\n{PASS}\nother-passphrase\n")
    assert "the two passphrases differ" in out
    assert load_keys(path, PASS)[0].get_secret_value() == KEY  # the old file is intact


def test_encrypt_keys_from_the_environment_to_another_path(cli, tmp_path):
    env = {"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET, "RAYTRADE_KEYS_PASSPHRASE": PASS}
    out = cli("encrypt-keys", "--out", str(tmp_path / "elsewhere" / "k.enc"), env=env)
    assert "elsewhere/k.enc" in out
    assert load_keys(tmp_path / "elsewhere" / "k.enc", PASS)[1].get_secret_value() == SECRET
    out = cli("encrypt-keys", code=1, env={**env, "RAYTRADE_KEYS_PASSPHRASE": "short"})
    assert "at least 8 characters" in out


def test_live_confirm_writes_a_token_and_prints_the_phrase(cli, tmp_path):
    out = cli("live-confirm")
    doc = json.loads((tmp_path / "data" / CONFIRM_FILE).read_text())
    assert stat.S_IMODE(os.stat(tmp_path / "data" / CONFIRM_FILE).st_mode) == 0o600
    assert f"type exactly: LIVE {doc['token'][-6:]}" in out


def test_live_confirm_override_records_who_and_why_for_the_production_model(cli, tmp_path):
    assert "needs --reason" in cli("live-confirm", "--override-criteria", code=1)
    assert "run `raytrade db upgrade` first" in cli(
        "live-confirm", "--override-criteria", "--reason", "x", code=1
    )
    cli("db", "upgrade")
    out = cli("live-confirm", "--override-criteria", "--reason", "desk ok", code=1)
    assert "no override recorded: no production model" in out
    engine = db.make_engine(load_settings().database_url)
    upsert_model_row(engine, ModelRow(
        model_id="0b8e2f39-5a4c-4b8e-9d41-3f1f0c2a7e11", created_at_ms=0, algo="lightgbm", strategy="lgbm_multi",
        mlflow_version="4", mlflow_run_id=None, feature_schema_version=1, label_spec_hash="h", train_start_ms=0,
        train_end_ms=1, artifact_uri="file:///x",
    ))  # fmt: skip
    set_production_row(engine, "lgbm_multi", "0b8e2f39-5a4c-4b8e-9d41-3f1f0c2a7e11")
    out = cli("live-confirm", "--override-criteria", "--reason", "risk desk approved", "--actor", "alice")
    assert "alice allows live trading of lgbm_multi v4 without the §16.2 record: risk desk approved" in out
    assert "type exactly: LIVE" in out
    with engine.connect() as conn:
        (payload,) = conn.execute(events.select().with_only_columns(events.c.payload).where(
            events.c.kind == OVERRIDE_KIND)).scalars()  # fmt: skip
    engine.dispose()
    assert payload["who"] == "alice" and payload["why"] == "risk desk approved"


def test_the_commands_are_registered_on_raytrade(tmp_path):
    env = {**os.environ, "RAYTRADE_DATA_DIR": str(tmp_path / "data"), "BINANCE_API_KEY": KEY,
           "BINANCE_API_SECRET": SECRET, "RAYTRADE_KEYS_PASSPHRASE": PASS}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "raytrade.cli", "encrypt-keys"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "keys.enc" in proc.stdout
    for planted in (KEY, SECRET, PASS):
        assert planted not in proc.stdout + proc.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "raytrade.cli", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert "encrypt-keys" in listing.stdout and "live-confirm" in listing.stdout
