"""How demo, research and the ``train`` job cut walk-forward folds over a training set.

``history_folds`` sizes the windows to the history (the demo; research without explicit lengths);
``rolling_folds`` takes explicit train / validation / test lengths in days or 1m bars (research with
``--train/--val/--test``, the ``train`` job). The embargo after every boundary is the label horizon.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import ConfigError
from tune.dataset import TrainingSet
from tune.splits import Fold, WalkForwardConfig, walk_forward_folds


def history_folds(data: TrainingSet, horizon_bars: int, n_folds: int = 3) -> list[Fold]:
    """Walk-forward folds in bars sized to the history: with u = 1/(n_folds + 5) of it, ``n_folds`` test
    windows of u each, a validation window of u and 3u for training (3 folds: 1/8, 1/8, 3/8); embargo =
    label horizon."""
    bars = int((data.ts_ms.max() - data.ts_ms.min()) // 60_000) + 1
    test = max(60, bars // (n_folds + 5))
    cfg = WalkForwardConfig(
        length_unit="bars", train_length=max(60, 3 * bars // (n_folds + 5)), val_length=test, test_length=test,
        embargo_bars=horizon_bars, horizon_bars=horizon_bars, max_folds=n_folds,
    )  # fmt: skip
    return walk_forward_folds(data.ts_ms, data.exit_ts_ms, cfg)


def rolling_folds(
    data: TrainingSet,
    horizon_bars: int,
    *,
    unit: Literal["days", "bars"],
    train: float,
    val: float,
    test: float,
    n_folds: int,
) -> list[Fold]:
    """The most recent ``n_folds`` rolling folds of explicit lengths in ``unit``, the last test window
    ending with the data; embargo = label horizon. Raises ConfigError for windows that cannot be built."""
    try:
        cfg = WalkForwardConfig(
            length_unit=unit, train_length=train, val_length=val, test_length=test, embargo_bars=horizon_bars,
            horizon_bars=horizon_bars, max_folds=n_folds,
        )  # fmt: skip
    except ValueError as e:
        raise ConfigError(f"walk-forward windows: {e}") from None
    return walk_forward_folds(data.ts_ms, data.exit_ts_ms, cfg)


class FoldSizing(BaseModel):
    """How research cuts walk-forward folds: sized to the history (no lengths given) or explicit.

    Sized to the history: with u = 1/(folds + 5) of the period, ``folds`` test windows of u, a
    validation window of u and 3u of training (``history_folds``). Explicit: train, val and test
    lengths in ``unit`` (days or 1m bars), rolling, the last test window ending with the data
    (``rolling_folds``). The embargo after every boundary is the label horizon in both cases.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    folds: int = Field(3, ge=1, le=50, description="walk-forward folds (test windows)")
    unit: Literal["days", "bars"] = Field("days", description="unit of train/val/test")
    train: float | None = Field(None, gt=0, description="training window")
    val: float | None = Field(None, gt=0, description="validation window (model selection)")
    test: float | None = Field(None, gt=0, description="test window (out of sample)")

    @model_validator(mode="after")
    def _all_or_none(self) -> FoldSizing:
        given = [x is not None for x in (self.train, self.val, self.test)]
        if any(given) and not all(given):
            raise ValueError("give --train, --val and --test together (or none: sized to the history)")
        return self

    @property
    def sized_to_history(self) -> bool:
        return self.train is None

    def describe(self) -> str:
        if self.sized_to_history:
            return f"{self.folds} folds sized to the history (test = validation = 1/{self.folds + 5}, train = 3/{self.folds + 5})"
        return (
            f"{self.folds} folds of train {self.train:g} / val {self.val:g} / test {self.test:g} {self.unit}"
        )

    def cut(self, data: TrainingSet, horizon_bars: int) -> list[Fold]:
        """The walk-forward folds of this sizing over the training set."""
        if self.sized_to_history:
            return history_folds(data, horizon_bars, self.folds)
        assert self.train is not None and self.val is not None and self.test is not None  # _all_or_none
        return rolling_folds(
            data,
            horizon_bars,
            unit=self.unit,
            train=self.train,
            val=self.val,
            test=self.test,
            n_folds=self.folds,
        )
