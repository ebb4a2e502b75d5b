"""Who may do what (double11/access), over a real HTTP server with tokens.

One table: every route, called by every role (and by no token at all).
An allowed call succeeds; the others get 401 (no valid token), 403 (a role
the route does not allow, or a command naming another buyer or merchant)
or 404 (another's checkout, order, coupon: as if it did not exist), and
change nothing."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import ThreadServer, open_festival
from model import HOUR_MS, T0, co, deal, grant, pay, restock, template, threshold

from double11.access import tokens
from double11.access.roles import Principal, Role
from double11.access.tokens import Verifier

KEY = bytes(range(32))
BUYER, OTHER_BUYER = 1, 2
MERCHANT, OTHER_MERCHANT = 10, 20  # sku 102 is merchant 10's
SKU = 102

ROLES = {
    "none": None,
    "buyer": Principal(Role.buyer, BUYER),
    "other_buyer": Principal(Role.buyer, OTHER_BUYER),
    "merchant": Principal(Role.merchant, MERCHANT),
    "other_merchant": Principal(Role.merchant, OTHER_MERCHANT),
    "gateway": Principal(Role.gateway, 0),
    "operator": Principal(Role.operator, 0),
    "metrics": Principal(Role.metrics, 0),
}
_keys = itertools.count()


def key() -> str:
    return f"t{next(_keys)}"


def one(f, cmd: dict) -> dict:
    (r,) = f.execute([cmd])
    assert r["status"] in (200, 201), r
    return r["body"]


class World:
    """The things the calls name, made by the operator through the Python API."""

    def __init__(self, f) -> None:
        self.f = f
        one(f, restock(key(), SKU, 100_000))
        self.store_template = one(f, template(key(), kind="store", merchant=MERCHANT, budget_count=10_000))["template"]
        self.platform_template = one(f, template(key(), budget_count=10_000, per_buyer_max=100))["template"]
        self.coupon = one(f, grant(key(), self.platform_template, buyer=BUYER))["coupon"]
        self.deal = one(f, deal(key(), 104, 100, 5, start=T0 + 100 * HOUR_MS, until=T0 + 101 * HOUR_MS))["deal"]
        self.threshold = one(f, threshold(key(), 100_000, 100, start=T0 + 100 * HOUR_MS,
                                          until=T0 + 101 * HOUR_MS))["threshold"]
        self.windows = itertools.count(200)

    def checkout(self) -> dict:
        return one(self.f, co(key(), [(SKU, 1)], buyer=BUYER))

    def paid_order(self) -> int:
        c = self.checkout()
        one(self.f, pay(key(), c["checkout"], c["amount_fen"]))
        return c["orders"][0]["order"]

    def window(self) -> tuple[int, int]:
        start = T0 + next(self.windows) * HOUR_MS
        return start, start + HOUR_MS


# (name, method, path and body made from the world, {role: status}; a role
# not named gets 403, and "none" 401)
Request = Callable[[World], tuple[str, Any]]
CASES: list[tuple[str, str, Request, dict[str, int]]] = [
    ("stats", "GET", lambda w: ("/v1/stats", None), {role: 200 for role in ROLES}),
    ("openapi", "GET", lambda w: ("/openapi.json", None), {role: 200 for role in ROLES}),
    ("healthz", "GET", lambda w: ("/healthz", None), {role: 200 for role in ROLES}),
    ("screen", "GET", lambda w: ("/", None), {role: 200 for role in ROLES}),
    ("metrics", "GET", lambda w: ("/metrics", None), {"operator": 200, "metrics": 200}),
    ("ledger", "GET", lambda w: ("/v1/ledger", None), {"operator": 200}),
    ("sku list", "GET", lambda w: ("/v1/skus?limit=2", None),
     {"operator": 200, "merchant": 200, "other_merchant": 200}),
    ("sku", "GET", lambda w: (f"/v1/skus/{SKU}", None), {"operator": 200, "merchant": 200, "other_merchant": 404}),
    ("checkout view", "GET", lambda w: (f"/v1/checkouts/{w.checkout()['checkout']}", None),
     {"operator": 200, "gateway": 200, "buyer": 200, "other_buyer": 404}),
    ("order view", "GET", lambda w: (f"/v1/orders/{w.checkout()['orders'][0]['order']}", None),
     {"operator": 200, "gateway": 200, "buyer": 200, "other_buyer": 404, "merchant": 200, "other_merchant": 404}),
    ("coupon view", "GET", lambda w: (f"/v1/coupons/{w.coupon}", None),
     {"operator": 200, "gateway": 200, "buyer": 200, "other_buyer": 404}),
    ("buyer's coupons", "GET", lambda w: (f"/v1/buyers/{BUYER}/coupons", None),
     {"operator": 200, "gateway": 200, "buyer": 200, "other_buyer": 404}),
    ("template view", "GET", lambda w: (f"/v1/coupon-templates/{w.store_template}", None),
     {"operator": 200, "merchant": 200, "other_merchant": 404}),
    ("deal view", "GET", lambda w: (f"/v1/deals/{w.deal}", None), {"operator": 200}),
    ("threshold view", "GET", lambda w: (f"/v1/threshold-discounts/{w.threshold}", None), {"operator": 200}),
    ("checkout", "POST", lambda w: ("/v1/checkouts", co(key(), [(SKU, 1)], buyer=BUYER)),
     {"operator": 201, "gateway": 201, "buyer": 201, "other_buyer": 403}),
    ("pay", "POST", lambda w: (lambda c: (f"/v1/checkouts/{c['checkout']}/pay",
                                          {"amount_fen": c["amount_fen"], "idempotency_key": key()}))(w.checkout()),
     {"operator": 200, "gateway": 200, "buyer": 200, "other_buyer": 404}),
    ("cancel", "POST", lambda w: (f"/v1/checkouts/{w.checkout()['checkout']}/cancel", {"idempotency_key": key()}),
     {"operator": 200, "gateway": 200, "buyer": 200, "other_buyer": 404}),
    ("confirm", "POST", lambda w: (f"/v1/orders/{w.paid_order()}/confirm", {"idempotency_key": key()}),
     {"operator": 200, "gateway": 200, "buyer": 200, "other_buyer": 404}),
    ("refund", "POST", lambda w: (f"/v1/orders/{w.paid_order()}/refund", {"idempotency_key": key()}),
     {"operator": 200, "gateway": 200, "buyer": 200, "other_buyer": 404}),
    ("restock", "POST", lambda w: (f"/v1/skus/{SKU}/restock", {"qty": 1, "idempotency_key": key()}),
     {"operator": 200, "merchant": 200, "other_merchant": 403}),
    # a stock quota moved away (double11/quotas): the cluster's rebalancer, as the operator; not even the SKU's merchant
    ("release", "POST", lambda w: (f"/v1/skus/{SKU}/release", {"qty": 1, "idempotency_key": key()}),
     {"operator": 200}),
    # a template's budget or a deal's units moved (issue 25): the operator's alone, not even the template's merchant
    ("coupon budget", "POST", lambda w: (f"/v1/coupon-templates/{w.store_template}/budget",
                                         {"count": 1, "idempotency_key": key()}), {"operator": 200}),
    ("deal qty", "POST", lambda w: (f"/v1/deals/{w.deal}/qty", {"qty": 1, "idempotency_key": key()}),
     {"operator": 200}),
    ("store template", "POST",
     lambda w: ("/v1/coupon-templates", template(key(), kind="store", merchant=MERCHANT)),
     {"operator": 201, "merchant": 201, "other_merchant": 403}),
    ("platform template", "POST", lambda w: ("/v1/coupon-templates", template(key())),
     {"operator": 201, "merchant": 403, "other_merchant": 403}),
    ("threshold", "POST",
     lambda w: (lambda s, u: ("/v1/threshold-discounts", threshold(key(), 10_000, 100, start=s, until=u)))(*w.window()),
     {"operator": 201}),
    ("deal", "POST", lambda w: (lambda s, u: ("/v1/deals", deal(key(), 104, 100, 5, start=s, until=u)))(*w.window()),
     {"operator": 201}),
    ("grant", "POST", lambda w: (f"/v1/coupon-templates/{w.platform_template}/grants",
                                 {"buyer": BUYER, "source": "game:test", "idempotency_key": key()}),
     {"operator": 201, "gateway": 201, "buyer": 201, "other_buyer": 403}),
]


def without_op_and_ids(path: str, cmd: dict | None) -> dict | None:
    """A single request's body: the command without its op (the route says it)."""
    if cmd is None:
        return None
    return {k: v for k, v in cmd.items() if k != "op"}


