"""Whether a principal may see a view it asked for.

The front checks the role (policy.py); what depends on the thing (whose it
is) is checked here, on the view as read: a buyer sees a view whose "buyer"
is its id, a merchant one whose "merchant" is.  Another's reads as missing.
"""

from __future__ import annotations

from typing import Any

from double11.access.roles import Allowed, Principal, Role

_OWNER_KEY = {Role.buyer: "buyer", Role.merchant: "merchant"}


def may_see(allowed: Allowed, principal: Principal, view: dict[str, Any]) -> bool:
    if not allowed.only_own(principal.role):
        return allowed.may(principal.role)
    key = _OWNER_KEY.get(principal.role)
    return key is not None and view.get(key) == principal.id
