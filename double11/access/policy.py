"""Who may call each HTTP route: the one table the front checks.

A command's route and an area's view take their rule from their declaration
(`spec.Command.allowed`, `spec.Read.allowed`); the rest is here.  The
operator may call every route; a public route needs no token at all.
"""

from __future__ import annotations

from double11 import areas
from double11.access.roles import BUYERS, MERCHANTS, OPERATOR_ONLY, Allowed, Role

PUBLIC = None  # a route anyone may call, without a token

_BUYERS_AND_MERCHANTS = Allowed(anyone=frozenset({Role.gateway}), own=frozenset({Role.buyer, Role.merchant}))

_CORE: dict[str, Allowed | None] = {
    "/v1/stats": PUBLIC,
    "/v1/stats/stream": PUBLIC,
    "/openapi.json": PUBLIC,
    "/healthz": PUBLIC,
    "/": PUBLIC,  # the big screen
    "/static/{file}": PUBLIC,
    "/metrics": Allowed(anyone=frozenset({Role.metrics})),
    "/v1/ledger": OPERATOR_ONLY,
    # a gateway's batches for any buyer; a buyer's or merchant's, each
    # command checked on its own (access/commands.py)
    "/v1/batch": _BUYERS_AND_MERCHANTS,
    "/v1/checkouts/{checkout}": BUYERS,
    "/v1/orders/{order}": _BUYERS_AND_MERCHANTS,
    "/v1/skus": MERCHANTS,  # a merchant lists its own
    "/v1/skus/{sku}": MERCHANTS,
}

ROUTES: dict[str, Allowed | None] = {
    **_CORE,
    **{command.route: command.allowed for command in areas.COMMANDS},
    **{read.route: read.allowed for read in areas.READS},
}
