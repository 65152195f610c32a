"""``AccountSnapshot``: the account and book as the risk guard (``core.risk``) judges an entry.

It lives in ``core.sim`` because the simulator builds it (``FillSimulator.snapshot``) and
``core.risk`` already stands on ``core.sim``; the guard re-exports it, so no import runs back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """The account and book the guard judges against, at the request time.

    ``positions``: signed notional (USDT, qty · mark; + long, − short) of each open position.
    ``orders_this_second`` / ``orders_today``: market orders already sent in the request's second /
    UTC day. ``day_start_equity_usdt``: equity at the start of the request's UTC day.
    """

    equity_usdt: float
    wallet_usdt: float
    used_margin_usdt: float
    day_start_equity_usdt: float
    positions: Mapping[str, float] = field(default_factory=dict)
    trading_enabled: bool = True
    kill_switch: bool = False
    orders_this_second: int = 0
    orders_today: int = 0
