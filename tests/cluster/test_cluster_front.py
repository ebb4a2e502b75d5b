"""The HTTP front on a cluster (double11/cluster/front_link.py), as a user
runs it: `double11 cluster up` (3 NATS nodes, 2 units with standbys, the
front; no rebalancer, so that each unit's quotas stay as split and every
answer is the one festival's), then HTTP with tokens.  Commands of buyers of both units, their ids
carrying the unit, retries, batches across units answered in order; views,
the ledger and /v1/stats equal to one festival fed the same commands; bad
input answered as on one machine; the big screen; a unit's primary killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cluster_processes import gone  # tests/cluster/cluster_processes.py
from model import T0, co, small_catalog

from double11 import limits
from double11.access.roles import Principal, Role
from double11.access.tokens import issue_in
from double11.catalog.files import save_catalog
from double11.cluster.slots import SlotMap, global_ids, load_slot_map, unit_of_id
from double11.engine.batch import Op
from double11.engine.encode import encode_commands
from double11.engine.wire import decode_results
from double11.errors import Double11Error
from double11.link.frames import View
from double11.link.local import LocalFestival
from double11.service import refusal
from double11.service.festival import Festival
from double11.statuses import STATUS_OF_CODE

pytestmark = pytest.mark.slow  # starts a supervisor, NATS servers, engine processes and the front

ROOT = Path(__file__).resolve().parents[2]
_UP_S = 400  # `up`: the nodes' start (kernels compiled first after an engine edit) on a loaded machine
_FIGURES_S = 30  # a bound on the units' figures reaching the front, not a speed
CATALOG = small_catalog(stock={sku: 10**6 for sku in (101, 102, 103, 104, 105)})
STRAY = int(global_ids(7, np.array(1)))  # an id naming a unit the cluster does not have
FESTIVAL_START_MS = T0 - 10 * 3_600_000  # model.T0 is 10:00 on the festival's day
BINARY = {"content-type": "application/x-double11-batch"}
# /v1/stats's figures that do not depend on when each command came (the units keep their own clocks)
TIMELESS = ("festival_start", "gmv_fen", "gmv_usd_cents", "cny_per_usd", "checkouts", "orders", "payments",
            "mobile_gmv_fen", "mobile_share", "scale", "merchant_clubs", "top_brands", "top_merchants", "countries",
            "top_countries", "buyers", "new_buyers", "refunded_fen", "settled_fen", "promotions")


def _double11(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "double11", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _status(data: Path) -> dict[str, Any]:
    status = _double11("cluster", "status", "--data", str(data), "--json")
    assert status.returncode == 0, status.stderr
    return dict(json.loads(status.stdout))


@dataclass
class Front:
    data: Path
    url: str
    slot_map: SlotMap
    http: httpx.Client

    def auth(self, role: Role = Role.gateway, id_: int = 0) -> dict[str, str]:
        return {"authorization": f"Bearer {issue_in(self.data, role, id_)}"}

    def post(self, path: str, body: Any, role: Role = Role.gateway, id_: int = 0,
             headers: dict[str, str] | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(self.url + path, content=content, headers={**self.auth(role, id_), **(headers or {})})

    def get(self, path: str, role: Role = Role.operator, id_: int = 0) -> httpx.Response:
        return self.http.get(self.url + path, headers=self.auth(role, id_))

    def buyers(self, unit: int, count: int) -> list[int]:
        """`count` buyers the unit serves."""
        candidates = np.arange(1, 10_000)
        return candidates[self.slot_map.unit_of_buyer(candidates) == unit][:count].tolist()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    base = tmp_path_factory.mktemp("front")
    save_catalog(CATALOG, base / "catalog")
    data = base / "cluster"
    with socket.socket() as s:  # a free port for the front
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = _double11("cluster", "up", "--data", str(data), "--catalog", str(base / "catalog"), "--clock-start",
                   str(T0), "--front-port", str(port), "--no-rebalancer", timeout_s=_UP_S)
    assert up.returncode == 0, up.stderr + (data / "supervisor.log").read_text()
    assert f"HTTP: http://127.0.0.1:{port}/" in up.stdout
    pids = [proc["pid"] for proc in _status(data)["processes"]]
    try:
        with httpx.Client(timeout=limits.front_unit_wait_s_max * 4) as http:
            yield Front(data, f"http://127.0.0.1:{port}", load_slot_map(_status(data)["urls"]), http)
    finally:
        down = _double11("cluster", "down", "--data", str(data), timeout_s=180)
    assert down.returncode == 0, down.stderr
    assert "front (pid" in down.stdout
    assert all(gone(pid) for pid in pids)


class Mirror:
    """One festival fed the commands the cluster took, in the ids it gave them."""

    def __init__(self) -> None:
        self.festival = Festival.open(CATALOG, clock_start_ms=T0)
        self.ids: dict[tuple[str, int], int] = {}  # ("checkout" or "order", the cluster's id) -> the mirror's
        self.now_ms = T0

    def take(self, command: dict[str, Any], answer: dict[str, Any]) -> None:
        """`command` in the cluster's ids and the cluster's answer to it (which must match the mirror's)."""
        self.now_ms += 1
        field = {"pay": "checkout", "cancel": "checkout", "confirm": "order", "refund": "order"}.get(command["op"])
        sent = {**command, field: self.ids[field, command[field]]} if field else command
        mine = self.festival.execute([sent], now_ms=self.now_ms)[0]
        assert mine["status"] == answer["status"], (mine, answer)
        if command["op"] == "checkout" and answer["status"] == 201:
            self.ids["checkout", answer["body"]["checkout"]] = mine["body"]["checkout"]
            for theirs, ours in zip(answer["body"]["orders"], mine["body"]["orders"], strict=True):
                self.ids["order", theirs["order"]] = ours["order"]


def _single(front: Front, mirror: Mirror, command: dict[str, Any], role: Role = Role.gateway,
            id_: int = 0) -> httpx.Response:
    """A command as a single request (its route from its op), mirrored."""
    routes = {"checkout": ("/v1/checkouts", ""), "pay": ("/v1/checkouts/{}/pay", "checkout"),
              "confirm": ("/v1/orders/{}/confirm", "order"), "refund": ("/v1/orders/{}/refund", "order"),
              "restock": ("/v1/skus/{}/restock", "sku")}
    path, field = routes[command["op"]]
    body = {k: v for k, v in command.items() if k not in ("op", field)}
    answer = front.post(path.format(command.get(field, "")), body, role, id_)
    if answer.status_code < 400:
        mirror.take(command, {"status": answer.status_code, "body": answer.json()})
    return answer


def _wait_for_figures(front: Front, reference: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + _FIGURES_S
    while True:
        stats = front.http.get(front.url + "/v1/stats").json()
        keys = ("checkouts", "payments", "settled_fen", "refunded_fen")
        if [stats[k] for k in keys] == [reference[k] for k in keys] or time.monotonic() > deadline:
            return dict(stats)
        time.sleep(0.2)


def test_trades_of_both_units_read_as_one_festival(front: Front) -> None:
    mirror = Mirror()
    (b0, b0_other), (b1, b1_other) = front.buyers(0, 2), front.buyers(1, 2)

    # single requests: each checkout made by its buyer's unit, its ids carrying the unit
    made = {}
    for unit, buyer in ((0, b0), (1, b1)):
        answer = _single(front, mirror, co(f"one-{buyer}", [(102, 1), (104, 2)], buyer=buyer))
        assert answer.status_code == 201, answer.text
        made[unit] = answer.json()
        ids = [made[unit]["checkout"]] + [order["order"] for order in made[unit]["orders"]]
        assert unit_of_id(np.array(ids)).tolist() == [unit] * 3
        again = front.post("/v1/checkouts", {k: v for k, v in co(f"one-{buyer}", [(102, 1), (104, 2)],
                                                                  buyer=buyer).items() if k != "op"})
        assert again.content == answer.content  # a retry answers the first result
    paid = _single(front, mirror, {"op": "pay", "idempotency_key": "pay-1", "checkout": made[1]["checkout"],
                                   "amount_fen": made[1]["amount_fen"]})
    assert paid.status_code == 200 and paid.json()["checkout"] == made[1]["checkout"]
    again = front.post(f"/v1/checkouts/{made[1]['checkout']}/pay",
                       {"idempotency_key": "pay-1", "amount_fen": made[1]["amount_fen"]})
    assert again.content == paid.content

    # a buyer's token: its own things only, as on one machine (the unit checks whose thing it is)
    mine = _single(front, mirror, co("own-b1", [(103, 1)], buyer=b1), Role.buyer, b1)
    assert mine.status_code == 201
    wrong = front.post(f"/v1/checkouts/{mine.json()['checkout']}/pay", {"idempotency_key": "pay-b1", "amount_fen": 1},
                       Role.buyer, b1)
    assert wrong.status_code == 409  # its words name the checkout as the cluster does
    assert f"the total of checkout {mine.json()['checkout']}:" in wrong.json()["error"]["message"]
    other = front.post(f"/v1/checkouts/{mine.json()['checkout']}/pay",
                       {"idempotency_key": "not-mine", "amount_fen": mine.json()["amount_fen"]}, Role.buyer, b1_other)
    assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_checkout"
    assert front.get(f"/v1/checkouts/{mine.json()['checkout']}", Role.buyer, b1_other).status_code == 404
    assert front.get(f"/v1/checkouts/{mine.json()['checkout']}", Role.buyer, b1).status_code == 200
    for_another = front.post("/v1/checkouts", {k: v for k, v in co("b0-as-b1", [(103, 1)], buyer=b0).items()
                                                if k != "op"}, Role.buyer, b1)
    assert for_another.status_code == 403

    # the views of a unit's checkout and order, in the cluster's ids
    view = front.get(f"/v1/checkouts/{made[1]['checkout']}").json()
    assert view["checkout"] == made[1]["checkout"] and view["status"] == "paid"
    assert [o["order"] for o in view["orders"]] == [o["order"] for o in made[1]["orders"]]
    assert {line["order"] for line in view["lines"]} == {o["order"] for o in made[1]["orders"]}
    order = front.get(f"/v1/orders/{made[1]['orders'][0]['order']}").json()
    assert (order["order"], order["checkout"], order["status"]) == (made[1]["orders"][0]["order"],
                                                                    made[1]["checkout"], "paid")

    # a binary batch across units: answered in its order, in the cluster's ids; sent again: the same
    buyers = [b0, b1, b1_other, b0_other]
    commands = [co(f"bin-{k}", [(101, 1)], buyer=b, channel="pc") for k, b in enumerate(buyers)]
    body = encode_commands(commands).to_bytes()
    binary = front.post("/v1/batch", body, headers=BINARY)
    assert binary.status_code == 200 and binary.headers["content-type"] == "application/x-double11-batch"
    got = decode_results(binary.content)
    assert got["code"].tolist() == [0] * 4 and unit_of_id(got["ref"]).tolist() == [0, 1, 1, 0]
    assert front.post("/v1/batch", body, headers=BINARY).content == \
        binary.content
    for command, ref, amount in zip(commands, got["ref"].tolist(), got["amount_fen"].tolist(), strict=True):
        created = front.get(f"/v1/checkouts/{ref}").json()
        mirror.take(command, {"status": 201, "body": {"checkout": ref, "orders": created["orders"]}})
        assert created["amount_fen"] == amount

    # a JSON batch across units: split by unit, answered in its order; what a cluster does not serve: 501
    json_commands = [co("json-0", [(105, 1)], buyer=b1_other),
                     {"op": "pay", "idempotency_key": "json-1", "checkout": int(got["ref"][1]),
                      "amount_fen": int(got["amount_fen"][1])},
                     {"op": "pay", "idempotency_key": "json-2", "checkout": int(got["ref"][0]),
                      "amount_fen": int(got["amount_fen"][0])},
                     {"op": "confirm", "idempotency_key": "json-3", "order": made[1]["orders"][0]["order"]},
                     {"op": "refund", "idempotency_key": "json-4", "order": made[1]["orders"][1]["order"]},
                     {"op": "release", "idempotency_key": "json-5", "sku": 101, "qty": 1},
                     co("json-6", [(102, 3)], buyer=b0)]
    results = front.post("/v1/batch", {"commands": json_commands}).json()["results"]
    assert [r["status"] for r in results] == [201, 200, 200, 200, 200, 501, 201]
    said = results[5]["body"]["error"]
    assert said["code"] == "not_on_cluster" and "release" in said["message"]
    assert [int(unit_of_id(np.array(results[k]["body"]["checkout"]))) for k in (0, 1, 2, 6)] == [1, 1, 0, 0]
    assert results[3]["body"]["order"] == made[1]["orders"][0]["order"]
    for command, result in zip(json_commands, results, strict=True):
        if result["status"] < 400:
            mirror.take(command, result)

    # a restock goes to the SKU's home unit; a SKU's view adds up the units' quotas
    assert _single(front, mirror, {"op": "restock", "idempotency_key": "re-1", "sku": 103, "qty": 5},
                   Role.operator).status_code == 200
    for sku in (101, 102, 103, 104, 105, 106):
        assert front.get(f"/v1/skus/{sku}").json() == mirror.festival.sku(sku)
    page = front.get("/v1/skus?limit=4").json()
    assert page["skus"] == [mirror.festival.sku(s) for s in (101, 102, 103, 104)] and page["next_after"] == 104
    assert front.get("/v1/ledger").json() == mirror.festival.ledger()

    # /v1/stats: the units' figures summed, as the one festival shows them
    reference = mirror.festival.stats()
    stats = _wait_for_figures(front, reference)
    assert {k: stats[k] for k in TIMELESS} == {k: reference[k] for k in TIMELESS}
    assert stats["payments"] == 3 and stats["settled_fen"] > 0 and stats["refunded_fen"] > 0


async def _stopped(festival: Festival) -> None:
    festival.group_commit.stop()
    await asyncio.sleep(0)  # the committer's cancellation runs


def _answer(loop: asyncio.AbstractEventLoop, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """One machine's answer, as its engine process sends it to its front (a refusal raised: its answer)."""
    async def answered() -> Any:
        try:
            return await call(*args)
        except Double11Error as exc:
            return refusal(exc)

    return loop.run_until_complete(answered())


def test_bad_input_is_answered_as_on_one_machine(front: Front) -> None:
    festival, loop = Festival.open(CATALOG, clock_start_ms=T0), asyncio.new_event_loop()
    one = LocalFestival(festival)  # one machine's engine, as its front calls it
    gateway, operator = Principal(Role.gateway, 0), Principal(Role.operator, 0)
    try:
        checkout = {"buyer": 7, "country": "CN", "channel": "mobile", "lines": [{"sku": 102, "qty": 1}]}
        singles = [  # (op, path id, body, principal)
            (Op.checkout, 0, b"{", gateway),
            (Op.checkout, 0, json.dumps(checkout).encode(), gateway),  # no idempotency_key
            (Op.checkout, 0, json.dumps({**checkout, "buyer": "seven", "idempotency_key": "b1"}).encode(), gateway),
            (Op.checkout, 0, json.dumps({**checkout, "lines": [{"sku": 102, "qty": 0}],
                                         "idempotency_key": "b2"}).encode(), gateway),
            (Op.checkout, 0, json.dumps({**checkout, "lines": [{"sku": 999, "qty": 1}],
                                         "idempotency_key": "b3"}).encode(), gateway),
            (Op.pay, STRAY, b'{"amount_fen": 100, "idempotency_key": "b4"}', gateway),
            (Op.pay, 5, b'{"amount_fen": -1, "idempotency_key": "b5"}', gateway),
            (Op.refund, STRAY, b'{"idempotency_key": "b6"}', gateway),
            (Op.restock, 999, b'{"qty": 1, "idempotency_key": "b7"}', operator),
            (Op.restock, 102, b'{"qty": 0, "idempotency_key": "b8"}', operator),
        ]
        paths = {Op.checkout: "/v1/checkouts", Op.pay: "/v1/checkouts/{}/pay", Op.refund: "/v1/orders/{}/refund",
                 Op.restock: "/v1/skus/{}/restock"}
        for op, target, body, principal in singles:
            code, expected = _answer(loop, one.single, op, target, body, principal)
            got = front.post(paths[op].format(target), body, principal.role)
            assert (got.status_code, got.content) == (STATUS_OF_CODE[code], expected), (op, body)
            assert STATUS_OF_CODE[code] >= 400

        misshapen = json.dumps({"commands": [co("m1", [(102, 1)]), {"op": "pay", "idempotency_key": "m2"}]}).encode()
        for body, binary, headers in ((misshapen, False, {}), (b'{"commands": 3}', False, {}),
                                      (b"not a batch", True, BINARY)):
            code, expected, _ = _answer(loop, one.batch, body, binary, gateway)
            got = front.post("/v1/batch", body, headers=headers)
            assert (got.status_code, got.content) == (STATUS_OF_CODE[code], expected)
        for which, id_, path in ((View.CHECKOUT, STRAY, f"/v1/checkouts/{STRAY}"), (View.SKU, 999, "/v1/skus/999")):
            code, expected = _answer(loop, one.view, which, id_, operator)
            got = front.get(path)
            assert (got.status_code, got.content) == (STATUS_OF_CODE[code], expected)
    finally:
        loop.run_until_complete(_stopped(festival))
        loop.close()
        festival.close()
    assert front.get("/v1/checkouts/abc").status_code == 400
    assert front.http.post(front.url + "/v1/checkouts", content=b"{}").status_code == 401
    assert front.post("/v1/batch", {"commands": []}, Role.metrics).status_code == 403
    # what a cluster does not serve (the rebalancer's quota moves): 501 not_on_cluster, naming it
    refused = front.post("/v1/deals/1/qty", {"qty": 1, "idempotency_key": "dq"}, Role.operator)
    assert refused.status_code == 501 and refused.json()["error"]["code"] == "not_on_cluster"
    assert "deal_qty" in refused.json()["error"]["message"]
    assert front.get("/v1/buyers/7/coupons").json() == {"buyer": 7, "coupons": []}  # the buyer's unit answers


# ids (the cluster's carry their unit; the mirror numbers its own) and times (each unit keeps its clock)
_NUMBERED = {"template", "deal", "threshold", "coupon", "checkout", "order", "granted_at", "expires_at",
             "sold_out_at"}


def _unnumbered(value: Any) -> Any:
    """An answer without its ids and times."""
    if isinstance(value, dict):
        return {k: _unnumbered(v) for k, v in value.items() if k not in _NUMBERED}
    if isinstance(value, list):
        return [_unnumbered(v) for v in value]
    return value


def test_promotions_on_the_cluster_read_as_one_festival(front: Front) -> None:
    """Templates, a threshold and a deal made on every unit through each lane;
    grants and coupons spent by buyers of both units; every answer, view and
    the promotions' live figures as one festival's fed the same commands."""
    one = Festival.open(CATALOG, clock_start_ms=T0)
    day = 10 * 86_400_000
    windows = {"grant_from": T0 - day, "grant_until": T0 + day, "use_from": T0 - day, "use_until": T0 + day}
    (b0,), (b1, b1_other) = front.buyers(0, 1), front.buyers(1, 2)
    mine: dict[str, int] = {}  # the cluster's ids by name
    ones: dict[str, int] = {}

    def both(name: str, command: dict[str, Any], answer: httpx.Response | dict[str, Any],
             id_field: str | None = None) -> dict[str, Any]:
        got = answer if isinstance(answer, dict) else {"status": answer.status_code, "body": answer.json()}
        want = one.execute([{**command, **{k: ones[v] for k, v in sent_ids.get(name, {}).items()}}],
                           now_ms=T0)[0]
        assert got["status"] == want["status"], (name, got, want)
        assert _unnumbered(got["body"]) == _unnumbered(want["body"]), name
        if id_field is not None and got["status"] < 300:
            mine[name], ones[name] = got["body"][id_field], want["body"][id_field]
        return got

    sent_ids: dict[str, dict[str, str]] = {}  # a command's id fields, by the name of what they name
    platform = {"op": "coupon_template", "idempotency_key": "p-tpl", "kind": "platform", "discount_fen": 300,
                "min_spend_fen": 0, "budget_count": 5, "per_buyer_max": 2, **windows}
    body = {k: v for k, v in platform.items() if k != "op"}
    both("platform", platform, front.post("/v1/coupon-templates", body, Role.operator), "template")
    assert front.post("/v1/coupon-templates", body, Role.operator).json()["template"] == mine["platform"]  # retry
    capped = {**platform, "idempotency_key": "c-tpl", "budget_count": 9, "budget_fen": 1_000}
    made = front.post("/v1/batch", {"commands": [capped]}, Role.operator).json()["results"][0]
    one.execute([capped], now_ms=T0)
    assert made["status"] == 201  # on a cluster budget_count says what it may grant: 1,000 // 300
    assert made["body"]["budget_count"] == 3 and made["body"]["budget_fen"] == 1_000
    store = {**platform, "idempotency_key": "s-tpl", "kind": "store", "merchant": 10, "discount_fen": 100}
    both("store", store, front.post("/v1/batch", {"commands": [store]}, Role.operator).json()["results"][0],
         "template")
    deal = {"op": "deal", "idempotency_key": "deal-1", "sku": 105, "price_fen": 10_000, "qty": 5,
            "per_buyer_max": 2, "from": T0 - day, "until": T0 + day, "kind": "flash"}
    got = decode_results(front.post("/v1/batch", encode_commands([deal]).to_bytes(), Role.operator,
                                    headers=BINARY).content)
    assert int(got["code"][0]) == 0
    mine["deal"] = int(got["ref"][0])
    ones["deal"] = one.execute([deal], now_ms=T0)[0]["body"]["deal"]
    threshold = {"op": "threshold_discount", "idempotency_key": "th-1", "every_fen": 10_000, "off_fen": 1_000,
                 "from": T0 - day, "until": T0 + day}
    both("threshold", threshold, front.post("/v1/threshold-discounts", {k: v for k, v in threshold.items()
                                                                        if k != "op"}, Role.operator), "threshold")

    # grants by buyers of both units: each coupon in its buyer's unit, its id carrying the unit
    for name, buyer, template in (("c1", b1, "platform"), ("c0", b0, "platform"), ("s1", b1, "store")):
        command = {"op": "grant", "idempotency_key": f"g-{name}", "buyer": buyer, "source": "game:cat"}
        sent_ids[name] = {"template": template}
        answer = front.post(f"/v1/coupon-templates/{mine[template]}/grants",
                            {k: v for k, v in command.items() if k != "op"}, Role.buyer, buyer)
        both(name, {**command, "template": mine[template]}, answer, "coupon")
        assert int(unit_of_id(np.array(mine[name]))) == int(front.slot_map.unit_of_buyer(np.array([buyer]))[0])
    grants = [{"op": "grant", "idempotency_key": f"gj-{k}", "template": mine["platform"], "buyer": b,
               "source": "game:cat"} for k, b in enumerate((b1_other, b0))]
    for k, result in enumerate(front.post("/v1/batch", {"commands": grants}).json()["results"]):
        sent_ids[f"j{k}"] = {"template": "platform"}
        both(f"j{k}", grants[k], result, "coupon")

    # coupons spent: a platform coupon and a store coupon with the deal; another unit's coupon refused
    spend = co("spend-1", [(105, 2), (102, 3)], buyer=b1, coupons=[mine["c1"], mine["s1"]])
    one_spend = {**spend, "coupons": [ones["c1"], ones["s1"]]}
    answer = front.post("/v1/checkouts", {k: v for k, v in spend.items() if k != "op"}, Role.buyer, b1)
    want = one.execute([one_spend], now_ms=T0)[0]
    assert answer.status_code == want["status"] == 201
    assert _unnumbered(answer.json()) == _unnumbered(want["body"]) and answer.json()["amount_fen"] < 20_000 + 300
    paid = {"idempotency_key": "spend-pay", "amount_fen": answer.json()["amount_fen"]}
    assert front.post(f"/v1/checkouts/{answer.json()['checkout']}/pay", paid).status_code == 200
    assert one.execute([{"op": "pay", "checkout": want["body"]["checkout"], **paid}], now_ms=T0)[0]["status"] == 200
    theirs = co("spend-2", [(102, 1)], buyer=b0, coupons=[mine["c1"]])
    refused = front.post("/v1/batch", {"commands": [theirs]}).json()["results"][0]
    assert refused["status"] == 409 and refused["body"]["error"]["code"] == "not_your_coupon"
    assert str(mine["c1"]) in refused["body"]["error"]["message"]
    assert one.execute([{**theirs, "coupons": [ones["c1"]]}], now_ms=T0)[0]["body"]["error"]["code"] == \
        "not_your_coupon"

    # the deal sells out: the rest of its units bought by buyers of unit 0 (its share, and unit 1's was)
    for k, (buyer, qty) in enumerate(zip(front.buyers(0, 3)[1:], (2, 1), strict=True)):
        command = co(f"buy-{k}", [(105, qty)], buyer=buyer)
        answer = front.post("/v1/checkouts", {k: v for k, v in command.items() if k != "op"})
        assert answer.status_code == one.execute([command], now_ms=T0)[0]["status"] == 201, answer.text

    # the views: a template's and a deal's summed over the units; a coupon's and a buyer's in their unit
    for path, name in (("/v1/coupon-templates/{}", "platform"), ("/v1/coupon-templates/{}", "store"),
                       ("/v1/deals/{}", "deal"), ("/v1/threshold-discounts/{}", "threshold"),
                       ("/v1/coupons/{}", "c1"), ("/v1/coupons/{}", "j0")):
        got_view = front.get(path.format(mine[name]))
        assert got_view.status_code == 200, (path, got_view.text)
        read = {"coupon-templates": "coupon_template", "deals": "deal", "threshold-discounts": "threshold_discount",
                "coupons": "coupon"}[path.split("/")[2]]
        assert _unnumbered(got_view.json()) == _unnumbered(one.view(read, ones[name])), path
    coupons = front.get(f"/v1/buyers/{b1}/coupons", Role.buyer, b1).json()["coupons"]
    assert [c["coupon"] for c in coupons] == [mine["s1"], mine["c1"]]
    sold_out = front.get(f"/v1/deals/{mine['deal']}").json()
    assert (sold_out["sold"], sold_out["reserved"], sold_out["left"]) == (2, 3, 0) and sold_out["sold_out_at"]
    reference = _unnumbered(one.stats()["promotions"])
    stats = _wait_for_promotions(front, reference)
    assert stats == reference and stats["deals_sold_out"] == 1
    one.close()


def _wait_for_promotions(front: Front, reference: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + _FIGURES_S
    while True:
        promotions = _unnumbered(front.http.get(front.url + "/v1/stats").json()["promotions"])
        if promotions == reference or time.monotonic() > deadline:
            return dict(promotions)
        time.sleep(0.2)


def test_the_big_screen_its_stream_health_and_metrics(front: Front) -> None:
    page = front.http.get(front.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert front.http.get(front.url + "/static/screen.js").status_code == 200
    with front.http.stream("GET", front.url + "/v1/stats/stream") as events:
        first = next(line for line in events.iter_lines() if line.startswith("data: "))
    assert json.loads(first.removeprefix("data: "))["festival_start"] == FESTIVAL_START_MS
    assert front.http.get(front.url + "/healthz").json() == {"status": "ok"}
    metrics = front.get("/metrics", Role.metrics).text
    assert "double11_cluster_units 2" in metrics and "double11_http_requests_total{" in metrics
    assert front.http.get(front.url + "/openapi.json").status_code == 200
    table = _double11("cluster", "status", "--data", str(front.data))
    assert table.returncode == 0 and f"{front.url}/" in table.stdout


def test_a_units_primary_killed_the_front_serves_it_again(front: Front) -> None:
    buyer = front.buyers(1, 3)[2]
    before = front.post("/v1/checkouts", {k: v for k, v in co("before-kill", [(102, 1)], buyer=buyer).items()
                                          if k != "op"})
    assert before.status_code == 201
    procs = _status(front.data)["processes"]
    primary = next(p["pid"] for p in procs if p.get("unit") == "u1" and p["role"] == "primary")
    killed_at = time.monotonic()
    os.kill(primary, signal.SIGKILL)
    after = front.post("/v1/checkouts", {k: v for k, v in co("after-kill", [(102, 1)], buyer=buyer).items()
                                         if k != "op"})
    served_s = time.monotonic() - killed_at
    print(f"the front served unit u1 again {served_s:.2f} s after its primary's SIGKILL")
    assert after.status_code == 201 and int(unit_of_id(np.array(after.json()["checkout"]))) == 1
    assert served_s <= limits.unit_failover_s_max
    again = front.post("/v1/checkouts", {k: v for k, v in co("before-kill", [(102, 1)], buyer=buyer).items()
                                         if k != "op"})
    assert again.content == before.content  # the new primary answers a retry with its first result
    assert front.http.get(front.url + "/healthz").status_code == 200
    # the standby took over, or the dead node, started again as a standby, took the lease first
    leaders = [p["pid"] for p in _status(front.data)["processes"]
               if p.get("unit") == "u1" and p["role"] == "primary" and p["pid"] != primary]
    assert len(leaders) == 1
