"""Configuration of the fill simulator (spec 001 §10.1): costs, time limit, sizing, protection anchor."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.config import LabelSpec, PolicyConfig, RiskConfig


class SimConfig(BaseModel):
    """Fill model and book conventions shared by the backtester, the shadow executor and the RL env."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fee_rate: float = Field(0.0004, ge=0, lt=0.01, description="taker fee per fill, fraction of notional")
    slippage_k: float = Field(
        0.15, ge=0, le=10, description="slippage per fill in ATRs of the decision bar (core.costs)"
    )
    impact_k: float = Field(
        0.0005,
        ge=0,
        le=1,
        description="square-root impact: adds impact_k·sqrt(notional / bar quote volume) to each fill's "
        "slippage fraction; 0 makes fills equal to the labels'",
    )
    max_hold_bars: int = Field(0, ge=0, description="time exit after this many held 1m bars; 0: none")
    bar_ms: int = Field(60_000, gt=0, description="bar length, ms (1m bars)")
    initial_equity_usdt: float = Field(10_000.0, gt=0, description="starting wallet balance, USDT")
    default_leverage: int = Field(
        PolicyConfig().leverage, ge=1, le=125, description="leverage of an entry that names none"
    )
    sizing: Literal["equity_fraction", "notional_usdt"] = Field(
        "equity_fraction", description="what a signal's size is: a fraction of equity, or USDT notional"
    )
    protection: Literal["price", "entry_distance"] = Field(
        "price",
        description="what a signal's SL/TP levels are: trigger prices (core.signals), or distances in "
        "USDT from the entry fill (the labels' barriers)",
    )

    @classmethod
    def from_label_spec(cls, spec: LabelSpec, **overrides: Any) -> SimConfig:
        """Return the simulator of a label spec: its fee rate, slippage_k and horizon as time limit."""
        values: dict[str, Any] = {
            "fee_rate": spec.fee_rate,
            "slippage_k": spec.slippage_k,
            "max_hold_bars": spec.h_bars,
        }
        values.update(overrides)
        return cls(**values)

    def vector(self) -> np.ndarray:
        """Return the kernel's ``cfg`` vector."""
        from core.sim import kernel as k

        cfg = np.zeros(k.CFG_LEN)
        cfg[k.C_FEE_RATE] = self.fee_rate
        cfg[k.C_SLIPPAGE_K] = self.slippage_k
        cfg[k.C_IMPACT_K] = self.impact_k
        cfg[k.C_MAX_HOLD_BARS] = self.max_hold_bars
        cfg[k.C_BAR_MS] = self.bar_ms
        cfg[k.C_SIZE_MODE] = (
            k.SIZE_EQUITY_FRACTION if self.sizing == "equity_fraction" else k.SIZE_NOTIONAL_USDT
        )
        cfg[k.C_PROTECTION_MODE] = (
            k.PROTECTION_PRICE if self.protection == "price" else k.PROTECTION_ENTRY_DISTANCE
        )
        cfg[k.C_DEFAULT_LEVERAGE] = self.default_leverage
        return cfg


def sim_config_for(label: LabelSpec, policy: PolicyConfig, *, max_hold_bars: int | None = None) -> SimConfig:
    """Return the one simulator of an installation's presets: the label spec's fee rate, slippage_k and
    horizon (time limit; ``max_hold_bars`` overrides it), the policy's leverage as default leverage.

    The backtest, the shadow session and the training evaluation all build theirs here, so they price
    trades alike (backtest ↔ shadow parity depends on it).
    """
    overrides: dict[str, Any] = {"default_leverage": policy.leverage}
    if max_hold_bars is not None:
        overrides["max_hold_bars"] = max_hold_bars
    return SimConfig.from_label_spec(label, **overrides)


def risk_vector(cfg: RiskConfig | None) -> np.ndarray:
    """Return the kernel's ``lim`` vector; ``None`` enables only the always-on venue and book checks."""
    from core.sim import kernel as k

    lim = np.full(k.LIM_LEN, np.inf)
    if cfg is None:
        lim[k.L_ENABLED] = k.RISK_ALWAYS_ON
        lim[k.L_DAILY_LOSS_PCT] = 1.0
        return lim
    lim[k.L_ENABLED] = k.RISK_ALL
    lim[k.L_MAX_USED_MARGIN_PCT] = cfg.max_used_margin_pct
    lim[k.L_DAILY_LOSS_PCT] = cfg.daily_loss_limit_pct
    lim[k.L_MAX_POSITIONS] = cfg.max_positions
    lim[k.L_MAX_TOTAL_PCT] = cfg.max_total_notional_pct
    lim[k.L_MAX_DIRECTIONAL_PCT] = cfg.max_directional_notional_pct
    lim[k.L_MAX_SYMBOL_PCT] = cfg.max_symbol_notional_pct
    lim[k.L_MAX_BETA_PCT] = cfg.max_btc_beta_notional_pct
    lim[k.L_MAX_ORDERS_PER_S] = cfg.max_orders_per_s
    lim[k.L_MAX_ORDERS_PER_DAY] = cfg.max_orders_per_day
    lim[k.L_MAX_SLIPPAGE_PCT] = cfg.max_slippage_pct
    return lim
