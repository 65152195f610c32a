"""``raytrade.quiet.library_output``: what research and demo keep off the console unless --verbose."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from raytrade.quiet import CHATTY_LOGGERS, IDLE_WARNINGS, QUIET_ENVIRONMENT, TUNE_LOGGERS, library_output

VARIABLES = (*QUIET_ENVIRONMENT, *TUNE_LOGGERS)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for key in VARIABLES:
        monkeypatch.delenv(key, raising=False)
    before = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    for name in CHATTY_LOGGERS:  # as the libraries configure them: INFO on the console
        logging.getLogger(name).setLevel(logging.INFO)
    yield monkeypatch
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


class _Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _shown(logger_name: str, level: int, message: str) -> bool:
    """Whether a record of ``logger_name`` passes its logger's level and filters (reaches a handler)."""
    logger, seen = logging.getLogger(logger_name), _Seen()
    logger.addHandler(seen)
    try:
        logger.log(level, message)
    finally:
        logger.removeHandler(seen)
    return bool(seen.records)


def _passes_filters(logger_name: str, message: str) -> bool:
    """Whether a WARNING of ``logger_name`` passes the filters on that logger (what ``IDLE_WARNINGS``
    sets); its level and ``disabled`` flag are other libraries' (and other tests') business."""
    logger = logging.getLogger(logger_name)
    return bool(
        logger.filter(logger.makeRecord(logger_name, logging.WARNING, __file__, 0, message, (), None))
    )


def test_quiet_drops_chatter_and_idle_warnings_and_keeps_real_warnings(clean_environment):
    with library_output(verbose=False):
        assert not _shown("mlflow.store.db.utils", logging.INFO, "Creating initial MLflow database tables...")
        assert not _shown(
            "ray.data._internal.execution.streaming_executor", logging.INFO, "execution finished"
        )
        for logger, prefix in IDLE_WARNINGS:
            assert not _passes_filters(logger, f"{prefix} …")
        assert _shown("ray._private.worker", logging.WARNING, "a worker died")  # other warnings stay
        assert _shown("mlflow", logging.WARNING, "a real MLflow warning")
        assert {k: os.environ[k] for k in VARIABLES} == {**QUIET_ENVIRONMENT, **TUNE_LOGGERS}
    # everything is back afterwards
    assert _shown("mlflow.store.db.utils", logging.INFO, "Creating initial MLflow database tables...")
    assert all(_passes_filters(logger, f"{prefix} …") for logger, prefix in IDLE_WARNINGS)
    assert not any(k in os.environ for k in VARIABLES)


def test_verbose_leaves_the_libraries_alone_but_tune_still_writes_no_tensorboard_files(clean_environment):
    with library_output(verbose=True):
        assert _shown("mlflow.store.db.utils", logging.INFO, "Creating initial MLflow database tables...")
        for logger, prefix in IDLE_WARNINGS:
            assert _passes_filters(logger, f"{prefix} …")
        assert not any(k in os.environ for k in QUIET_ENVIRONMENT)
        assert {k: os.environ[k] for k in TUNE_LOGGERS} == dict(TUNE_LOGGERS)
        assert "TBXLoggerCallback" not in os.environ["RAY_TUNE_CALLBACKS"]


def test_a_variable_the_user_set_is_kept(clean_environment):
    clean_environment.setenv("RAY_AIR_NEW_OUTPUT", "1")
    clean_environment.setenv("RAY_TUNE_CALLBACKS", "my.Callback")
    with library_output(verbose=False):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
        assert os.environ["RAY_TUNE_CALLBACKS"] == "my.Callback"
        assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ  # their callbacks, Tune's loggers
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"
