"""Component configuration models and the presets of spec 001 §21.

One pydantic model per component, ``extra="forbid"``, units in field names or descriptions.
They are built once at the entry point (raytrade.settings) and passed down.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSpec(_Config):
    """Triple-barrier label specification (spec 001 §8, preset §21.1)."""

    k_tp: float = Field(1.5, gt=0, description="take-profit barrier distance, in ATR")
    k_sl: float = Field(1.0, gt=0, description="stop-loss barrier distance, in ATR")
    h_bars: int = Field(360, ge=1, le=100_000, description="time barrier, in 1m bars")
    risk_mae_atr: float = Field(
        3.0, gt=0, description="adverse excursion beyond which the path counts as SL, in ATR"
    )
    fee_rate: float = Field(
        0.0004, ge=0, lt=0.01, description="taker fee per fill, as a fraction of notional"
    )
    slippage_k: float = Field(
        0.15, ge=0, le=10, description="slippage coefficient of the fill model (dimensionless)"
    )
    atr_timeframe: Literal["1m", "15m", "1h"] = Field(
        "15m", description="timeframe of the ATR the barriers use"
    )
    atr_period: int = Field(14, ge=2, le=500, description="Wilder ATR period, in bars of atr_timeframe")
    barrier_price: Literal["mark", "last"] = Field(
        "mark",
        description="price whose 1m high/low the SL/TP/RISK barriers watch: 'mark' as the simulator's "
        "triggers (a bar without a mark candle uses its last-price candle, as the backtest panel does), "
        "or 'last' price throughout",
    )

    @model_validator(mode="after")
    def _barriers_ordered(self) -> LabelSpec:
        if self.risk_mae_atr < self.k_sl:
            raise ValueError(
                f"risk_mae_atr ({self.risk_mae_atr}) must be ≥ k_sl ({self.k_sl}): RISK is beyond the stop"
            )
        return self

    def spec_hash(self) -> str:
        """Return a stable 16-hex-digit hash of every field (independent of field order and Python version)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class PolicyConfig(_Config):
    """Decision policy (spec 001 §13, preset §21.2). Gates in return units or in ATR multiples, as named."""

    ev_min: float = Field(0.0, description="minimum expected value after costs, as a return fraction")
    q05_min_atr: float = Field(
        -1.5,
        le=0,
        description="floor of the predicted 5% quantile of the net return, in ATR multiples (negative), "
        "costs set aside: the gate passes q05 > q05_min_atr·ATR/price − round-trip cost estimate. Must be "
        "≤ −LabelSpec.k_sl (a stop-out returns −k_sl·ATR/price − costs); −1.5 = −(k_sl 1.0 + 0.5 ATR "
        "for gaps and slippage past the stop). See core.policy",
    )
    mae_max_atr: float = Field(1.2, gt=0, description="maximum expected adverse excursion, in ATR multiples")
    max_positions: int = Field(6, ge=1, le=200, description="open positions at most")
    leverage: int = Field(3, ge=1, le=125, description="leverage of a new position")
    max_leverage: int = Field(5, ge=1, le=125, description="leverage cap whatever the regime")
    position_notional_pct: float = Field(
        0.15, gt=0, le=5, description="notional of one position, fraction of equity"
    )
    btc_high_vol_action: Literal["size_down", "block", "none"] = Field(
        "size_down", description="what the BTC high-volatility regime does to new entries"
    )
    high_vol_size_mult: float = Field(
        0.5, gt=0, le=1, description="size multiplier in the high-volatility regime"
    )

    @model_validator(mode="after")
    def _leverage_capped(self) -> PolicyConfig:
        if self.leverage > self.max_leverage:
            raise ValueError(f"leverage ({self.leverage}) exceeds max_leverage ({self.max_leverage})")
        return self


def policy_label_conflicts(policy: PolicyConfig, label: LabelSpec) -> list[str]:
    """Return one sentence per way ``policy`` contradicts ``label`` (empty: consistent).

    A Q05 floor above the stop (``q05_min_atr > −k_sl``) blocks every trade whose stop-loss probability
    is 5% or more: such a trade's 5% quantile is at most the stop-out's return, −k_sl·ATR/price − costs.
    """
    out = []
    if policy.q05_min_atr > -label.k_sl:
        out.append(
            f"policy.q05_min_atr ({policy.q05_min_atr:g}) is above -label.k_sl ({-label.k_sl:g}): a stopped-out "
            f"trade returns -{label.k_sl:g} ATR minus costs, so any model expecting 5% or more of its trades "
            f"to stop out predicts a q05 below the floor and the policy can never enter; set q05_min_atr "
            f"≤ {-label.k_sl:g} (default -1.5: 0.5 ATR past the stop for gaps and slippage)"
        )
    return out


class RiskConfig(_Config):
    """Hard risk guards (spec 001 §14, preset §21.3; seed 003 §4). Fractions of equity unless named."""

    max_used_margin_pct: float = Field(0.35, gt=0, le=1, description="used margin / equity at most")
    daily_loss_limit_pct: float = Field(
        0.02, gt=0, le=1, description="daily loss that disables trading, of equity"
    )
    max_positions: int = Field(6, ge=1, le=200, description="open positions at most")
    max_total_notional_pct: float = Field(1.2, gt=0, le=50, description="sum of |notional| / equity at most")
    max_directional_notional_pct: float = Field(
        0.8, gt=0, le=50, description="one side's notional / equity at most"
    )
    max_symbol_notional_pct: float = Field(
        0.3, gt=0, le=50, description="one symbol's notional / equity at most"
    )
    max_btc_beta_notional_pct: float = Field(
        1.0, gt=0, le=50, description="sum of beta-weighted notional / equity at most (BTC-beta limit)"
    )
    max_orders_per_s: int = Field(5, ge=1, description="orders per second at most")
    max_orders_per_day: int = Field(500, ge=1, description="orders per UTC day at most")
    max_slippage_pct: float = Field(
        0.005, gt=0, le=0.2, description="fill price vs reference price, fraction"
    )

    @model_validator(mode="after")
    def _directional_within_total(self) -> RiskConfig:
        if self.max_directional_notional_pct > self.max_total_notional_pct:
            raise ValueError(
                f"max_directional_notional_pct ({self.max_directional_notional_pct}) exceeds "
                f"max_total_notional_pct ({self.max_total_notional_pct})"
            )
        return self


class WriterConfig(_Config):
    """Batched database writer (spec 001 §5.2)."""

    flush_interval_s: float = Field(2.0, ge=0.05, le=5.0, description="flush at least this often, seconds")
    max_batch_rows: int = Field(50_000, ge=1, description="flush as soon as a table buffers this many rows")
    max_buffer_rows: int = Field(2_000_000, ge=1, description="rows buffered at most before back-pressure")
    retry_initial_s: float = Field(
        0.5, gt=0, description="first retry delay when the database is down, seconds"
    )
    retry_max_s: float = Field(30.0, gt=0, description="longest retry delay, seconds")
