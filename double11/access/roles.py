"""The roles a token carries, and the principal a call acts as."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class Role(enum.IntEnum):
    # numbers travel on the link between the front and the engine process
    operator = 1  # everything
    gateway = 2  # a trusted front (a mobile app's backend): every buyer command for any buyer
    buyer = 3  # one buyer: its own checkouts, orders and coupons
    merchant = 4  # one merchant: its own SKUs, orders and store coupons
    metrics = 5  # a scraper of /metrics and nothing else


class Principal(NamedTuple):
    role: Role
    id: int  # the buyer's or merchant's id; 0 for the others


@dataclass(frozen=True)
class Allowed:
    """Who may call a command or read a view besides the operator (who
    may do everything): `anyone` of these roles, on anybody's things; `own`
    of these roles, on their own things only (a buyer's checkouts, orders and
    coupons; a merchant's SKUs, orders and store coupons).  Another's thing
    reads as missing (404), so a token cannot learn that it exists."""

    anyone: frozenset[Role] = frozenset()
    own: frozenset[Role] = frozenset()

    def may(self, role: Role) -> bool:
        return role == Role.operator or role in self.anyone or role in self.own

    def only_own(self, role: Role) -> bool:
        return role in self.own and role not in self.anyone and role != Role.operator


OPERATOR_ONLY = Allowed()
# a buyer on its own things, and a gateway on any buyer's
BUYERS = Allowed(anyone=frozenset({Role.gateway}), own=frozenset({Role.buyer}))
# a merchant on its own things
MERCHANTS = Allowed(own=frozenset({Role.merchant}))


def a_token_of(role: Role) -> str:
    """'a buyer token', 'an operator token': how messages name a token."""
    return f"{'an' if role.name[0] in 'aeiou' else 'a'} {role.name} token"


# the Python API and the tools on the data folder act as the operator
OPERATOR = Principal(Role.operator, 0)

ROLE_NAMES = {role.name: role for role in Role}
# roles whose tokens name who they act as
WITH_ID = frozenset({Role.buyer, Role.merchant})
