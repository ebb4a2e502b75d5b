"""The promotions' moves (issue 25): `coupon_budget` adds coupons to a
template's budget or takes out coupons not yet granted, `deal_qty` adds
units to a deal (a sold-out deal opens again) or takes out units not yet
taken; all or none, operator only.

Through the in-process festival (no HTTP; the routes' roles are in
tests/http/test_access.py): what each move changes and answers, what it
refuses and that a refusal changes nothing, retries, every bad input and
role, the binary lane and its words, a single request's body, a forged
record, and the log and a snapshot against the reference model.  The random
streams against the model include both (tests/test_properties_promotions.py)."""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import pytest
from model import T0, co, coupon_budget, deal, deal_qty, grant, pay, small_catalog, template
from model.reference import ReferenceFestival
from model.state import engine_state
from test_quota_release import ok_body, one, refusal  # a command sent alone, its body, its refusal

from double11 import Festival, limits
from double11.access.roles import Principal, Role
from double11.config import FestivalConfig
from double11.engine import wire
from double11.engine.batch import CommandBatch
from double11.engine.encode import encode_commands
from double11.engine.machine import Engine
from double11.errors import Result
from double11.promotions.spec import COUPON_BUDGET, DEAL_QTY

SKU = 102  # 5 for sale in the small catalog, 100 fen each
MOST = limits.coupon_budget_count_max  # = limits.deal_qty_max
WANTED = f"-{MOST}..-1 or 1..{MOST}"
# what a refused command may change: its key taken (a refusal is remembered) and the clock
UNCHANGED = {"keys", "idem_index", "now_ms"}
_keys = itertools.count()


def key() -> str:
    return f"m{next(_keys)}"


@pytest.fixture
def festival():
    """Template 1 (platform, budget 3, 1000 fen a coupon, budget_fen 4000) and
    deal 1 (SKU 102 at 50 fen, 2 units, 2 a buyer), both open now."""
    f = Festival.open(small_catalog(), clock_start_ms=T0)
    assert [r["status"] for r in f.execute([template("t", budget_count=3, budget_fen=4000, per_buyer_max=9),
                                            deal("d", SKU, 50, 2, per_buyer_max=2)])] == [201, 201]
    yield f
    f.close()


def budget(f: Festival) -> tuple[int, int, int]:
    """(budget_count, granted, budget_count_left) of template 1."""
    view = f.view("coupon_template", 1)
    assert view is not None
    return view["budget_count"], view["granted"], view["budget_count_left"]


def units(f: Festival) -> tuple[int, int, int, int | None]:
    """(qty, taken, left, sold_out_at) of deal 1."""
    view = f.view("deal", 1)
    assert view is not None
    return view["qty"], view["sold"] + view["reserved"], view["left"], view["sold_out_at"]


def sold_out(f: Festival) -> int:
    return f.stats()["promotions"]["deals_sold_out"]


def refused_and_unchanged(f: Festival, cmd: dict, principal: Principal | None = None) -> tuple[int, str, str]:
    before = engine_state(f.engine)
    got = refusal(one(f, cmd, principal))
    changed = {name for name, value in engine_state(f.engine).items() if before[name] != value}
    assert changed <= UNCHANGED, f"a refused {cmd['op']} changed {changed - UNCHANGED}"
    return got


