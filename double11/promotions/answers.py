"""What the promotions' moves answer (`coupon_budget`, `deal_qty`): their
bodies when done and the words of their refusals, from the command as sent
(its template or deal, its signed count) and its result's ref (the budget
or qty it left, or what could still be taken out), which the idempotency
table keeps: a retry reads as the first try did, whatever the template or
the deal has become since."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from double11.errors import Result

# (the command's path id, its values as sent: area_commands.values_of, its result's ref)
Values = dict[str, Any]


def budget_moved(template: int, values: Values, ref: int) -> dict[str, Any]:
    """The body of a done coupon_budget (ref: the template's budget_count after it)."""
    return {"template": template, "count": values["count"], "budget_count": ref}


def qty_moved(deal: int, values: Values, ref: int) -> dict[str, Any]:
    """The body of a done deal_qty (ref: the deal's qty after it)."""
    return {"deal": deal, "qty": values["qty"], "deal_qty": ref}


def _refused(unknown: Result, short: Result, field: str, thing: str,
             left: str) -> Callable[[Result, int, Values, int], str | None]:
    """The words of a move's refusals: `unknown` (no such thing), `short`
    (fewer left to take out than asked: `left` says how many, from the ref);
    None: the code's own say it all."""

    def words(code: Result, target: int, values: Values, ref: int) -> str | None:
        if code == unknown:
            return f"{thing} {target} does not exist"
        if code == short:
            return (f"{field} must be at least -{ref} ({thing} {target} {left.format(ref)}), got {values[field]}; "
                    "nothing was taken out")
        return None

    return words


# the words of each move's refusals, by op (double11/engine/refusals.py asks)
REFUSED: dict[str, Callable[[Result, int, Values, int], str | None]] = {
    "coupon_budget": _refused(Result.unknown_template, Result.budget_exhausted, "count", "template",
                              "may still grant {} coupons; granted ones are not taken back"),
    "deal_qty": _refused(Result.unknown_deal, Result.deal_sold_out, "qty", "deal",
                         "has {} units left; reserved and sold ones are not taken out"),
}
