"""Rule-based baseline strategies (seeds 002, 003): pure, vectorized, causal signal generators.

Each takes 1m candles and returns ``core.signals.BarSignals`` in the form the policy produces, so
the portfolio backtester runs a model-driven and a rule-driven book the same way; a model is
promoted only if it beats them. Common rules (look-ahead, timeframes, SL/TP, size): ``base``.

- ``ema_atr_rsi_trend`` — seed 003 §3's conservative EMA/ATR/RSI trend strategy (1h bars).
- ``bollinger_reversion`` — Bollinger-band mean reversion (15m bars).
- ``donchian_breakout`` — Donchian channel breakout (15m bars).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from core.signals import BarSignals
from core.strategies.base import StrategyConfig, check_candles, coarse_view
from core.strategies.bollinger import BollingerConfig, bollinger_reversion
from core.strategies.donchian import DonchianConfig, donchian_breakout
from core.strategies.trend import TrendConfig, ema_atr_rsi_trend

#: Baselines by name: (signal function, its default config).
BASELINES: Mapping[str, tuple[Callable[..., BarSignals], StrategyConfig]] = MappingProxyType(
    {
        "ema_atr_rsi_trend": (ema_atr_rsi_trend, TrendConfig()),
        "bollinger_reversion": (bollinger_reversion, BollingerConfig()),
        "donchian_breakout": (donchian_breakout, DonchianConfig()),
    }
)

__all__ = [
    "BASELINES", "BollingerConfig", "DonchianConfig", "StrategyConfig", "TrendConfig", "bollinger_reversion",
    "check_candles", "coarse_view", "donchian_breakout", "ema_atr_rsi_trend",
]  # fmt: skip
