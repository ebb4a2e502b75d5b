"""What a release answers: its body when done and the words of its
refusals, from the command as sent (its SKU, its qty) and its result's ref
(the units for sale it left, or had), which the idempotency table keeps: a
retry reads as the first try did, whatever the stock has become since."""

from __future__ import annotations

from typing import Any

from double11.errors import Result


def released(sku: int, qty: int, ref: int) -> dict[str, Any]:
    """The body of a done release (ref: the units left for sale)."""
    return {"sku": sku, "qty": qty, "stock": ref}


def refused(code: Result, sku: int, qty: int, ref: int) -> str | None:
    """The words of a refused release; None: the code's own say it all."""
    if code == Result.unknown_sku:
        return f"sku {sku} is not in the catalog"
    if code == Result.out_of_stock:
        return (f"qty must be at most the units sku {sku} has for sale ({ref}; reserved and sold units are not), "
                f"got {qty}; nothing was released")
    return None
