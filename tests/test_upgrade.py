"""Upgrades: a data folder written by the release before versioned persistence
(tests/fixtures/data-v1: a pickled snapshot, log segments without a header;
made by tests/fixtures/make_v1_data.py) recovers under this code to exactly
the state it held, and a festival started before the upgrade finishes after it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from double11 import Festival

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "data-v1-expected.json").read_text())
SKUS = len(EXPECTED["views"]["skus"]) - 1  # SKUs 1..SKUS, then one unknown id
TIMEOUT_MS = 60_000  # the fixture's payment window


@pytest.fixture
def v1_data(tmp_path: Path) -> Path:
    """A copy of the old folder (opening one writes to it)."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "data-v1", data)
    return data


def views(f: Festival) -> dict[str, Any]:
    """The views make_v1_data.py recorded, for every id the festival knows and one past them."""
    engine = f.engine
    return {
        "skus": [f.sku(s) for s in [*range(1, SKUS + 1), 999_999]],
        "checkouts": [f.checkout(c) for c in range(1, engine.c_status.size + 2)],
        # an order's view names its buyer since the release after v1 (who may read it: double11/access)
        "orders": [_as_v1(f.order(o)) for o in range(1, engine.o_status.size + 2)],
        "ledger": f.ledger(),
        "stats": engine.stats.view(engine.catalog, engine.now_ms),
        "now_ms": engine.now_ms,
    }


def _as_v1(order: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if order is None else {k: v for k, v in order.items() if k != "buyer"}


def check_invariants(f: Festival) -> None:
    v = views(f)
    for sku in v["skus"][:-1]:
        assert min(sku["stock"], sku["reserved"], sku["sold"]) >= 0, sku
        assert sku["stock"] + sku["reserved"] + sku["sold"] == sku["stocked"], sku
    ledger = v["ledger"]
    assert ledger["sum"] == 0 == sum(ledger["accounts"].values()), ledger
    assert ledger["accounts"]["escrow"] >= 0 and ledger["accounts"]["buyers"] <= 0, ledger
    checkouts = [c for c in v["checkouts"] if c is not None]
    stats = v["stats"]
    assert stats["gmv_fen"] == sum(c["amount_fen"] for c in checkouts if c["status"] == "paid")
    assert stats["gmv_fen"] == sum(stats["gmv_by_hour_fen"])
    assert stats["checkouts"] == len(checkouts) and stats["orders"] == len(v["orders"]) - 1
    for c in checkouts:
        assert c["amount_fen"] == sum(line["amount_fen"] for line in c["lines"]) == sum(
            o["amount_fen"] for o in c["orders"])
    held: dict[int, int] = {}
    for c in checkouts:
        if c["status"] == "reserved":
            for line in c["lines"]:
                held[line["sku"]] = held.get(line["sku"], 0) + line["qty"]
    assert {s["sku"]: s["reserved"] for s in v["skus"][:-1] if s["reserved"]} == held
    engine = f.engine
    assert (engine.reserved_by_checkouts() == engine.sku_reserved).all()


def check_retries(f: Festival, now_ms: int) -> None:
    for retry in EXPECTED["retries"]:
        assert f.execute([retry["command"]], now_ms)[0] == retry["answer"], retry["command"]


def test_the_old_data_folder_recovers_to_the_state_it_held(v1_data):
    f = Festival.open(data_dir=v1_data)
    try:
        got = views(f)
        for name, want in EXPECTED["views"].items():
            if name == "ledger":  # accounts added since start empty
                want = {**want, "accounts": {**want["accounts"], "marketing": 0}}
            assert got[name] == want, name
        check_retries(f, got["now_ms"])  # keys answered before the upgrade answer as they did
        assert views(f) == got  # and a retry changes nothing
    finally:
        f.close()


def _more_commands(f: Festival, now_ms: int) -> int:
    """Checkouts, their payments, confirms and refunds, and an expiry, on the
    recovered festival; returns the time of the last batch."""
    buy = [{"op": "checkout", "idempotency_key": f"after-{i}", "buyer": 500 + i % 7, "country": "CN",
            "channel": "mobile", "lines": [{"sku": 1 + (37 * i) % SKUS, "qty": 1}, {"sku": 1 + i % 20, "qty": 1}]}
           for i in range(40)]
    answers = f.execute(buy, now_ms)
    created = [a["body"] for a in answers if a["status"] == 201]
    assert created and any(a["status"] == 409 for a in answers)  # some scarce SKUs ran out
    now_ms += 1_000
    paid = created[: len(created) // 2]
    pays = [{"op": "pay", "idempotency_key": f"after-pay-{c['checkout']}", "checkout": c["checkout"],
             "amount_fen": c["amount_fen"]} for c in paid]
    assert all(a["status"] == 200 for a in f.execute(pays, now_ms))
    orders = [o["order"] for c in paid for o in c["orders"]]
    now_ms += 1_000
    settle = [{"op": "confirm" if k % 3 else "refund", "idempotency_key": f"after-order-{o}", "order": o}
              for k, o in enumerate(orders)]
    assert all(a["status"] == 200 for a in f.execute(settle, now_ms))
    now_ms += TIMEOUT_MS + 1  # the other half lapses
    late = created[len(created) // 2]
    answer = f.execute([{"op": "pay", "idempotency_key": "after-late", "checkout": late["checkout"],
                         "amount_fen": late["amount_fen"]}], now_ms)[0]
    assert answer["body"]["error"]["code"] == "expired"
    return now_ms


def test_a_festival_started_before_the_upgrade_finishes_after_it(v1_data):
    f = Festival.open(data_dir=v1_data)
    try:
        now_ms = _more_commands(f, EXPECTED["views"]["now_ms"] + 5_000)
        check_invariants(f)
        after = views(f)
    finally:
        f.close()
    g = Festival.open(data_dir=v1_data)  # the old snapshot and both kinds of log segment
    try:
        assert views(g) == after
        check_invariants(g)
        check_retries(g, now_ms)
    finally:
        g.close(snapshot=True)
    assert [p.suffix for p in v1_data.glob("snapshot-*")] == [".d11snap"]  # the pickle is gone
    h = Festival.open(data_dir=v1_data)  # this code's own snapshot
    try:
        assert views(h) == after
        check_retries(h, now_ms)
        assert h.execute([{"op": "restock", "idempotency_key": "after-restock", "sku": 1, "qty": 5}],
                         now_ms)[0]["status"] == 200
        check_invariants(h)
    finally:
        h.close()
