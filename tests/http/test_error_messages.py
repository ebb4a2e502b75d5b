"""Every refusal says what is wrong: its message names the field, the line
where there is one, and the bound (from double11.limits), and the same bad
command reads the same whichever way it came: a single request, a JSON batch,
a binary batch (where its fields fit the columns) and the Python API.  Over
the real HTTP server."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from model import T0, small_catalog

from double11 import Festival, limits
from double11.engine.batch import Channel, CommandBatch, Op
from double11.engine.encode import key_hash
from double11.engine.wire import decode_results, messages
from double11.errors import Result
from double11.statuses import HTTP_STATUS

BINARY = {"content-type": "application/x-double11-batch"}
ID_MAX = str(limits.id_max)
QTY = f"1..{limits.line_qty_max}"
RESTOCK_QTY = f"1..{limits.restock_qty_max}"
KEY = f"1..{limits.idempotency_key_chars_max} characters"
LINES = f"1..{limits.checkout_lines_max} lines"
TARGET_FIELD = {"checkout": "buyer", "pay": "checkout", "cancel": "checkout", "confirm": "order",
                "refund": "order", "restock": "sku"}
ROUTE = {"pay": "/v1/checkouts/{}/pay", "cancel": "/v1/checkouts/{}/cancel", "confirm": "/v1/orders/{}/confirm",
         "refund": "/v1/orders/{}/refund", "restock": "/v1/skus/{}/restock"}
ABSENT = object()


def checkout(key: str = "k", lines: Any = ((101, 1), (102, 2)), **over: Any) -> dict:
    """A checkout; lines as (sku, qty) pairs, or as they go in the JSON."""
    given = lines
    if type(lines) in (list, tuple):
        given = [{"sku": ln[0], "qty": ln[1]} if type(ln) is tuple else ln for ln in lines]
    cmd = {"op": "checkout", "buyer": 7, "country": "CN", "channel": "mobile", "lines": given,
           "idempotency_key": key}
    return _with(cmd, {**over, "lines": given})


def other(op: str, target: Any, key: str = "k", **over: Any) -> dict:
    cmd = {"op": op, TARGET_FIELD[op]: target, "idempotency_key": key}
    if op == "pay":
        cmd["amount_fen"] = 100
    if op == "restock":
        cmd["qty"] = 5
    return _with(cmd, over)


def _with(cmd: dict, over: dict) -> dict:
    for name, value in over.items():
        if value is ABSENT:
            cmd.pop(name, None)
        else:
            cmd[name] = value
    return cmd


def line(sku: Any = 101, qty: Any = 1) -> dict:
    out = {}
    if sku is not ABSENT:
        out["sku"] = sku
    if qty is not ABSENT:
        out["qty"] = qty
    return out


# (id, command, code, words the message must hold: the field, its line, the
# bound, what it got; paths: s = single request, j = JSON batch, b = binary)
SHAPE_CASES: list[tuple[str, Any, Result, list[str], str]] = [
    ("buyer missing", checkout(buyer=ABSENT), Result.invalid_request, ["buyer is missing", ID_MAX], "sj"),
    ("buyer zero", checkout(buyer=0), Result.invalid_request, ["buyer must be a positive integer", ID_MAX, "got 0"],
     "sjb"),
    ("buyer negative", checkout(buyer=-4), Result.invalid_request, ["buyer", ID_MAX, "got -4"], "sjb"),
    ("buyer a string", checkout(buyer="7"), Result.invalid_request, ["buyer", ID_MAX, "got '7'"], "sj"),
    ("buyer a float", checkout(buyer=7.5), Result.invalid_request, ["buyer", ID_MAX, "got 7.5"], "sj"),
    ("buyer a boolean", checkout(buyer=True), Result.invalid_request, ["buyer", ID_MAX, "got true"], "sj"),
    ("buyer over the bound", checkout(buyer=2**63), Result.invalid_request, ["buyer", ID_MAX, str(2**63)], "sj"),
    ("country missing", checkout(country=ABSENT), Result.invalid_country, ["country is missing", "ISO 3166"], "sj"),
    ("country unknown", checkout(country="XX"), Result.invalid_country, ["country", "ISO 3166", "got 'XX'"], "sjb"),
    ("country lower case", checkout(country="cn"), Result.invalid_country, ["country", "ISO 3166", "got 'cn'"],
     "sj"),
    ("country a number", checkout(country=86), Result.invalid_country, ["country", "ISO 3166", "got 86"], "sj"),
    ("channel unknown", checkout(channel="tv"), Result.invalid_channel, ["channel", "'mobile' or 'pc'", "got 'tv'"],
     "sj"),
    ("channel missing", checkout(channel=ABSENT), Result.invalid_channel, ["channel is missing", "'pc'"], "sj"),
    ("lines missing", checkout(lines=ABSENT), Result.invalid_request, ["lines is missing", LINES], "sj"),
    ("lines not a list", checkout(lines="101"), Result.invalid_request, ["lines", LINES, "got '101'"], "sj"),
    ("lines empty", checkout(lines=()), Result.empty_checkout, ["lines", LINES, "got 0"], "sjb"),
    ("too many lines", checkout(lines=[(101, 1)] * (limits.checkout_lines_max + 1)), Result.too_many_lines,
     ["lines", LINES, f"got {limits.checkout_lines_max + 1}"], "sjb"),
    ("a line not an object", checkout(lines=[line(), 5]), Result.invalid_request,
     ["lines[1]", "sku and qty", "got 5"], "sj"),
    ("line sku zero", checkout(lines=[(101, 1), (0, 1)]), Result.invalid_request, ["lines[1].sku", ID_MAX, "got 0"],
     "sjb"),
    ("line sku negative", checkout(lines=[(-3, 1)]), Result.invalid_request, ["lines[0].sku", ID_MAX, "got -3"],
     "sjb"),
    ("line sku missing", checkout(lines=[line(), line(sku=ABSENT)]), Result.invalid_request,
     ["lines[1].sku is missing", ID_MAX], "sj"),
    ("line sku a string", checkout(lines=[("101", 1)]), Result.invalid_request, ["lines[0].sku", ID_MAX, "'101'"],
     "sj"),
    ("line qty zero", checkout(lines=[(101, 1), (102, 0)]), Result.invalid_quantity,
     [f"lines[1].qty must be {QTY}, got 0"], "sjb"),
    ("line qty negative", checkout(lines=[(101, -2)]), Result.invalid_quantity, ["lines[0].qty", QTY, "got -2"],
     "sjb"),
    ("line qty over the bound", checkout(lines=[(101, 1), (102, 1), (103, limits.line_qty_max + 1)]),
     Result.invalid_quantity, ["lines[2].qty", QTY, f"got {limits.line_qty_max + 1}"], "sjb"),
    ("line qty missing", checkout(lines=[line(qty=ABSENT)]), Result.invalid_quantity,
     ["lines[0].qty is missing", QTY], "sj"),
    ("line qty a float", checkout(lines=[(101, 1.5)]), Result.invalid_quantity, ["lines[0].qty", QTY, "got 1.5"],
     "sj"),
    ("line qty a string", checkout(lines=[(101, "2")]), Result.invalid_quantity, ["lines[0].qty", QTY, "got '2'"],
     "sj"),
    ("the first bad line decides", checkout(lines=[(101, 0), (0, 1)]), Result.invalid_quantity,
     ["lines[0].qty", QTY], "sjb"),
    ("key missing", checkout(idempotency_key=ABSENT), Result.invalid_idempotency_key,
     [f"idempotency_key is missing ({KEY})"], "sjb"),
    ("key empty", checkout(idempotency_key=""), Result.invalid_idempotency_key,
     ["idempotency_key", KEY, "got 0 characters"], "sj"),
    ("key too long", checkout(idempotency_key="k" * (limits.idempotency_key_chars_max + 1)),
     Result.invalid_idempotency_key, ["idempotency_key", KEY, f"got {limits.idempotency_key_chars_max + 1}"], "sj"),
    ("key a number", checkout(idempotency_key=5), Result.invalid_idempotency_key, ["idempotency_key", KEY, "got 5"],
     "sj"),
    ("op unknown", checkout(op="fly"), Result.unknown_op, ["op must be one of", "restock", "got 'fly'"], "j"),
    ("op missing", checkout(op=ABSENT), Result.unknown_op, ["op is missing", "checkout, pay"], "j"),
    ("a command not an object", 5, Result.invalid_request, ["command must be a JSON object", "got 5"], "j"),
    ("pay checkout zero", other("pay", 0), Result.invalid_request, ["checkout must be", ID_MAX, "got 0"], "jb"),
    ("pay checkout a string", other("pay", "abc"), Result.invalid_request, ["checkout", ID_MAX, "got 'abc'"], "j"),
    ("pay checkout missing", other("pay", 1, checkout=ABSENT), Result.invalid_request,
     ["checkout is missing", ID_MAX], "j"),
    ("pay amount zero", other("pay", 1, amount_fen=0), Result.invalid_amount, ["amount_fen", ID_MAX, "got 0"], "sjb"),
    ("pay amount negative", other("pay", 1, amount_fen=-5), Result.invalid_amount, ["amount_fen", ID_MAX, "got -5"],
     "sjb"),
    ("pay amount missing", other("pay", 1, amount_fen=ABSENT), Result.invalid_amount,
     ["amount_fen is missing", ID_MAX], "sj"),
    ("pay amount a float", other("pay", 1, amount_fen=99.5), Result.invalid_amount,
     ["amount_fen", ID_MAX, "got 99.5"], "sj"),
    ("pay key missing", other("pay", 1, idempotency_key=ABSENT), Result.invalid_idempotency_key,
     ["idempotency_key is missing", KEY], "sjb"),
    ("cancel checkout negative", other("cancel", -3), Result.invalid_request, ["checkout", ID_MAX, "got -3"], "jb"),
    ("confirm order zero", other("confirm", 0), Result.invalid_request, ["order must be", ID_MAX, "got 0"], "jb"),
    ("refund order a string", other("refund", "x"), Result.invalid_request, ["order", ID_MAX, "got 'x'"], "j"),
    ("restock sku zero", other("restock", 0), Result.invalid_request, ["sku must be", ID_MAX, "got 0"], "jb"),
    ("restock qty zero", other("restock", 101, qty=0), Result.invalid_quantity,
     [f"qty must be {RESTOCK_QTY}, got 0"], "sjb"),
    ("restock qty over the bound", other("restock", 101, qty=limits.restock_qty_max + 1), Result.invalid_quantity,
     ["qty", RESTOCK_QTY, f"got {limits.restock_qty_max + 1}"], "sjb"),
    ("restock qty missing", other("restock", 101, qty=ABSENT), Result.invalid_quantity,
     ["qty is missing", RESTOCK_QTY], "sj"),
    ("restock qty a string", other("restock", 101, qty="5"), Result.invalid_quantity,
     ["qty", RESTOCK_QTY, "got '5'"], "sj"),
]


def binary_batch(commands: list[dict]) -> CommandBatch:
    """The commands as a gateway packs them: every field and line as given, no verdicts."""
    lines = [ln for c in commands for ln in c.get("lines", [])]

    def country(c: dict) -> int:
        alpha2 = c.get("country", "AA")
        return (ord(alpha2[0]) - 65) * 26 + ord(alpha2[1]) - 65  # a slot, known code or not

    def key(c: dict) -> int:
        return key_hash(c["idempotency_key"]) if "idempotency_key" in c else 0

    return CommandBatch(
        op=np.array([Op[c["op"]] for c in commands], dtype=np.uint8),
        invalid=np.zeros(len(commands), dtype=np.uint8),
        channel=np.array([Channel[c["channel"]] if "channel" in c else 0 for c in commands], dtype=np.uint8),
        lines=np.array([len(c.get("lines", [])) for c in commands], dtype=np.uint8),
        country=np.array([country(c) for c in commands], dtype=np.uint16),
        key=np.array([key(c) for c in commands], dtype=np.uint64),
        target=np.array([c[TARGET_FIELD[c["op"]]] for c in commands], dtype=np.int64),
        amount=np.array([c.get("amount_fen", c.get("qty", 0)) for c in commands], dtype=np.int64),
        sku=np.array([ln["sku"] for ln in lines], dtype=np.int64),
        qty=np.array([ln["qty"] for ln in lines], dtype=np.int32),
    )


def each_way(client: httpx.Client, cmd: Any, paths: str, key: str | None) -> dict[str, tuple[int, str, str]]:
    """(HTTP status, code, message) of the command sent each way of `paths`,
    under a key of its own each way (fresh commands, not retries), or its
    own key where `key` is None."""
    got: dict[str, tuple[int, str, str]] = {}

    def keyed(way: str) -> Any:
        own = cmd.get("idempotency_key") if type(cmd) is dict else None
        if key is None or type(own) is not str or not 0 < len(own) <= limits.idempotency_key_chars_max:
            return cmd  # its own key, a bad one above all
        return {**cmd, "idempotency_key": f"{key}-{way}"}

    if "j" in paths:
        r = client.post("/v1/batch", json={"commands": [keyed("j")]})
        if r.status_code == 200:  # of its declared shape, a value out of bounds: refused in its own result
            (result,) = r.json()["results"]
            got["j"] = (result["status"], result["body"]["error"]["code"], result["body"]["error"]["message"])
        else:  # not of its shape (a field missing or of another JSON type): the batch is refused whole
            error = r.json()["error"]
            assert error["message"].startswith("commands[0]: "), error
            got["j"] = (r.status_code, error["code"], error["message"].removeprefix("commands[0]: "))
    if "s" in paths:
        single = keyed("s")
        op = single["op"]
        in_path = "op" if op == "checkout" else TARGET_FIELD[op]  # a checkout's buyer goes in its body
        body = {name: value for name, value in single.items() if name not in ("op", in_path)}
        route = "/v1/checkouts" if op == "checkout" else ROUTE[op].format(single[TARGET_FIELD[op]])
        r = client.post(route, json=body)
        got["s"] = (r.status_code, r.json()["error"]["code"], r.json()["error"]["message"])
    if "b" in paths:
        batch = binary_batch([keyed("b")])
        r = client.post("/v1/batch", content=batch.to_bytes(), headers=BINARY)
        assert r.status_code == 200, r.text
        answer = decode_results(r.content)
        code = Result(int(answer["code"][0]))
        got["b"] = (HTTP_STATUS[code], code.name, messages(batch, answer)[0])
    return got


@pytest.mark.parametrize("name, cmd, code, words, paths", SHAPE_CASES, ids=[case[0] for case in SHAPE_CASES])
def test_a_malformed_command_is_told_its_field_line_and_bound(shared_client, name, cmd, code, words, paths):
    before = shared_client.get("/v1/skus/101").json()
    got = each_way(shared_client, cmd, paths, key=name.replace(" ", "-"))
    status, code_name, message = got["j" if "j" in paths else "s"]
    assert (status, code_name) == (HTTP_STATUS[code], code.name), message
    for word in words:
        assert word in message, (word, message)
    assert all(answer == (status, code_name, message) for answer in got.values()), got  # the same every way
    assert shared_client.get("/v1/skus/101").json() == before  # nothing changed


def test_the_python_api_words_a_malformed_command_as_http_does(shared_client):
    """In the same words; the Python API answers a command not of its JSON
    shape in its own result, where an HTTP batch is refused whole for it."""
    festival = Festival.open(small_catalog(), clock_start_ms=T0)
    cases = [cmd for _, cmd, _, _, paths in SHAPE_CASES if "j" in paths]
    answers = festival.execute(cases)
    refused_whole = 0
    for cmd, answer in zip(cases, answers):
        r = shared_client.post("/v1/batch", json={"commands": [cmd]})
        if r.status_code == 200:
            assert r.json()["results"] == [answer]
        else:
            error = r.json()["error"]
            assert (r.status_code, error["code"], error["message"]) == (
                answer["status"], answer["body"]["error"]["code"], "commands[0]: " + answer["body"]["error"]["message"])
            refused_whole += 1
    assert 0 < refused_whole < len(cases)  # both kinds were tried


@pytest.mark.parametrize("route, name", [("/v1/checkouts/abc/pay", "checkout"), ("/v1/orders/0/confirm", "order"),
                                         ("/v1/skus/-1/restock", "sku"), ("/v1/checkouts/1x", "checkout")])
def test_a_bad_path_id_names_the_id_its_bound_and_what_it_got(shared_client, route, name):
    is_action = route.count("/") == 4
    r = shared_client.post(route, json={"idempotency_key": "p"}) if is_action else shared_client.get(route)
    got = route.split("/")[3]
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert r.json()["error"]["message"] == (f"{name} id in the path must be a positive integer up to {ID_MAX}, "
                                            f"got '{got}'")


# ------------------------------------------------------------- the engine's refusals
def _setup(client: httpx.Client) -> dict[str, int]:
    """A reserved checkout, a paid one (one order settled, one refunded) and a cancelled one."""
    def post(route: str, body: dict, status: int = 200) -> dict:
        r = client.post(route, json=body)
        assert r.status_code == status, r.text
        return r.json()

    reserved = post("/v1/checkouts", {k: v for k, v in checkout("set-1").items() if k != "op"}, 201)
    paid = post("/v1/checkouts", {k: v for k, v in checkout("set-2", [(101, 1), (102, 1)]).items() if k != "op"}, 201)
    post(f"/v1/checkouts/{paid['checkout']}/pay", {"amount_fen": paid["amount_fen"], "idempotency_key": "set-3"})
    settled, refunded = (order["order"] for order in paid["orders"])
    post(f"/v1/orders/{settled}/confirm", {"idempotency_key": "set-4"})
    post(f"/v1/orders/{refunded}/refund", {"idempotency_key": "set-5"})
    cancelled = post("/v1/checkouts", {k: v for k, v in checkout("set-6", [(104, 1)]).items() if k != "op"}, 201)
    post(f"/v1/checkouts/{cancelled['checkout']}/cancel", {"idempotency_key": "set-7"})
    return {"reserved": reserved["checkout"], "total": reserved["amount_fen"],
            "reserved_order": reserved["orders"][0]["order"], "paid": paid["checkout"], "settled": settled,
            "refunded": refunded, "cancelled": cancelled["checkout"]}


def everything(client: httpx.Client, ids: dict[str, int]) -> list:
    """What a refusal must leave as it was: stock, checkouts, orders, the ledger."""
    views = [client.get(f"/v1/skus/{sku}").json() for sku in range(101, 107)]
    views += [client.get(f"/v1/checkouts/{ids[name]}").json() for name in ("reserved", "paid", "cancelled")]
    return views + [client.get("/v1/ledger").json()]


def state_cases(ids: dict[str, int]) -> list[tuple[str, dict, Result, list[str]]]:
    short_105 = int(small_catalog().sku_stock[4]) + 1  # sku 105: one unit
    return [
        ("out of stock", checkout(lines=[(102, 1), (106, 2)]), Result.out_of_stock,
         ["lines[1]", "sku 106 has 0 for sale, line asks 2"]),
        ("out of stock, one unit", checkout(lines=[(105, short_105)]), Result.out_of_stock,
         ["lines[0]", f"sku 105 has 1 for sale, line asks {short_105}"]),
        ("out of stock, a sku twice", checkout(lines=[(105, 1), (105, 1)]), Result.out_of_stock,
         ["lines[1]", "sku 105 has 0 for sale, line asks 1"]),
        ("unknown sku", checkout(lines=[(101, 1), (999, 1)]), Result.unknown_sku, ["lines[1].sku 999"]),
        ("unknown sku restocked", other("restock", 5), Result.unknown_sku, ["sku 5 is not in the catalog"]),
        ("amount mismatch", other("pay", ids["reserved"], amount_fen=ids["total"] + 1), Result.amount_mismatch,
         ["amount_fen", f"the total is {ids['total']}", f"got {ids['total'] + 1}", f"checkout {ids['reserved']}"]),
        ("unknown checkout", other("pay", 999, amount_fen=5), Result.unknown_checkout, ["checkout 999"]),
        ("unknown checkout cancelled", other("cancel", 998), Result.unknown_checkout, ["checkout 998"]),
        ("unknown order", other("refund", 997), Result.unknown_order, ["order 997"]),
        ("already paid", other("pay", ids["paid"], amount_fen=5), Result.already_paid, [f"checkout {ids['paid']}"]),
        ("cancelled", other("pay", ids["cancelled"], amount_fen=5), Result.cancelled,
         [f"checkout {ids['cancelled']}"]),
        ("not paid", other("confirm", ids["reserved_order"]), Result.not_paid, [f"order {ids['reserved_order']}"]),
        ("already settled", other("confirm", ids["settled"]), Result.already_settled, [f"order {ids['settled']}"]),
        ("already refunded", other("refund", ids["refunded"]), Result.already_refunded,
         [f"order {ids['refunded']}"]),
    ]


def test_the_engine_s_refusals_name_what_they_are_about_every_way(client):
    ids = _setup(client)
    before = everything(client, ids)
    for name, cmd, code, words in state_cases(ids):
        got = each_way(client, cmd, "sjb", key=name.replace(" ", "-"))
        status, code_name, message = got["j"]
        assert (status, code_name) == (HTTP_STATUS[code], code.name), (name, message)
        for word in words:
            assert word in message, (name, word, message)
        assert got["s"] == got["j"] == got["b"], (name, got)
    assert everything(client, ids) == before  # nothing changed


def test_a_retry_answers_the_first_message_even_after_the_stock_came_back(client):
    first = client.post("/v1/checkouts", json={k: v for k, v in checkout("oos", [(106, 2)]).items() if k != "op"})
    assert first.status_code == 409
    assert "sku 106 has 0 for sale, line asks 2" in first.json()["error"]["message"]
    r = client.post("/v1/skus/106/restock", json={"qty": 5, "idempotency_key": "rs"})
    assert r.status_code == 200, r.text
    again = client.post("/v1/batch", json={"commands": [checkout("oos", [(106, 2)])]}).json()["results"][0]
    assert (again["status"], again["body"]) == (409, first.json())  # its first answer, word for word
    assert client.get("/v1/skus/106").json()["stock"] == 5


def test_a_key_used_with_another_request_says_so(client):
    assert client.post("/v1/batch", json={"commands": [other("restock", 101, key="same")]}).status_code == 200
    got = each_way(client, other("restock", 102, key="same"), "j", key=None)
    assert got["j"][:2] == (409, "idempotency_key_reused") and "idempotency_key" in got["j"][2]


@pytest.mark.parametrize("snapshot", [False, True])
def test_after_a_restart_a_retry_still_answers_the_first_message(tmp_path, snapshot):
    """The words of out_of_stock live in the result the idempotency table
    keeps: a replay of the log (or a snapshot) gives them back."""
    refused, restock = checkout("oos", [(101, 1), (105, 2)]), other("restock", 105, key="rs")
    festival = Festival.open(small_catalog(), data_dir=tmp_path, clock_start_ms=T0)
    first = festival.execute([refused, restock], T0)
    assert "lines[1]: sku 105 has 1 for sale, line asks 2" in first[0]["body"]["error"]["message"]
    festival.close(snapshot=snapshot)
    again = Festival.open(data_dir=tmp_path)
    try:
        assert again.execute([refused], T0 + 1_000) == first[:1]
        assert again.sku(105)["stock"] == 6
    finally:
        again.close()
