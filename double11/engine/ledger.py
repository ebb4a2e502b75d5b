"""The money ledger: double entry in integer fen, summing to zero at every moment.

Accounts: one funding account per buyer (it goes negative as the buyer pays:
the money came from outside), platform escrow, one account per merchant, and
the platform's commission revenue, and the platform's marketing account
(it funds platform coupons: docs/promotions.md; negative, as the buyers').  Every movement is a transfer recorded in
the journal; balances are the journal's running sums.  The transfers are
made by the engine's compiled loop (`transitions.py`: _pay, _confirm,
_refund), which adds to these arrays in place.
"""

from __future__ import annotations

import enum

import numpy as np

from double11.engine.columns import Column, Table


class TransferKind(enum.IntEnum):
    payment = 1  # buyer -> escrow
    settlement = 2  # escrow -> merchant
    commission = 3  # escrow -> platform
    refund = 4  # escrow -> buyer
    marketing = 5  # marketing -> escrow: a payment's platform-funded discounts
    marketing_refund = 6  # escrow -> marketing: a refunded order's platform-funded share


# a transfer: its kind, the checkout (payment) or order (the others) it belongs to, its amount
JOURNAL_FIELDS = [("ref", "i8"), ("amount", "i8"), ("kind", "u1")]


class Ledger:
    def __init__(self, merchants: int, expected_checkouts: int = 1 << 20, prefault: bool = False):
        self.buyer_balance = Column(np.int64, expected_checkouts, prefault)
        self.merchant_balance = np.zeros(merchants, dtype=np.int64)
        self.escrow = 0
        self.platform = 0
        self.marketing = 0
        # journal: one record per transfer
        self.journal = Table(JOURNAL_FIELDS, expected_checkouts * 6 // 5, prefault, align=False)

    def balances(self) -> dict[str, int]:
        accounts = {
            "buyers": int(self.buyer_balance.data.sum()),
            "escrow": self.escrow,
            "merchants": int(self.merchant_balance.sum()),
            "platform": self.platform,
            "marketing": self.marketing,
        }
        return accounts

    def view(self) -> dict:
        accounts = self.balances()
        return {"accounts": accounts, "sum": sum(accounts.values()), "transfers": self.journal.size}