# ------------------------------------------------------------------ coupon_budget
def test_a_budget_takes_coupons_in_and_out_and_a_taken_out_budget_stops_grants(festival):
    assert ok_body(festival, coupon_budget(key(), 1, 2)) == {"template": 1, "count": 2, "budget_count": 5}
    assert [ok_body(festival, grant(key(), 1))["coupon"] for _ in range(2)] == [1, 2]
    assert budget(festival) == (5, 2, 3)
    assert ok_body(festival, coupon_budget(key(), 1, -2)) == {"template": 1, "count": -2, "budget_count": 3}
    assert budget(festival) == (3, 2, 1)
    # all or none: one coupon left to grant, two asked for
    assert refused_and_unchanged(festival, coupon_budget(key(), 1, -2)) == (
        409, "budget_exhausted",
        "count must be at least -1 (template 1 may still grant 1 coupons; granted ones are not taken back), got -2; "
        "nothing was taken out")
    assert ok_body(festival, coupon_budget(key(), 1, -1))["budget_count"] == 2
    assert refusal(one(festival, grant(key(), 1)))[1] == "budget_exhausted"
    assert budget(festival) == (2, 2, 0)
    assert festival.stats()["promotions"]["coupons_left"]["platform"] == 0
    # added again, it grants again; its budget_fen (4 coupons' worth) stays and still caps the grants
    assert ok_body(festival, coupon_budget(key(), 1, 10))["budget_count"] == 12
    assert (festival.view("coupon_template", 1) or {})["budget_fen"] == 4000
    got = festival.execute([grant(key(), 1), grant(key(), 1), grant(key(), 1)])
    assert [r["status"] for r in got] == [201, 201, 409]
    assert budget(festival) == (12, 4, 8)


def test_unknown_templates_and_deals_are_refused_and_remembered(festival):
    assert refused_and_unchanged(festival, coupon_budget(key(), 2, 1)) == (
        404, "unknown_template", "template 2 does not exist")
    assert refused_and_unchanged(festival, deal_qty(key(), 9, -1)) == (404, "unknown_deal", "deal 9 does not exist")
    # remembered: a template made since does not change a retry's answer
    first = coupon_budget("unknown-then-made", 2, 1)
    answer = one(festival, first)
    ok_body(festival, template(key()))
    assert one(festival, dict(first)) == answer


# ----------------------------------------------------------------------- deal_qty
def test_deal_units_taken_out_are_never_sold_and_leave_the_deal_unsold_out(festival):
    ok_body(festival, co(key(), [(SKU, 1)]))
    assert units(festival) == (2, 1, 1, None)
    assert refused_and_unchanged(festival, deal_qty(key(), 1, -2)) == (
        409, "deal_sold_out",
        "qty must be at least -1 (deal 1 has 1 units left; reserved and sold ones are not taken out), got -2; "
        "nothing was taken out")
    assert ok_body(festival, deal_qty(key(), 1, -1)) == {"deal": 1, "qty": -1, "deal_qty": 1}
    # none left, yet not sold out: taking units out never marks it so
    assert units(festival) == (1, 1, 0, None) and sold_out(festival) == 0
    assert refusal(one(festival, co(key(), [(SKU, 1)], buyer=8)))[1] == "deal_sold_out"


def test_units_added_reopen_a_sold_out_deal_and_lower_the_figure(festival):
    paid = ok_body(festival, co(key(), [(SKU, 2)]))
    ok_body(festival, pay(key(), paid["checkout"], paid["amount_fen"]))
    qty, taken, left, at = units(festival)
    assert (qty, taken, left) == (2, 2, 0) and at is not None and sold_out(festival) == 1
    assert ok_body(festival, deal_qty(key(), 1, 3)) == {"deal": 1, "qty": 3, "deal_qty": 5}
    assert units(festival) == (5, 2, 3, None) and sold_out(festival) == 0
    assert festival.stats()["promotions"]["deals_sold_out_latest"] == []
    # at the deal's price again, and sold out again when its last unit goes
    again = festival.execute([co(key(), [(SKU, 2)], buyer=8), co(key(), [(SKU, 1)], buyer=9)])
    assert [r["body"]["amount_fen"] for r in again] == [100, 50]
    assert units(festival)[2:] == (0, festival.engine.now_ms) and sold_out(festival) == 1


