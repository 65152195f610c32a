"""The commands of ``raytrade``, one module per area, each imported only when one of its commands runs.

A command module imports what its commands need (Ray, MLflow, LightGBM, pandas …) inside their
bodies, and its ``register(app)`` adds its commands to a Typer app. ``raytrade --help`` lists every
command from ``COMMANDS`` without importing any of those modules; ``raytrade NAME …`` (and
``raytrade NAME --help``) imports the one module that registers NAME.
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from typing import Any

import typer
import typer.main
from typer import _click
from typer.core import TyperCommand, TyperGroup

#: Every command and command group of ``raytrade`` in the order ``raytrade --help`` lists them:
#: (name, the module of ``raytrade`` whose ``register(app)`` adds it, the summary ``--help`` shows
#: for it: the first paragraph of its docstring or of its group's help). A test renders
#: ``raytrade --help`` from these summaries and from the loaded commands and compares the two.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("selftest", "cmd_selftest", "Check configuration, database (migrations current), bus, MLflow store, Ray and lake; exit 1 naming failures."),
    ("history", "cmd_history", "Download Binance USDⓈ-M history into the lake: monthly/daily dumps, then REST for the recent tail."),
    ("import", "cmd_history", "Import local parquet/feather market data into the lake, validating every row."),
    ("demo", "cmd_demo", "Run the main job offline on the embedded default and print where everything went."),
    ("synth", "cmd_demo", "Generate a synthetic market for the universe into the lake (labelled source=synthetic)."),
    ("features", "cmd_pipelines", "Compute the 132 merged features of every 1m bar in the lake (Ray Data), into the lake."),
    ("label", "cmd_pipelines", "Label every 1m bar of the lake, long and short, with the configured LabelSpec (Ray Data)."),
    ("drift", "cmd_drift", "Compute feature drift (PSI), missing and outlier rates and message latency into drift_metrics."),
    ("promote", "cmd_models", "Evaluate the promotion gates of a version and make it production if they pass (or on --override)."),
    ("rollback", "cmd_models", "Move production back to the version the current one replaced."),
    ("models", "cmd_models", "List registered models, or the versions of one with metrics and which is production."),
    ("worker", "cmd_models", "Run the batch worker: claim queued jobs and run them until interrupted."),
    ("backtest", "cmd_backtest", "Backtest the baseline strategies on the lake's 1m data and write a report (HTML, PNG, JSON)."),
    ("train-rl", "cmd_rl", "Train the RL agent (PPO) on lake data, evaluate it beside the supervised policy, gate, log and register it."),
    ("venue", "cmd_venue", "Replay the lake as a local Binance USDⓈ-M venue until the replay ends or Ctrl-C."),
    ("research", "cmd_research", "Train, gate and report on real history in the lake: folds, Tune sweep, registration, backtest, report."),
    ("serve", "cmd_serve", "Serve the API and dashboard on 127.0.0.1 (RAYTRADE_API_PORT) until Ctrl-C."),
    ("run", "cmd_run", "Run the realtime system: ingest actors, Serve Predictor, policy, risk/execution actor (shadow)."),
    ("kill", "cmd_kill", "Stop new entries now (kill file + recorded event); with --close-positions also cancel and flatten."),
    ("resume", "cmd_kill", "Allow entries again: remove the kill file and record the resume, unless a condition still holds."),
    ("encrypt-keys", "cmd_keys", "Encrypt the Binance API key and secret at rest (Fernet, scrypt passphrase); never prints them."),
    ("live-confirm", "cmd_keys", "Make the confirmation token live mode asks for, and print the phrase to type when it starts."),
    ("reconcile", "cmd_reconcile", "Reconcile the ledger with the venue once and print what was found and done; exit 0 consistent, 2 corrected, 1 error."),
    ("config", "cmd_config", "Inspect configuration."),
    ("db", "cmd_db", "Create, migrate and inspect the database."),
    ("jobs", "cmd_models", "Queue and inspect batch jobs (training_jobs)."),
)  # fmt: skip

_MODULES = {name: module for name, module, _ in COMMANDS}
_SUMMARIES = {name: summary for name, _, summary in COMMANDS}


def load_module_commands(module: str) -> dict[str, _click.Command]:
    """Import ``raytrade.<module>`` and return the commands its ``register(app)`` adds, by name."""
    app = typer.Typer()
    importlib.import_module(f"raytrade.{module}").register(app)
    return dict(typer.main.get_group(app).commands)


class LazyGroup(TyperGroup):
    """The ``raytrade`` group: commands from ``COMMANDS``, a module imported when one of its commands is used.

    While it formats its own help it lists placeholders carrying each command's summary, so the
    list costs no import; any other lookup (running a command, ``raytrade NAME --help``) loads the
    real command.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return [name for name, _, _ in COMMANDS]

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        module = _MODULES.get(cmd_name)
        if module is None:
            return None
        if self._listing:
            return TyperCommand(name=cmd_name, help=_SUMMARIES[cmd_name])
        self.commands.update(load_module_commands(module))
        return self.commands[cmd_name]

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        try:
            return self._click_resolve_command(ctx, args)
        except _click.exceptions.UsageError as e:  # suggest among every command, loaded or not
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if self.suggest_commands and matches:
                suggestions = ", ".join(f"{m!r}" for m in matches)
                e.message = f"{e.message.rstrip('.')}. Did you mean {suggestions}?"
            raise
