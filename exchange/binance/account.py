"""The account's totals (``GET /fapi/v3/account``), parsed at the edge into ``AccountTotals``.

The live book's account snapshots (``storage.account``) come from here: a read on a transport of its
own, off the order path. Binance's margin ratio is the maintenance margin over the margin balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange.binance.payloads import _Reader
from exchange.binance.signed import SignedTransport

__all__ = ["AccountTotals", "fetch_account", "parse_account"]


@dataclass(frozen=True, slots=True)
class AccountTotals:
    """The totals of ``GET /fapi/v2|v3/account`` (USDT, Binance's field names)."""

    totalWalletBalance: Decimal
    totalUnrealizedProfit: Decimal
    totalMarginBalance: Decimal
    totalInitialMargin: Decimal
    totalMaintMargin: Decimal
    availableBalance: Decimal

    def snapshot(self) -> dict[str, float]:
        """As the figures of an ``account_snapshots`` row (``storage.account.snapshot_row``)."""
        balance = float(self.totalMarginBalance)
        return {
            "equity": balance,
            "wallet_balance": float(self.totalWalletBalance),
            "unrealized_pnl": float(self.totalUnrealizedProfit),
            "available_margin": float(self.availableBalance),
            "used_margin": float(self.totalInitialMargin),
            "margin_ratio": float(self.totalMaintMargin) / balance if balance > 0 else 0.0,
        }


def parse_account(data: Any) -> AccountTotals:
    """Parse the totals of an account answer (v2 or v3); MalformedMessage names a bad field."""
    r = _Reader(data, "account", None, with_symbol=False)
    return AccountTotals(
        totalWalletBalance=r.decimal("totalWalletBalance", signed=True),
        totalUnrealizedProfit=r.decimal("totalUnrealizedProfit", signed=True),
        totalMarginBalance=r.decimal("totalMarginBalance", signed=True),
        totalInitialMargin=r.decimal("totalInitialMargin"),
        totalMaintMargin=r.decimal("totalMaintMargin"),
        availableBalance=r.decimal("availableBalance", signed=True),
    )


def fetch_account(http: SignedTransport) -> AccountTotals:
    """The account's totals now (``GET /fapi/v3/account``, signed, weight 5)."""
    return parse_account(http.call("GET", "/fapi/v3/account"))