# ------------------------------------------------------------------------ retries
def test_a_retry_answers_its_first_result_whatever_the_figure_became(festival):
    first, moved = coupon_budget("move-1", 1, 4), deal_qty("move-2", 1, -1)
    answers = festival.execute([first, moved])
    assert [r["body"] for r in answers] == [{"template": 1, "count": 4, "budget_count": 7},
                                           {"deal": 1, "qty": -1, "deal_qty": 1}]
    festival.execute([coupon_budget(key(), 1, 100), deal_qty(key(), 1, 100)])
    assert festival.execute([dict(first), dict(moved)]) == answers
    assert budget(festival)[0] == 107 and units(festival)[0] == 101, "a retry moved again"
    # a refusal is remembered with its words; the same key with another body
    too_many = deal_qty("move-3", 1, -500)
    refused = one(festival, too_many)
    ok_body(festival, deal_qty(key(), 1, 1000))
    assert one(festival, dict(too_many)) == refused and "(deal 1 has 101 units left;" in refusal(refused)[2]
    assert refusal(one(festival, coupon_budget("move-1", 1, 5)))[1] == "idempotency_key_reused"
    # the create commands still answer their thing as created, whatever moved it since
    assert ok_body(festival, template("t", budget_count=3, budget_fen=4000, per_buyer_max=9))["budget_count"] == 3
    made = ok_body(festival, deal("d", SKU, 50, 2, per_buyer_max=2))
    assert (made["qty"], made["left"]) == (2, 2)


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cmd,status,code,words", [
    (coupon_budget("b", 1, 0), 400, "invalid_quantity", f"count must be {WANTED}, got 0"),
    (coupon_budget("b", 1, MOST + 1), 400, "invalid_quantity", f"count must be {WANTED}, got {MOST + 1}"),
    (coupon_budget("b", 1, -MOST - 1), 400, "invalid_quantity", f"count must be {WANTED}, got {-MOST - 1}"),
    ({**coupon_budget("b", 1, 1), "count": "1"}, 400, "invalid_quantity", f"count must be {WANTED}, got '1'"),
    ({**coupon_budget("b", 1, 1), "count": None}, 400, "invalid_quantity", f"count is missing ({WANTED})"),
    (coupon_budget("b", 0, 1), 400, "invalid_request", "template must be a positive integer up to"),
    (deal_qty("q", 1, 0), 400, "invalid_quantity", f"qty must be {WANTED}, got 0"),
    (deal_qty("q", 1, MOST + 1), 400, "invalid_quantity", f"qty must be {WANTED}, got {MOST + 1}"),
    (deal_qty("q", 1, -MOST - 1), 400, "invalid_quantity", f"qty must be {WANTED}, got {-MOST - 1}"),
    ({**deal_qty("q", 1, 1), "qty": 1.0}, 400, "invalid_quantity", f"qty must be {WANTED}, got 1.0"),
    (deal_qty("q", -1, 1), 400, "invalid_request", "deal must be a positive integer up to"),
    ({**deal_qty("q", 1, 1), "idempotency_key": None}, 400, "invalid_idempotency_key", "idempotency_key is missing"),
])
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(festival, cmd, status, code, words):
    sent = {k: v for k, v in cmd.items() if v is not None}  # None: left out
    got = refused_and_unchanged(festival, sent)
    assert got[:2] == (status, code)
    assert got[2].startswith(words), got[2]
    # a shape refusal is not remembered: its key is free for a good body
    if "idempotency_key" in sent:
        good = (coupon_budget if cmd["op"] == "coupon_budget" else deal_qty)(sent["idempotency_key"], 1, 1)
        assert one(festival, good)["status"] == 200


@pytest.mark.parametrize("principal", [Principal(Role.merchant, 10), Principal(Role.buyer, 7),
                                       Principal(Role.gateway, 0)])
def test_only_the_operator_may_move_a_budget_or_units(festival, principal):
    for cmd in (coupon_budget("not-yours-1", 1, 1), deal_qty("not-yours-2", 1, 1)):
        status, code, message = refused_and_unchanged(festival, cmd, principal)
        assert (status, code) == (403, "forbidden")
        assert message.endswith(f"token may not {cmd['op']}"), message
        # the refused command took no key: the operator's with the same key is done
        assert one(festival, cmd)["status"] == 200


