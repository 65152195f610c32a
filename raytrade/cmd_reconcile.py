"""``raytrade reconcile [--dry-run] [--symbols ...]``: one reconciliation run of the ledger with the venue.

The trading client comes from the settings: with ``fapi_url`` and the replay venue's keys
(``RAYTRADE_VENUE_API_KEY``/``_SECRET``) it talks to the replay venue (no clock sync: the venue's
``/fapi/v1/time`` is replay time); otherwise to Binance (``fapi_url``, or the testnet with
``testnet``, or mainnet) with ``RAYTRADE_BINANCE_API_KEY``/``_SECRET``. The database is
``database_url`` and must be at the current schema. The run itself is ``actors.reconciler.Reconciler``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from raytrade.options import settings_or_exit

if TYPE_CHECKING:
    from exchange.binance.trading import TradingConfig
    from raytrade.settings import Settings

#: Exit codes: consistent, error, corrections found (made, or with --dry-run to be made) or lookups open.
EXIT_CONSISTENT, EXIT_ERROR, EXIT_CORRECTED = 0, 1, 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"reconcile: {message}", err=True)
    return typer.Exit(EXIT_ERROR)


def trading_config(settings: Settings) -> TradingConfig:
    """The signed client's configuration: the replay venue when ``fapi_url`` and the venue keys are set,
    else Binance with the Binance keys (module docstring). Raises ValueError naming what is missing."""
    from exchange.binance.signed import FAPI_MAINNET, FAPI_TESTNET, TradingConfig

    venue_keys = (settings.venue_api_key, settings.venue_api_secret)
    if settings.fapi_url and all(k is not None and k.get_secret_value() for k in venue_keys):
        key, secret = venue_keys
        assert key is not None and secret is not None
        return TradingConfig(base_url=settings.fapi_url, api_key=key, api_secret=secret, sync_clock=False)
    key, secret = settings.binance_api_key, settings.binance_api_secret
    if key is None or secret is None or not key.get_secret_value() or not secret.get_secret_value():
        raise ValueError(
            "no API keys: set RAYTRADE_BINANCE_API_KEY and RAYTRADE_BINANCE_API_SECRET, or, for the replay "
            "venue, RAYTRADE_FAPI_URL with RAYTRADE_VENUE_API_KEY and RAYTRADE_VENUE_API_SECRET"
        )
    base = settings.fapi_url or (FAPI_TESTNET if settings.testnet else FAPI_MAINNET)
    return TradingConfig(base_url=base, api_key=key, api_secret=secret)


def reconcile(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="compute and print only: write nothing, send nothing"
    ),
    symbols: str | None = typer.Option(
        None, "--symbols", help="comma-separated symbols; default: every symbol the venue or the ledger shows"
    ),
    naked_with_levels: str = typer.Option(
        "protect",
        "--naked-with-levels",
        help="a naked position with known SL/TP levels: protect, flatten or report",
    ),
    naked_without_levels: str = typer.Option(
        "flatten", "--naked-without-levels", help="a naked position without known levels: flatten or report"
    ),
) -> None:
    """Reconcile the ledger with the venue once and print what was found and done; exit 0 consistent, 2 corrected, 1 error.

    Spec 004 cases A–D: the venue wins; every correction is an event. Orphan algo orders (position
    gone) are cancelled; a naked position is protected when the ledger knows its SL/TP levels, else
    flattened reduce-only. With --dry-run the same is computed and printed, and nothing is written
    or sent. Exit 2 also when lookups stay open (the ledger is not proven equal to the venue).
    """
    from pydantic import ValidationError

    from actors.reconciler import Reconciler, ReconcilerConfig
    from core.errors import RaytradeError
    from core.symbols import SymbolError, parse_universe
    from exchange.binance.trading import BinanceTrading
    from storage import db
    from storage.ledger import LedgerStore

    settings = settings_or_exit()
    try:
        chosen = parse_universe(symbols) if symbols is not None else None
        config = ReconcilerConfig(
            symbols=chosen, dry_run=dry_run, naked_with_levels=naked_with_levels,
            naked_without_levels=naked_without_levels,
        )  # fmt: skip
        trading_cfg = trading_config(settings)
    except SymbolError as e:
        raise _fail(f"--symbols: {e}") from None
    except ValidationError as e:
        problems = "; ".join(f"--{'-'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise _fail(problems.replace("_", "-")) from None
    except ValueError as e:
        raise _fail(str(e)) from None
    engine = db.make_engine(settings.database_url)
    try:
        if not db.is_current(engine):
            raise _fail("the database is not at the current schema: run `raytrade db upgrade` first")
        with BinanceTrading(trading_cfg) as trading:
            try:
                trading.start()
            except RaytradeError as e:
                raise _fail(f"{trading_cfg.base_url}: {e}") from None
            report = Reconciler(LedgerStore(engine, source="reconcile"), trading, config).run_once()
    finally:
        engine.dispose()
    typer.echo(report.format())
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.command("reconcile")(reconcile)
