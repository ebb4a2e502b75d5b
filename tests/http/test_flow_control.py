"""Flow control in the HTTP front (double11/http/flow_control.py): a buyer
over its rate is answered 429 rate_limited with Retry-After while others are
served, and a retried out_of_stock checkout is answered again by the front,
byte for byte what the engine said, without reaching the engine; a new
checkout, a retry of an accepted one, and anything after a restock or a
cancel still go to the engine."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import ThreadServer
from model import T0, UNKNOWN_SKU, co, deal, small_catalog

from double11.access import tokens
from double11.access.roles import Principal, Role
from double11.access.tokens import Verifier
from double11.engine.encode import key_hash
from double11.engine.stock_probe import PASS, REFUSE, STOCK_BACK, verdicts
from double11.http.flow_control import BuyerRates, RefusedCheckouts, retry_after_s
from double11.service import Festival

KEY = bytes(range(32))
BOT, BUYER, OTHER_BUYER = 5, 6, 7
SKU, STOCK = 101, 3
_keys = itertools.count()


def key() -> str:
    return f"f{next(_keys)}"


def as_(role: Role, id_: int = 0) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens.issue(KEY, role, id_)}"}


def checkout(buyer: int, qty: int = 1, idempotency_key: str | None = None) -> bytes:
    """A single checkout's body, as the phones send it (exact bytes: a retry sends the same)."""
    cmd = co(idempotency_key or key(), [(SKU, qty)], buyer=buyer)
    del cmd["op"]
    return json.dumps(cmd).encode()


class Served:
    def __init__(self, festival: Festival, server: ThreadServer) -> None:
        self.festival = festival
        self.server = server
        self.app = server.server.app
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def commands(self) -> int:
        """Commands the engine has taken (applied or refused): what reached it."""
        return int(self.festival.metrics()["double11_commands_total"])

    def post(self, path: str, body: bytes | dict, headers: dict[str, str]) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(path, content=content, headers={**headers, "content-type": "application/json"})


@pytest.fixture
def served() -> Iterator[Served]:
    festival = Festival.open(small_catalog({SKU: STOCK}), clock_start_ms=T0)
    server = ThreadServer(festival, verifier=Verifier([KEY]))
    s = Served(festival, server)
    try:
        yield s
    finally:
        s.http.close()
        server.stop()