def state(f) -> tuple:
    """What a refused call must leave as it was."""
    e = f.engine
    return (e.c_status.size, e.o_status.size, e.keys.size, f.ledger(), [f.checkout(c) for c in
            range(1, e.c_status.size + 1)], [f.order(o) for o in range(1, e.o_status.size + 1)],
            f.sku(SKU), f.view("coupon_template", 1), f.view("coupon", 1))


@pytest.fixture(scope="module")
def served():
    f = open_festival()
    server = ThreadServer(f, verifier=Verifier([KEY]))
    try:
        yield f, World(f), server.url
    finally:
        server.stop()


def headers_of(principal: Principal | None) -> dict[str, str]:
    if principal is None:
        return {}
    return {"authorization": f"Bearer {tokens.issue(KEY, principal.role, principal.id)}"}


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("name,method,request_of,expected", CASES, ids=[c[0] for c in CASES])
def test_every_route_for_every_role(served, name, method, request_of, expected, role):
    f, world, url = served
    path, cmd = request_of(world)
    want = expected.get(role, 401 if role == "none" else 403)
    before = state(f)
    r = httpx.request(method, url + path, json=without_op_and_ids(path, cmd), headers=headers_of(ROLES[role]),
                      timeout=10)
    assert r.status_code == want, (name, role, r.text[:300])
    if want >= 400:
        body = r.json()
        assert body["error"]["code"] in ("unauthenticated", "forbidden") or want == 404, body
        assert state(f) == before, f"{name} by {role} changed the state"
    if want == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