# -------------------------------------------------------------- the other lanes
def test_the_binary_lane_carries_both_and_words_their_refusals_as_json_does(festival):
    commands = [coupon_budget(key(), 1, 2), deal_qty(key(), 1, 1), coupon_budget(key(), 5, 1),
                coupon_budget(key(), 1, -9), deal_qty(key(), 3, 1), deal_qty(key(), 1, -4)]
    body = encode_commands(commands).to_bytes()
    answer = wire.decode_results(festival.execute_binary(body))
    assert answer["code"].tolist() == [Result.ok, Result.ok, Result.unknown_template, Result.budget_exhausted,
                                       Result.unknown_deal, Result.deal_sold_out]
    # the figure after, the id, what could still be taken out
    assert answer["ref"].tolist() == [5, 3, 5, 5, 3, 3]
    words = wire.messages(CommandBatch.from_bytes(body), answer)
    as_json = [r["body"]["error"]["message"] for r in festival.execute(commands[2:])]  # retries: first results
    assert words == [None, None, *as_json]
    assert budget(festival)[0] == 5 and units(festival)[0] == 3


def _binary(command: dict, mutate) -> bytes:
    batch = encode_commands([command])
    mutate(batch)
    return batch.to_bytes()


def _without_args(batch: CommandBatch) -> None:
    batch.args[:] = 0
    batch.arg = batch.arg[:0]


@pytest.mark.parametrize("command", [coupon_budget("x", 1, 1), deal_qty("x", 1, 1)], ids=["budget", "qty"])
@pytest.mark.parametrize("mutate,code,words", [
    (lambda b: b.arg.__setitem__(0, 0), Result.invalid_quantity, f"must be {WANTED}, got 0"),
    (lambda b: b.arg.__setitem__(0, MOST + 1), Result.invalid_quantity, f"must be {WANTED}, got {MOST + 1}"),
    (lambda b: b.arg.__setitem__(0, -MOST - 1), Result.invalid_quantity, f"must be {WANTED}, got {-MOST - 1}"),
    (lambda b: b.target.__setitem__(0, 0), Result.invalid_request, "must be a positive integer up to"),
    (_without_args, Result.invalid_quantity, "takes 1 args, got 0"),
])
def test_a_malformed_binary_move_is_refused_by_its_declaration(festival, command, mutate, code, words):
    body = _binary({**command, "idempotency_key": key()}, mutate)
    before = engine_state(festival.engine)
    answer = wire.decode_results(festival.execute_binary(body))
    assert answer["code"].tolist() == [code]
    (message,) = wire.messages(CommandBatch.from_bytes(body), answer)
    assert message is not None and words in message, message
    changed = {name for name, value in engine_state(festival.engine).items() if before[name] != value}
    assert changed <= UNCHANGED


def test_a_single_request_is_answered_as_the_same_command_in_a_batch(festival):
    async def single(number: int, target: int, body: dict) -> tuple[int, dict]:
        code, answer = await festival.submit_single(number, target, msgspec.json.encode(body))
        return code, msgspec.json.decode(answer)

    async def requests() -> list[tuple[int, dict]]:
        return [await single(COUPON_BUDGET.number, 1, {"count": -1, "idempotency_key": "s1"}),
                # the path's id wins over the body's
                await single(DEAL_QTY.number, 1, {"deal": 7, "qty": 2, "idempotency_key": "s2"}),
                await single(DEAL_QTY.number, 1, {"qty": 0, "idempotency_key": "s3"}),
                await single(COUPON_BUDGET.number, 1, {"count": -3, "idempotency_key": "s4"})]

    assert asyncio.run(requests()) == [
        (Result.ok, {"template": 1, "count": -1, "budget_count": 2}),
        (Result.ok, {"deal": 1, "qty": 2, "deal_qty": 4}),
        (Result.invalid_quantity, {"error": {"code": "invalid_quantity", "message": f"qty must be {WANTED}, got 0"}}),
        (Result.budget_exhausted, {"error": {"code": "budget_exhausted", "message": (
            "count must be at least -2 (template 1 may still grant 2 coupons; granted ones are not taken back), "
            "got -3; nothing was taken out")}})]
    # the batch's retry answers what the single request was told
    assert one(festival, coupon_budget("s1", 1, -1))["body"] == {"template": 1, "count": -1, "budget_count": 2}