# ------------------------------------------------------------ the buckets alone
def test_a_bucket_gives_its_burst_then_says_when_the_next_command_may_come() -> None:
    rates = BuyerRates(per_s=2, burst=3)
    assert [rates.wait_s(BOT, 10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rates.wait_s(BOT, 10.0) == pytest.approx(0.5)  # one token comes back every 1/2 s
    assert rates.wait_s(BUYER, 10.0) == 0.0  # another buyer has its own bucket


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    rates = BuyerRates(per_s=2, burst=3)
    for _ in range(3):
        rates.wait_s(BOT, 0.0)
    assert rates.wait_s(BOT, 0.25) == pytest.approx(0.25)  # half a token back: not yet
    assert rates.wait_s(BOT, 0.5) == 0.0  # one back: taken
    assert rates.wait_s(BOT, 0.5) > 0
    # long idle: full again, and no more than the burst
    assert [rates.wait_s(BOT, 100.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert rates.wait_s(BOT, 100.0) > 0


def test_a_batch_takes_a_token_per_command_and_one_over_the_burst_leaves_a_debt() -> None:
    rates = BuyerRates(per_s=1, burst=4)
    assert rates.wait_s(BOT, 0.0, n=3) == 0.0
    assert rates.wait_s(BOT, 0.0, n=2) == pytest.approx(1.0)  # one token left, two asked: nothing taken
    assert rates.wait_s(BOT, 0.0) == 0.0
    big = BuyerRates(per_s=1, burst=4)
    assert big.wait_s(BUYER, 0.0, n=10) == 0.0  # a full bucket lets it through...
    assert big.wait_s(BUYER, 5.0) == pytest.approx(2.0)  # ...and 6 s of debt follow it (-6 + 5 refilled)


def test_buckets_are_bounded_and_the_idle_ones_go_first() -> None:
    rates = BuyerRates(per_s=1, burst=2, buckets_max=8)
    for buyer in range(1, 9):
        rates.wait_s(buyer, 0.0)
    rates.wait_s(1, 1.5)  # buyer 1 keeps going: its bucket is half full at 2.0
    rates.wait_s(1, 1.5)
    rates.wait_s(100, 2.0)  # at the cap: the buckets full again by now go (2..8)
    assert len(rates) == 2
    assert rates.wait_s(1, 2.0) > 0  # buyer 1 kept its count: half a token
    busy = BuyerRates(per_s=1, burst=2, buckets_max=8)
    for buyer in range(1, 20):  # none idle: the oldest go, never more than the cap
        busy.wait_s(buyer, 0.0)
        busy.wait_s(buyer, 0.0)
        assert len(busy) <= 8


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_s(w) for w in (0.01, 0.99, 1.0, 1.2, 7.0)] == [1, 1, 1, 2, 7]


def test_rates_that_cannot_be_are_refused() -> None:
    with pytest.raises(ValueError, match="over 0 commands/s"):
        BuyerRates(per_s=0, burst=1)
    with pytest.raises(ValueError, match="burst of at least 1"):
        BuyerRates(per_s=1, burst=0)


def test_refused_checkouts_are_kept_by_body_and_sender_and_bounded() -> None:
    kept = RefusedCheckouts(entries_max=4)
    bot = Principal(Role.buyer, BOT)
    kept.remember(b"a", bot, b"no")
    assert kept.answer(b"a", bot) == b"no"
    assert kept.answer(b"a", Principal(Role.gateway, 0)) is None  # another sender: the engine decides
    assert kept.answer(b"b", bot) is None
    for body in (b"b", b"c", b"d", b"e"):
        kept.remember(body, bot, b"no")
    assert len(kept) <= 4 and kept.answer(b"a", bot) is None and kept.answer(b"e", bot) == b"no"


# ------------------------------------------------------------ over HTTP
def test_a_bot_over_its_rate_gets_429_with_retry_after_while_another_buyer_is_served(served: Served) -> None:
    served.app.buyer_rates = BuyerRates(per_s=0.01, burst=3)  # no token comes back during the test
    bot = as_(Role.buyer, BOT)
    for _ in range(3):
        assert served.post("/v1/checkouts", checkout(BOT, qty=0), bot).status_code == 400  # counted too
    before = served.commands()
    r = served.post("/v1/checkouts", checkout(BOT), bot)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    message = r.json()["error"]["message"]
    assert f"buyer {BOT}" in message and "0.01 commands/s" in message and "burst 3" in message
    assert int(r.headers["retry-after"]) >= 1
    assert served.commands() == before  # refused at the front: the engine never saw it
    r = served.post("/v1/checkouts", checkout(BUYER), as_(Role.buyer, BUYER))
    assert r.status_code == 201, r.text
    # the connection stays usable after a refusal whose body was never read
    assert served.http.get("/healthz").status_code == 200


def test_a_buyers_batch_counts_its_commands(served: Served) -> None:
    served.app.buyer_rates = BuyerRates(per_s=0.01, burst=3)
    buyer = as_(Role.buyer, BUYER)
    assert served.post("/v1/checkouts", checkout(BUYER), buyer).status_code == 201  # 2 tokens left

    def batch(n: int) -> dict:
        return {"commands": [co(key(), [(SKU, 1)], buyer=BUYER) for _ in range(n)]}

    r = served.post("/v1/batch", batch(3), buyer)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert f"buyer {BUYER} sent a batch of 3 commands" in r.json()["error"]["message"]
    assert served.post("/v1/batch", batch(2), buyer).status_code == 200  # the 2 tokens left
    r = served.post("/v1/checkouts", checkout(BUYER), buyer)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"


def test_a_gateway_and_an_open_server_are_not_held_to_a_buyers_rate(served: Served) -> None:
    served.app.buyer_rates = BuyerRates(per_s=0.01, burst=1)
    gateway = as_(Role.gateway)
    assert [served.post("/v1/checkouts", checkout(BUYER), gateway).status_code for _ in range(3)] == [201] * 3
    festival = Festival.open(small_catalog(), clock_start_ms=T0)
    open_server = ThreadServer(festival)  # --open: no tokens, no buyer to hold
    try:
        open_server.server.app.buyer_rates = BuyerRates(per_s=0.01, burst=1)
        with httpx.Client(base_url=open_server.url, timeout=10) as http:
            codes = [http.post("/v1/checkouts", content=checkout(BUYER), headers={"content-type": "application/json"})
                     .status_code for _ in range(3)]
        assert codes == [201] * 3
    finally:
        open_server.stop()


def test_a_retried_sold_out_checkout_is_answered_at_the_front_as_the_engine_did(served: Served) -> None:
    buyer, bot = as_(Role.buyer, BUYER), as_(Role.buyer, BOT)
    accepted_body = checkout(BUYER, qty=STOCK)
    accepted = served.post("/v1/checkouts", accepted_body, buyer)
    assert accepted.status_code == 201
    refused_body = checkout(BOT)
    first = served.post("/v1/checkouts", refused_body, bot)
    assert first.status_code == 409 and first.json()["error"]["code"] == "out_of_stock"
    assert f"sku {SKU} has 0 for sale" in first.json()["error"]["message"]
    reached = served.commands()
    for _ in range(5):  # a bot retrying in a loop
        again = served.post("/v1/checkouts", refused_body, bot)
        assert (again.status_code, again.content, again.headers["content-type"]) == (409, first.content,
                                                                                     "application/json")
    assert served.commands() == reached  # none of them reached the engine
    # a retry of the checkout accepted before the sell-out still gets its 201
    retried = served.post("/v1/checkouts", accepted_body, buyer)
    assert (retried.status_code, retried.content) == (201, accepted.content)
    # the engine answers the retry the same, had the front not kept it
    served.app.refused_checkouts.answers.clear()
    assert served.post("/v1/checkouts", refused_body, bot).content == first.content
    assert served.commands() > reached


def sell_out(served: Served) -> tuple[httpx.Response, bytes, httpx.Response]:
    """Buyer BUYER takes all of SKU, then the bot's checkout is refused by
    the engine (the front learns SKU is sold out): (the accepted answer,
    the refused body, the refused answer)."""
    accepted = served.post("/v1/checkouts", checkout(BUYER, qty=STOCK), as_(Role.buyer, BUYER))
    assert accepted.status_code == 201
    refused_body = checkout(BOT)
    first = served.post("/v1/checkouts", refused_body, as_(Role.buyer, BOT))
    assert first.status_code == 409 and first.json()["error"]["code"] == "out_of_stock"
    assert served.app.sold_out.skus == {SKU: None}
    return accepted, refused_body, first


def engine_answer(served: Served, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """The engine's own answer to `body`: the front forgets what it knows first."""
    served.app.sold_out.skus.clear()
    served.app.refused_checkouts.answers.clear()
    return served.post("/v1/checkouts", body, headers)


def test_a_new_checkout_of_a_sold_out_sku_is_refused_at_the_front_with_the_engines_words(served: Served) -> None:
    sell_out(served)
    bot = as_(Role.buyer, BOT)
    reached = served.commands()
    for buyer, qty, headers in ((BOT, 2, bot), (OTHER_BUYER, 1, as_(Role.gateway))):
        at_front = served.post("/v1/checkouts", checkout(buyer, qty=qty), headers)
        assert served.commands() == reached  # not a command: the engine's state was read, no more
        assert at_front.status_code == 409
        assert f"sku {SKU} has 0 for sale, line asks {qty}" in at_front.json()["error"]["message"]
        from_engine = engine_answer(served, checkout(buyer, qty=qty), headers)
        assert served.commands() == reached + 1
        reached += 1
        assert (at_front.status_code, at_front.content) == (from_engine.status_code, from_engine.content)
        assert served.app.sold_out.skus  # learned again from the engine's answer


def test_what_the_engine_would_answer_otherwise_goes_to_the_engine(served: Served) -> None:
    _, refused_body, first = sell_out(served)
    bot = as_(Role.buyer, BOT)
    reached = served.commands()
    cases = [
        # a key used before, with another body: idempotency_key_reused
        (checkout(BOT, qty=2, idempotency_key=json.loads(refused_body)["idempotency_key"]), bot,
         409, "idempotency_key_reused"),
        # a shape error comes first
        (checkout(BOT, qty=0), bot, 400, "invalid_quantity"),
        # another buyer's checkout with a buyer token: the engine's access check
        (checkout(OTHER_BUYER), bot, 403, "forbidden"),
        # an unknown SKU on an earlier line
        (json.dumps({**json.loads(checkout(BOT)), "lines": [{"sku": 999, "qty": 1}, {"sku": SKU, "qty": 1}]})
         .encode(), bot, 404, "unknown_sku"),
    ]
    for body, headers, status, code in cases:
        r = served.post("/v1/checkouts", body, headers)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        reached += 1
        assert served.commands() == reached  # the engine answered it
    # the same body from a gateway: a key of the gateways' space (a buyer's keys
    # are its own), new there, so refused at the front in the same words
    assert served.post("/v1/checkouts", refused_body, as_(Role.gateway)).content == first.content
    assert served.commands() == reached


@pytest.mark.parametrize("stock_back", ["restock", "cancel"])
def test_a_sku_with_stock_back_sells_at_once(served: Served, stock_back: str) -> None:
    accepted = served.post("/v1/checkouts", checkout(BUYER, qty=STOCK), as_(Role.buyer, BUYER))
    assert accepted.status_code == 201
    bot = as_(Role.buyer, BOT)
    refused_body = checkout(BOT)
    first = served.post("/v1/checkouts", refused_body, bot)
    assert first.status_code == 409
    if stock_back == "restock":
        r = served.post(f"/v1/skus/{SKU}/restock", {"qty": 1, "idempotency_key": key()}, as_(Role.operator))
    else:
        r = served.post(f"/v1/checkouts/{accepted.json()['checkout']}/cancel", {"idempotency_key": key()},
                        as_(Role.buyer, BUYER))
    assert r.status_code in (200, 201), r.text
    sold = served.post("/v1/checkouts", checkout(BOT), bot)
    assert sold.status_code == 201, sold.text
    # the refused one's retry is still its first answer, from the engine as from the front
    assert served.post("/v1/checkouts", refused_body, bot).content == first.content


def test_a_checkout_refused_at_the_front_is_answered_the_same_when_retried_after_a_restock(served: Served) -> None:
    sell_out(served)
    bot = as_(Role.buyer, BOT)
    body = checkout(BOT)
    at_front = served.post("/v1/checkouts", body, bot)
    assert at_front.status_code == 409
    r = served.post(f"/v1/skus/{SKU}/restock", {"qty": 5, "idempotency_key": key()}, as_(Role.operator))
    assert r.status_code in (200, 201), r.text
    assert served.post("/v1/checkouts", body, bot).content == at_front.content  # its first answer
    assert served.post("/v1/checkouts", checkout(BOT), bot).status_code == 201  # a new one sells


# ------------------------------------------------------------ the engine's verdicts
def test_the_engine_passes_a_sold_out_skus_checkout_when_a_deal_or_an_expiry_could_change_its_answer() -> None:
    festival = Festival.open(small_catalog({SKU: STOCK}), clock_start_ms=T0)
    engine = festival.engine
    [taken] = festival.execute([co(key(), [(SKU, STOCK)], buyer=BUYER)], T0)
    assert taken["status"] == 201
    new_key, sku = np.array([key_hash(key())], dtype=np.uint64), np.array([SKU])
    assert verdicts(engine, T0, new_key, sku).tolist() == [REFUSE]
    used_key = np.array([key_hash("never-used-before")], dtype=np.uint64)
    festival.execute([co("never-used-before", [(102, 1)], buyer=BUYER)], T0)
    assert verdicts(engine, T0, used_key, sku).tolist() == [PASS]
    assert verdicts(engine, T0, new_key, np.array([UNKNOWN_SKU])).tolist() == [PASS]
    assert verdicts(engine, T0, new_key, np.array([102])).tolist() == [STOCK_BACK]
    # the unpaid checkout is due to expire: the next batch puts its units back
    assert verdicts(engine, T0 + engine.config.payment_timeout_ms, new_key, sku).tolist() == [PASS]
    [made] = festival.execute([deal(key(), SKU, price_fen=1000, qty=1)], T0)
    assert made["status"] == 201, made
    assert verdicts(engine, T0, new_key, sku).tolist() == [PASS]  # a deal's checks come first


def test_over_the_link_the_front_refuses_a_sold_out_skus_new_checkout_without_a_command(tmp_path) -> None:
    """`double11 serve` as it runs (front and engine processes; --open: as the operator)."""
    from test_http_link import SplitServer

    from double11.catalog.files import save_catalog

    catalog_dir = tmp_path / "catalog"
    save_catalog(small_catalog({SKU: STOCK}), catalog_dir)
    server = SplitServer(catalog_dir, tmp_path / "data")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            def post(body: bytes) -> httpx.Response:
                return http.post("/v1/checkouts", content=body, headers={"content-type": "application/json"})

            def commands() -> int:
                line = next(x for x in http.get("/metrics").text.splitlines()
                            if x.startswith("double11_commands_total "))
                return int(float(line.split()[1]))

            accepted_body = checkout(BUYER, qty=STOCK)
            accepted = post(accepted_body)
            assert accepted.status_code == 201
            assert post(checkout(BOT)).status_code == 409  # the engine's: the front learns SKU is sold out
            reached = commands()
            at_front = post(checkout(OTHER_BUYER, qty=2))
            assert at_front.status_code == 409
            assert f"sku {SKU} has 0 for sale, line asks 2" in at_front.json()["error"]["message"]
            assert commands() == reached
            assert post(accepted_body).content == accepted.content  # a retry of the accepted one: its 201
            assert commands() == reached + 1
    finally:
        assert server.stop() == 0
