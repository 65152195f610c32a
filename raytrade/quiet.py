"""What ``raytrade research`` and ``raytrade demo`` keep off the console unless ``--verbose``.

Ray, Ray Tune, Ray Data and MLflow print progress chatter and notices a user of these commands can do
nothing about, between the lines that matter. ``library_output(verbose=False)`` turns each off with
the library's own switch, for the duration of the command:

- Ray Tune's console output (the experiment table, "View detailed results here", the TensorBoard
  hint): ``RAY_AIR_NEW_OUTPUT=0`` selects Tune's older output engine, which is silent at the sweep's
  ``verbose=0`` (the newer one prints those lines at any verbosity). The sweep's progress is ours
  (``raytrade.training_progress``).
- The INFO lines of MLflow ("Creating initial MLflow database tables", "Validating input example",
  the registration notices of ``storage.registry``), of alembic and of Ray Data ("Dataset … execution
  finished"): their loggers are raised to WARNING (``MLFLOW_LOGGING_LEVEL`` and ``RAY_DATA_LOG_LEVEL``
  too, for a library imported later).
- MLflow's artifact download bars: ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false``.
- Three warnings that ask nothing of the user (``IDLE_WARNINGS``): Ray's token authentication
  notice (on by default since Ray 2.59; local Ray listens on loopback only), Ray Data's "Progress
  bars disabled" (the commands draw their own) and "SIGTERM handler is not set" (the selftest starts
  Ray in a thread to time it out).

Whatever the verbosity, Tune writes no TensorBoard files (MLflow tracks every trial): only its CSV
and JSON result loggers run (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`` with the two named in
``RAY_TUNE_CALLBACKS``). Its TensorBoard logger printed "NaN or Inf found in input tensor" for every
trial metric that is NaN, such as the profit factor of a fold without a losing trade.

A variable the user set is left as it is. Everything is restored when the context ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

#: Environment set for a quiet run (unless already set).
QUIET_ENVIRONMENT: Mapping[str, str] = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "RAY_DATA_LOG_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
#: Loggers whose INFO lines are progress chatter: WARNING and above only, in a quiet run.
CHATTY_LOGGERS = ("mlflow", "alembic", "ray.data", "ray.serve")
#: Warnings dropped in a quiet run: (logger, start of the message).
IDLE_WARNINGS = (
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled"),
    ("ray.data._internal.progress", "Progress bars disabled"),
    ("ray._private.worker", "SIGTERM handler is not set"),
    ("ray.tune.utils.util", "Install gputil"),  # RLlib's trainable: CPU only, GPU monitoring unwanted
    ("ray.rllib.algorithms.algorithm_config", "You are running PPO on the new API stack"),  # chosen, tested
    ("ray._common.deprecation", "DeprecationWarning: `RLModule(config="),  # RLlib's own RLModule constructor
)
#: Tune's result loggers without the TensorBoard one (whatever the verbosity).
TUNE_LOGGERS: Mapping[str, str] = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_TUNE_CALLBACKS": "ray.tune.logger.CSVLoggerCallback,ray.tune.logger.JsonLoggerCallback",
}


class DropMessage(logging.Filter):
    """Drop the records of one logger whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def library_output(verbose: bool) -> Iterator[None]:
    """Keep the libraries' chatter off the console while the context lasts (see the module docstring);
    with ``verbose`` only the TensorBoard logger is off. Restores environment and loggers on exit."""
    environment = dict(TUNE_LOGGERS) if not any(k in os.environ for k in TUNE_LOGGERS) else {}
    if not verbose:
        environment.update({k: v for k, v in QUIET_ENVIRONMENT.items() if k not in os.environ})
    saved_environment = {k: os.environ.get(k) for k in environment}
    saved_levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    filters: list[tuple[logging.Logger, DropMessage]] = []
    os.environ.update(environment)
    if not verbose:
        for name in CHATTY_LOGGERS:
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.WARNING:
                logger.setLevel(logging.WARNING)
        for name, prefix in IDLE_WARNINGS:
            drop = DropMessage(prefix)
            logging.getLogger(name).addFilter(drop)
            filters.append((logging.getLogger(name), drop))
    try:
        yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        for key, value in saved_environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