def batch_of(world: World) -> list[dict]:
    c = world.checkout()  # buyer 1's
    return [co(key(), [(SKU, 1)], buyer=BUYER), pay(key(), c["checkout"], c["amount_fen"])]


@pytest.mark.parametrize("role,route_status,results", [
    ("none", 401, None),
    ("metrics", 403, None),
    ("operator", 200, [201, 200]),
    ("gateway", 200, [201, 200]),
    ("buyer", 200, [201, 200]),
    ("other_buyer", 200, [403, 404]),  # each command refused on its own
    ("merchant", 200, [403, 403]),
])
def test_a_batch_is_checked_command_by_command(served, role, route_status, results):
    f, world, url = served
    commands = batch_of(world)
    before = state(f)
    r = httpx.post(url + "/v1/batch", json={"commands": commands}, headers=headers_of(ROLES[role]), timeout=10)
    assert r.status_code == route_status, r.text[:300]
    if results is None:
        assert state(f) == before
        return
    got = r.json()["results"]
    assert [res["status"] for res in got] == results, got
    if results == [403, 404]:
        assert got[0]["body"]["error"]["message"] == f"a buyer token acts for buyer {OTHER_BUYER} only: buyer " \
                                                     f"{BUYER} is another's"
        assert got[1]["body"]["error"]["message"] == f"checkout {commands[1]['checkout']} does not exist"
        assert state(f) == before


def test_a_buyer_token_on_another_buyers_checkout_in_a_batch_refuses_that_command_alone(served):
    f, world, url = served
    mine, theirs = world.checkout(), one(f, co(key(), [(SKU, 1)], buyer=OTHER_BUYER))
    r = httpx.post(url + "/v1/batch", headers=headers_of(ROLES["buyer"]), timeout=10, json={"commands": [
        pay(key(), mine["checkout"], mine["amount_fen"]), pay(key(), theirs["checkout"], theirs["amount_fen"])]})
    statuses = [res["status"] for res in r.json()["results"]]
    assert statuses == [200, 404]
    assert f.checkout(mine["checkout"])["status"] == "paid"
    assert f.checkout(theirs["checkout"])["status"] == "reserved"


def bad(url: str, header: str | None) -> httpx.Response:
    headers = {} if header is None else {"authorization": header}
    return httpx.get(url + "/v1/ledger", headers=headers, timeout=10)


def test_bad_tokens_are_refused_with_401_and_say_why(served):
    _, _, url = served
    good = tokens.issue(KEY, Role.operator)
    assert bad(url, f"Bearer {good}").status_code == 200
    head, claims, signature = good.split(".")
    forged = f"{head}.{claims}.{signature[:-4]}AAAA"
    other_key = tokens.issue(bytes(32), Role.operator)
    expired = tokens.issue(KEY, Role.operator, ttl_s=60, now_s=time.time() - 3600)
    cases = {
        None: "no Authorization header",
        f"Bearer {forged}": "signature does not match",
        f"Bearer {other_key}": "not signed by this festival's key",
        f"Bearer {expired}": "expired",
        f"Token {good}": "must be 'Bearer <token>'",
        "Bearer": "must be 'Bearer <token>'",
        "Bearer not.a.jwt": "not a well-formed JWT",
    }
    for header, words in cases.items():
        r = bad(url, header)
        assert r.status_code == 401, (header, r.text)
        assert r.json()["error"]["code"] == "unauthenticated" and words in r.json()["error"]["message"], r.text
        assert r.headers["www-authenticate"] == 'Bearer realm="double11"'
    wrong_role = bad(url, f"Bearer {tokens.issue(KEY, Role.gateway)}")
    assert wrong_role.status_code == 403 and wrong_role.json()["error"]["code"] == "forbidden"


def test_a_token_cached_as_valid_is_refused_once_it_expires():
    verifier = Verifier([KEY])
    token = tokens.issue(KEY, Role.buyer, 5, ttl_s=2, now_s=time.time() - 1)
    assert verifier.principal(f"Bearer {token}") == Principal(Role.buyer, 5)
    time.sleep(1.1)
    with pytest.raises(Exception, match="expired"):
        verifier.principal(f"Bearer {token}")