def test_a_forged_move_without_its_args_is_refused_and_reads_nothing():
    """A batch that skipped validation (a log record read back as trusted)
    with a grant's args under each move's op: unknown_op, nothing moved."""
    engine = Engine(small_catalog(), FestivalConfig())
    made = encode_commands([template("t"), deal("d", SKU, 50, 2)])
    engine.apply(made, T0)
    for number in (COUPON_BUDGET.number, DEAL_QTY.number):
        batch = encode_commands([grant(key(), 1)])
        batch.op[0] = number
        code, _ = engine.apply(CommandBatch.from_bytes(batch.to_bytes(), trusted=True), T0)
        assert code.tolist() == [Result.unknown_op]
    assert int(engine.promos.coupon_templates.rows[0]["budget_count"]) == 100
    assert int(engine.promos.deals.rows[0]["qty"]) == 2


# ------------------------------------------------------- the log and the snapshot
STREAM = [
    [template("t1", budget_count=2), deal("d1", SKU, 50, 2, per_buyer_max=2), grant("g1", 1),
     coupon_budget("b1", 1, -1), coupon_budget("b2", 1, -1)],
    [co("c1", [(SKU, 2)]), deal_qty("q1", 1, -1), deal_qty("q2", 1, 2), grant("g2", 1), coupon_budget("b3", 1, 3)],
    [grant("g3", 1), pay("p1", 1, 100), deal_qty("q3", 1, -3), deal_qty("q4", 2, 1), coupon_budget("b4", 2, 1)],
    [co("c2", [(SKU, 2)], buyer=8), coupon_budget("b5", 1, -3), coupon_budget("b6", 1, -2)],
]


def _norm(result: dict) -> tuple:
    """A result as the model words it: an error by its code alone."""
    if result["status"] >= 400:
        return result["status"], result["body"]["error"]["code"]
    return result["status"], result["body"]


@pytest.mark.parametrize("snapshot_after", [None, 1])
def test_replaying_the_log_and_a_snapshot_give_back_the_same_state(tmp_path, snapshot_after):
    festival = Festival.open(small_catalog(), data_dir=tmp_path)
    model = ReferenceFestival(small_catalog(), festival.engine.config)
    first: list[dict] = []
    try:
        for k, commands in enumerate(STREAM):
            got = festival.execute(commands, T0 + 1000 * k)
            assert [_norm(r) for r in got] == [_norm(r) for r in model.execute(commands, T0 + 1000 * k)]
            first += got
            if k == snapshot_after:
                festival.snapshot()
        state = engine_state(festival.engine)
        views = [festival.view("coupon_template", 1), festival.view("deal", 1), festival.stats()["promotions"]]
        assert views[:2] == [model.coupon_template(1), model.deal(1)]
        assert views[2]["deals_sold_out"] == model.stats()["promotions"]["deals_sold_out"] == 1
    finally:
        festival.close()
    reopened = Festival.open(data_dir=tmp_path)
    try:
        assert engine_state(reopened.engine) == state
        # its idempotency table came back: every retry answers its first result, moving nothing
        assert reopened.execute([c for commands in STREAM for c in commands], T0 + 10_000) == first
        assert [reopened.view("coupon_template", 1), reopened.view("deal", 1)] == views[:2]
    finally:
        reopened.close()
