"""The promotions' routes (docs/promotions.md) against a real server: the
operators' commands and grants with their answers and refusals, a checkout
spending coupons and paid its payable amount, the views, bad input, retries
and a binary batch of area commands.  Windows are set on the server's
festival clock (GET /v1/stats's `at`).

The small catalog: SKU 101 (merchant 30, 1999 fen), 102 (merchant 10, 100 fen),
104 (merchant 30, 350 fen), stock enough for these tests."""

from __future__ import annotations

import numpy as np
import pytest

from double11 import areas, limits
from double11.engine.batch import CommandBatch
from double11.engine.encode import key_hash
from double11.engine.wire import decode_results, messages
from double11.errors import Result

BINARY = {"content-type": "application/x-double11-batch"}
HOUR_MS = 3_600_000
T_MAX = limits.festival_time_ms_max


def now_ms(client) -> int:
    return client.get("/v1/stats").json()["at"]


def error(r, status: int, code: str) -> str:
    """The message of an error answer, once its status and code are as expected."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


def platform_template(at: int, key: str, **fields) -> dict:
    return {"kind": "platform", "discount_fen": 500, "min_spend_fen": 0, "budget_count": 2,
            "grant_from": at - HOUR_MS, "grant_until": at + HOUR_MS, "use_from": at - HOUR_MS,
            "use_until": at + 2 * HOUR_MS, "idempotency_key": key, **fields}


def grant(client, template: int, buyer: int, key: str, source: str = "game:catch-the-cat"):
    return client.post(f"/v1/coupon-templates/{template}/grants",
                       json={"buyer": buyer, "source": source, "idempotency_key": key})


# ----------------------------------------------------------- operators' commands
def test_each_operator_command_answers_201_with_its_view(client):
    at = now_ms(client)
    r = client.post("/v1/coupon-templates", json={
        "kind": "store", "merchant": 30, "discount_fen": 300, "min_spend_fen": 1000, "budget_count": 5,
        "grant_from": at - HOUR_MS, "grant_until": at + HOUR_MS, "use_from": at, "use_until": at + 2 * HOUR_MS,
        "idempotency_key": "t1"})
    template = {"template": 1, "kind": "store", "merchant": 30, "discount_fen": 300, "min_spend_fen": 1000,
                "budget_count": 5, "budget_fen": None, "per_buyer_max": 1, "grant_from": at - HOUR_MS,
                "grant_until": at + HOUR_MS, "use_from": at, "use_until": at + 2 * HOUR_MS, "granted": 0, "used": 0,
                "discount_given_fen": 0, "budget_count_left": 5, "budget_fen_left": None}
    assert (r.status_code, r.json()) == (201, template)
    assert client.get("/v1/coupon-templates/1").json() == template

    r = client.post("/v1/threshold-discounts", json={"every_fen": 20000, "off_fen": 2000, "merchants": [30, 10],
                                                     "from": at, "until": at + HOUR_MS, "idempotency_key": "h1"})
    threshold = {"threshold": 1, "every_fen": 20000, "off_fen": 2000, "merchants": [30, 10], "from": at,
                 "until": at + HOUR_MS}
    assert (r.status_code, r.json()) == (201, threshold)
    assert client.get("/v1/threshold-discounts/1").json() == threshold

    r = client.post("/v1/deals", json={"sku": 104, "price_fen": 300, "qty": 3, "per_buyer_max": 2, "from": at,
                                       "until": at + HOUR_MS, "kind": "livestream", "idempotency_key": "d1"})
    deal = {"deal": 1, "sku": 104, "kind": "livestream", "price_fen": 300, "qty": 3, "per_buyer_max": 2, "from": at,
            "until": at + HOUR_MS, "sold": 0, "reserved": 0, "left": 3, "sold_out_at": None}
    assert (r.status_code, r.json()) == (201, deal)
    assert client.get("/v1/deals/1").json() == deal

    # a deal on a SKU that already has one in a window meeting this one's
    r = client.post("/v1/deals", json={"sku": 104, "price_fen": 200, "qty": 1, "per_buyer_max": 1,
                                       "from": at + HOUR_MS - 1, "until": at + 2 * HOUR_MS, "kind": "flash",
                                       "idempotency_key": "d2"})
    assert error(r, 409, "window_overlaps") == "its window meets that of deal 1"
    r = client.post("/v1/coupon-templates", json={**platform_template(at, "t2"), "kind": "store", "merchant": 99})
    assert error(r, 404, "unknown_merchant") == "merchant 99 is not in the catalog"
    assert client.get("/v1/coupon-templates/2").status_code == 404  # a refused command takes no id


def test_grants_and_their_refusals(client):
    at = now_ms(client)
    assert client.post("/v1/coupon-templates", json=platform_template(at, "t1")).status_code == 201

    r = grant(client, 1, 7, "g1")
    coupon = {"coupon": 1, "template": 1, "kind": "platform", "merchant": None, "buyer": 7,
              "source": "game:catch-the-cat", "status": "held", "discount_fen": 500, "min_spend_fen": 0,
              "use_from": at - HOUR_MS, "use_until": at + 2 * HOUR_MS, "granted_at": r.json().get("granted_at"),
              "checkout": None}
    assert (r.status_code, r.json()) == (201, coupon)
    assert at <= coupon["granted_at"] <= now_ms(client)
    assert client.get("/v1/coupons/1").json() == coupon

    message = error(grant(client, 1, 7, "g2"), 409, "buyer_limit_reached")
    assert message == "buyer 7 already holds per_buyer_max coupons of template 1"
    assert grant(client, 1, 8, "g3").status_code == 201
    assert error(grant(client, 1, 9, "g4"), 409, "budget_exhausted") == "template 1 has granted all its budget allows"
    assert error(grant(client, 2, 9, "g5"), 404, "unknown_template") == "template 2 does not exist"

    # a template whose grants open in an hour
    later = platform_template(at, "t2", grant_from=at + HOUR_MS, grant_until=at + 2 * HOUR_MS)
    assert client.post("/v1/coupon-templates", json=later).status_code == 201
    message = error(grant(client, 2, 9, "g6"), 409, "not_in_window")
    assert "template 2" in message and "grant_from" in message

    assert client.get("/v1/buyers/7/coupons").json() == {"buyer": 7, "coupons": [coupon]}
    assert client.get("/v1/buyers/5/coupons").json() == {"buyer": 5, "coupons": []}
    assert client.get("/v1/coupon-templates/1").json()["budget_count_left"] == 0
    assert client.get("/v1/stats").json()["promotions"]["coupons_granted"] == 2


# -------------------------------------------------------------------- checkout
def test_a_checkout_spends_coupons_and_is_paid_its_payable_amount(client):
    at = now_ms(client)
    assert client.post("/v1/coupon-templates", json=platform_template(at, "t1")).status_code == 201
    store = platform_template(at, "t2", kind="store", merchant=30, discount_fen=300, min_spend_fen=1000)
    assert client.post("/v1/coupon-templates", json=store).status_code == 201
    assert grant(client, 1, 7, "g1").status_code == 201  # coupon 1: platform, 500 off
    assert grant(client, 2, 7, "g2").status_code == 201  # coupon 2: merchant 30's, 300 off 1000

    checkout = {"buyer": 7, "country": "CN", "channel": "mobile", "lines": [{"sku": 101, "qty": 1},
                                                                          {"sku": 102, "qty": 3}]}
    r = client.post("/v1/checkouts", json={**checkout, "coupons": [1, 1], "idempotency_key": "c0"})
    assert error(r, 400, "invalid_request") == "coupons[1] repeats coupon 1"

    r = client.post("/v1/checkouts", json={**checkout, "coupons": [1, 2], "idempotency_key": "c1"})
    assert r.status_code == 201, r.text
    # list 1999 + 300; merchant 30's coupon takes 300 off its 1999; the red packet
    # 500 off the 1999 left, pro rata to the lines' amounts in order of their orders:
    # merchant 10's 300 takes 500 * 300 // 1999 = 75, merchant 30's the rest, 425
    body = r.json()
    assert body == {
        "checkout": 1, "amount_fen": 1499, "status": "reserved", "expires_at": body["expires_at"],
        "orders": [
            {"order": 1, "merchant": 10, "amount_fen": 225, "list_fen": 300,
             "discounts": {"deal": 0, "store_coupon": 0, "threshold": 0, "platform_coupon": 75}},
            {"order": 2, "merchant": 30, "amount_fen": 1274, "list_fen": 1999,
             "discounts": {"deal": 0, "store_coupon": 300, "threshold": 0, "platform_coupon": 425}}],
        "list_fen": 2299, "discounts": {"deal": 0, "store_coupon": 300, "threshold": 0, "platform_coupon": 500}}
    assert client.get("/v1/coupons/1").json()["status"] == "reserved"

    message = error(client.post("/v1/checkouts/1/pay", json={"amount_fen": 2299, "idempotency_key": "p0"}),
                    409, "amount_mismatch")
    assert message == "amount_fen must equal the total of checkout 1: the total is 1499, got 2299"
    r = client.post("/v1/checkouts/1/pay", json={"amount_fen": 1499, "idempotency_key": "p1"})
    assert (r.status_code, r.json()) == (200, {"checkout": 1, "status": "paid", "amount_fen": 1499})
    assert client.get("/v1/coupons/1").json()["status"] == "used"
    assert client.get("/v1/coupons/2").json()["checkout"] == 1
    view = client.get("/v1/checkouts/1").json()
    assert (view["amount_fen"], view["list_fen"]) == (1499, 2299)
    ledger = client.get("/v1/ledger").json()
    assert ledger["accounts"]["marketing"] == -500 and ledger["sum"] == 0
    assert client.get("/v1/stats").json()["promotions"]["discounts_fen"] == body["discounts"]

    # a coupon used is not held any more
    r = client.post("/v1/checkouts", json={**checkout, "coupons": [1], "idempotency_key": "c2"})
    assert error(r, 409, "coupon_not_held").startswith("coupon 1: ")


# --------------------------------------------------------------------- views
@pytest.mark.parametrize("path, status, code", [
    ("/v1/coupon-templates/1", 404, "unknown_template"),
    ("/v1/coupons/1", 404, "unknown_coupon"),
    ("/v1/deals/1", 404, "unknown_deal"),
    ("/v1/threshold-discounts/1", 404, "not_found"),
    ("/v1/coupon-templates/x", 400, "invalid_request"),
    ("/v1/coupons/0", 400, "invalid_request"),
    ("/v1/buyers/-7/coupons", 400, "invalid_request"),
    ("/v1/deals/99999999999999999999", 400, "invalid_request"),
    ("/v1/threshold-discounts/1.5", 400, "invalid_request"),
])
def test_a_view_of_nothing_is_404_and_a_bad_id_400(shared_client, path, status, code):
    message = error(shared_client.get(path), status, code)
    if status == 400:  # names the path's id and its bound
        assert "id in the path must be a positive integer" in message


def test_a_grant_whose_template_id_is_not_a_number_is_400(shared_client):
    r = shared_client.post("/v1/coupon-templates/abc/grants", json={"buyer": 7, "source": "x",
                                                                    "idempotency_key": "g"})
    assert error(r, 400, "invalid_request") == ("template id in the path must be a positive integer up to "
                                                f"{limits.id_max}, got 'abc'")


# ----------------------------------------------------------------- bad input
_AT = 1_510_329_600_000


@pytest.mark.parametrize("route, body, status_code, message", [
    ("/v1/coupon-templates", platform_template(_AT, "b1", discount_fen=0), "invalid_template",
     "discount_fen must be 1..1000000000000, got 0"),
    ("/v1/coupon-templates", platform_template(_AT, "b2", per_buyer_max=1001), "invalid_template",
     "per_buyer_max must be 1..1000, got 1001"),
    ("/v1/coupon-templates", platform_template(_AT, "b3", use_until=T_MAX + 1), "invalid_template",
     f"use_until must be 0..{T_MAX}, got {T_MAX + 1}"),
    ("/v1/coupon-templates", platform_template(_AT, "b4", kind="store"), "invalid_template",
     "merchant is missing: a store coupon names its merchant"),
    ("/v1/coupon-templates", platform_template(_AT, "b5", budget_fen=499), "invalid_template",
     "budget_fen must be 0 or at least discount_fen (500), got 499"),
    ("/v1/coupon-templates", platform_template(_AT, "b6", use_from=_AT + 5, use_until=_AT + 5), "invalid_template",
     f"use_from must be before use_until, got {_AT + 5} and {_AT + 5}"),
    ("/v1/threshold-discounts", {"every_fen": 1000, "off_fen": 1000, "from": _AT, "until": _AT + 1,
                                 "idempotency_key": "b7"}, "invalid_threshold",
     "off_fen must be less than every_fen (1000), got 1000"),
    ("/v1/threshold-discounts", {"every_fen": 1000, "off_fen": 10, "merchants": [10, 0], "from": _AT,
                                 "until": _AT + 1, "idempotency_key": "b8"}, "invalid_threshold",
     f"merchants[1] must be a positive integer up to {limits.id_max}, got 0"),
    ("/v1/threshold-discounts", {"every_fen": 1000, "off_fen": 10, "merchants": [10, 10], "from": _AT,
                                 "until": _AT + 1, "idempotency_key": "b9"}, "invalid_threshold",
     "merchants[1] repeats merchant 10"),
    ("/v1/deals", {"sku": 101, "price_fen": 100, "qty": 1, "per_buyer_max": 1, "from": _AT, "until": _AT + 1,
                   "kind": "mega", "idempotency_key": "b10"}, "invalid_deal",
     "kind must be 'flash' or 'group_buy' or 'livestream', got 'mega'"),
    ("/v1/deals", {"sku": 101, "price_fen": 100, "per_buyer_max": 1, "from": _AT, "until": _AT + 1,
                   "kind": "flash", "idempotency_key": "b11"}, "invalid_deal",
     f"qty is missing (0..{limits.deal_qty_max})"),
    ("/v1/coupon-templates/1/grants", {"buyer": 7, "source": "", "idempotency_key": "b12"}, "invalid_request",
     "source must be 1..32 printable ASCII characters, got ''"),
    ("/v1/coupon-templates/1/grants", {"buyer": 7, "source": "s" * 33, "idempotency_key": "b13"},
     "invalid_request", f"source must be 1..32 printable ASCII characters, got '{'s' * 33}'"),
    ("/v1/coupon-templates/1/grants", {"buyer": "7", "source": "game", "idempotency_key": "b14"},
     "invalid_request", f"buyer must be a positive integer up to {limits.id_max}, got '7'"),
])
def test_bad_input_is_400_naming_the_field_and_its_bound_and_changes_nothing(client, route, body, status_code,
                                                                             message):
    assert error(client.post(route, json=body), 400, status_code) == message
    # refused at the edge, it is not remembered: the same key with a good body is applied
    at = now_ms(client)
    good = platform_template(at, body["idempotency_key"])
    assert client.post("/v1/coupon-templates", json=good).json()["template"] == 1
    assert client.get("/v1/coupon-templates/2").status_code == 404


# ------------------------------------------------------------------- retries
def test_a_retry_is_answered_as_its_first_try(client):
    at = now_ms(client)
    template = platform_template(at, "t1", budget_count=1)
    first = client.post("/v1/coupon-templates", json=template)
    assert first.status_code == 201
    assert client.post("/v1/coupon-templates", json=template).json() == first.json()
    granted = grant(client, 1, 7, "g1")
    refused = grant(client, 1, 8, "g2")
    assert refused.status_code == 409
    for again, then in ((grant(client, 1, 7, "g1"), granted), (grant(client, 1, 8, "g2"), refused)):
        assert (again.status_code, again.json()) == (then.status_code, then.json())
    assert client.get("/v1/coupon-templates/1").json()["granted"] == 1
    assert client.get("/v1/coupon-templates/2").status_code == 404
    # the same key with another body
    r = client.post("/v1/coupon-templates", json={**template, "discount_fen": 600})
    error(r, 409, "idempotency_key_reused")


# -------------------------------------------------------------- binary batch
def _words(text: str, words: int) -> list[int]:
    """A string field as a batch's args hold it: its bytes, zero-padded, in little-endian int64 words."""
    raw = text.encode("ascii").ljust(8 * words, b"\0")
    return [int.from_bytes(raw[8 * w: 8 * w + 8], "little", signed=True) for w in range(words)]


