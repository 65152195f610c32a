"""``raytrade encrypt-keys`` and ``raytrade live-confirm``: what live mode needs before it may start.

``encrypt-keys`` keeps the Binance keys encrypted at rest (``raytrade.keystore``); ``live-confirm``
makes the confirmation token the live guard asks for (``raytrade.live_guard``) and, with
``--override-criteria``, records who allows live trading without the §16.2 shadow record and why.
Neither ever prints a key, a secret or a passphrase.
"""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path

import typer
from rich.console import Console

console = Console(highlight=False, markup=False, soft_wrap=True)  # a path is never broken across lines


def _fail(message: str) -> typer.Exit:
    console.print(message, style="red", markup=False, soft_wrap=True)
    return typer.Exit(1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _hidden(text: str) -> str:
    return str(typer.prompt(text.rstrip(": "), hide_input=True))


def encrypt_keys_command(
    out: Path | None = typer.Option(None, "--out", help="where to write; default: <data_dir>/keys.enc"),
    force: bool = typer.Option(False, "--force", help="replace an existing file"),
) -> None:
    """Encrypt the Binance API key and secret at rest (Fernet, scrypt passphrase); never prints them.

    The key and secret come from BINANCE_API_KEY / BINANCE_API_SECRET or hidden prompts, the
    passphrase from RAYTRADE_KEYS_PASSPHRASE or a hidden prompt (asked twice).
    """
    from raytrade.keystore import KeystoreError, encrypt_keys, keys_path, read_passphrase
    from raytrade.options import settings_or_exit

    path = out or keys_path(settings_or_exit())
    if path.exists() and not force:
        raise _fail(f"{path} exists; pass --force to replace it")
    api_key = os.environ.get("BINANCE_API_KEY") or _hidden("Binance API key")
    api_secret = os.environ.get("BINANCE_API_SECRET") or _hidden("Binance API secret")
    try:
        passphrase = read_passphrase(os.environ, _hidden, confirm=True)
        written = encrypt_keys(path, api_key.strip(), api_secret.strip(), passphrase, force=force)
    except KeystoreError as e:
        raise _fail(str(e)) from None
    console.print(f"wrote the encrypted keys to {written} (mode 0600); keep the passphrase apart from it")


def live_confirm_command(
    override_criteria: bool = typer.Option(
        False, "--override-criteria", help="record that live may start without the §16.2 shadow record"
    ),
    reason: str | None = typer.Option(None, "--reason", help="why (required with --override-criteria)"),
    actor: str | None = typer.Option(None, "--actor", help="who overrides; default: the OS user"),
    model: str | None = typer.Option(
        None, "--model", help="the registered model (when several are production)"
    ),
) -> None:
    """Make the confirmation token live mode asks for, and print the phrase to type when it starts.

    Writes <data_dir>/LIVE_CONFIRM (0600, valid 24 h, used up by one live start). With
    --override-criteria --reason TEXT also records (an events row live.override) that the
    production model may trade live although its shadow record misses spec 001 §16.2.
    """
    from core.errors import FatalError
    from raytrade.live_guard import confirm_path, confirmation_phrase, create_confirm_token, production_model
    from raytrade.options import settings_or_exit

    settings = settings_or_exit()
    if override_criteria:
        if not reason or not reason.strip():
            raise _fail("--override-criteria needs --reason TEXT (who and why are recorded)")
        from raytrade.live_guard import record_override
        from storage import db

        engine = db.make_engine(settings.database_url)
        try:
            if not db.is_current(engine):
                raise _fail("the database is not at the current schema: run `raytrade db upgrade` first")
            model_id, model_text = production_model(engine, model)
            if model_id is None:
                raise _fail(f"no override recorded: {model_text}")
            who = actor or getpass.getuser()
            record_override(engine, model_id=model_id, who=who, why=reason, now_ms=now_ms())
        except FatalError as e:
            raise _fail(str(e)) from None
        finally:
            engine.dispose()
        console.print(
            f"recorded: {who} allows live trading of {model_text} without the §16.2 record: {reason.strip()}"
        )
    token = create_confirm_token(settings, now_ms())
    console.print(f"wrote {confirm_path(settings)} (mode 0600, valid 24 h, for one live start)")
    console.print(f"when `raytrade run --mode live` asks, type exactly:  {confirmation_phrase(token)}")


def register(app: typer.Typer) -> None:
    app.command("encrypt-keys")(encrypt_keys_command)
    app.command("live-confirm")(live_confirm_command)