def _area_batch(commands: list[tuple[str, str, int, dict]]) -> bytes:
    """(op, key, target, fields) per command, laid out as the declarations say (`Command.arg_fields`)."""
    ops, keys, targets, counts, arg = [], [], [], [], []
    for op, key, target, fields in commands:
        command = areas.BY_OP[op]
        args: list[int] = []
        for field in command.arg_fields:
            value = fields[field.name]
            if field.kind == "choice":
                args.append(field.choices.index(value))
            elif field.kind == "string":
                args += _words(value, field.arg_words)
            elif field.kind == "list":
                args += [len(value), *value]
            else:
                args.append(value)
        ops.append(command.number)
        keys.append(key_hash(key))
        targets.append(target)
        counts.append(len(args))
        arg += args
    n = len(ops)
    zeros = np.zeros(n, dtype=np.uint8)
    batch = CommandBatch(op=np.array(ops, dtype=np.uint8), invalid=zeros.copy(), channel=zeros.copy(),
                         lines=zeros.copy(), country=np.zeros(n, dtype=np.uint16), key=np.array(keys, dtype=np.uint64),
                         target=np.array(targets, dtype=np.int64), amount=np.zeros(n, dtype=np.int64),
                         sku=np.zeros(0, dtype=np.int64), qty=np.zeros(0, dtype=np.int32),
                         args=np.array(counts, dtype=np.uint8), arg=np.array(arg, dtype=np.int64))
    return batch.to_bytes()


def test_a_binary_batch_holds_area_commands(client):
    at = now_ms(client)
    template = {"kind": "platform", "merchant": 0, "discount_fen": 500, "min_spend_fen": 0, "budget_count": 10,
                "budget_fen": 0, "per_buyer_max": 1, "grant_from": at - HOUR_MS, "grant_until": at + HOUR_MS,
                "use_from": at - HOUR_MS, "use_until": at + HOUR_MS}
    body = _area_batch([
        ("coupon_template", "bt1", 0, template),
        ("grant", "bg1", 1, {"buyer": 7, "source": "game:ar"}),
        ("coupon_template", "bt2", 0, {**template, "discount_fen": 0}),
        ("threshold_discount", "bh1", 0, {"every_fen": 1000, "off_fen": 100, "merchants": [10, 30], "from": at,
                                          "until": at + HOUR_MS}),
        ("grant", "bg2", 1, {"buyer": 7, "source": "game:ar"}),
    ])
    r = client.post("/v1/batch", content=body, headers=BINARY)
    assert r.status_code == 200 and r.headers["content-type"] == BINARY["content-type"]
    answer = decode_results(r.content)
    assert [Result(int(c)).name for c in answer["code"]] == ["ok", "ok", "invalid_template", "ok",
                                                               "buyer_limit_reached"]
    assert [int(x) for x in answer["ref"][[0, 1, 3]]] == [1, 1, 1]  # template 1, coupon 1, threshold 1
    words = messages(CommandBatch.from_bytes(body), answer)
    assert words[2] == "discount_fen must be 1..1000000000000, got 0"
    assert words[4] == "buyer 7 already holds per_buyer_max coupons of template 1"
    assert client.get("/v1/coupons/1").json()["source"] == "game:ar"
    assert client.get("/v1/threshold-discounts/1").json()["merchants"] == [10, 30]
    assert client.get("/v1/coupon-templates/2").status_code == 404
