"""Promotions across a crash: SIGKILL the server while buyers race for a
small coupon budget and a flash deal with a per-buyer limit, restart it on
the same data folder, and check that no budget, per-buyer limit or deal
quantity was exceeded, that nothing acknowledged was lost, and that every
retry answers its first result (docs/promotions.md).

The server is a real subprocess (tests/test_crash.py's ServerProcess).
"""

from __future__ import annotations

import random
import threading
import time

import httpx
from test_crash import SKUS, ServerProcess, crash_catalog

THREADS = 4
LOAD_S_MAX = 30.0
BUDGET = 60  # red packets: fewer than the buyers ask for
PER_BUYER = 2
DEAL_SKU, DEAL_QTY, DEAL_PER_BUYER = 1001, 25, 3
BUYERS_PER_THREAD = 30
ALWAYS = {"from": 0, "until": 4_102_444_800_000}


def _setup(url: str) -> None:
    window = {"grant_from": 0, "grant_until": ALWAYS["until"], "use_from": 0, "use_until": ALWAYS["until"]}
    commands = [
        {"op": "coupon_template", "idempotency_key": "red-packet", "kind": "platform", "discount_fen": 30,
         "min_spend_fen": 0, "budget_count": BUDGET, "per_buyer_max": PER_BUYER, **window},
        {"op": "threshold_discount", "idempotency_key": "threshold", "every_fen": 500, "off_fen": 50, **ALWAYS},
        {"op": "deal", "idempotency_key": "flash", "sku": DEAL_SKU, "price_fen": 50, "qty": DEAL_QTY,
         "per_buyer_max": DEAL_PER_BUYER, "kind": "flash", **ALWAYS},
    ]
    r = httpx.post(url + "/v1/batch", json={"commands": commands}, timeout=30)
    assert [x["status"] for x in r.json()["results"]] == [201, 201, 201], r.text


def load(url: str, worker: int, stop: threading.Event, acked: list, errors: list) -> None:
    """Grants to this worker's buyers, checkouts spending their coupons and
    buying the deal's SKU, and payments of the payable amounts."""
    rng = random.Random(worker)
    buyers = range(1 + worker * BUYERS_PER_THREAD, 1 + (worker + 1) * BUYERS_PER_THREAD)
    held: dict[int, list[int]] = {b: [] for b in buyers}
    seq = 0
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                cmds: list[dict] = []
                for _ in range(4):
                    seq += 1
                    cmds.append({"op": "grant", "idempotency_key": f"w{worker}-{seq}", "template": 1,
                                 "buyer": rng.choice(buyers), "source": "game:ar-catch-the-cat"})
                for _ in range(4):
                    seq += 1
                    buyer = rng.choice(buyers)
                    # half of them race for the flash deal; the rest keep selling once it is gone
                    lines = [{"sku": DEAL_SKU, "qty": rng.randint(1, 2)}] if rng.random() < 0.5 else []
                    lines += [{"sku": s, "qty": 1}
                              for s in rng.sample(range(1002, 1001 + SKUS), rng.randint(1 - len(lines), 2))]
                    cmd = {"op": "checkout", "idempotency_key": f"w{worker}-{seq}", "buyer": buyer, "country": "CN",
                           "channel": "mobile", "lines": lines}
                    if held[buyer]:
                        cmd["coupons"] = [held[buyer].pop()]
                    cmds.append(cmd)
                r = c.post("/v1/batch", json={"commands": cmds})
                if r.status_code != 200:
                    errors.append(f"batch answered {r.status_code}: {r.text[:300]}")
                    return
                pays = []
                for cmd, res in zip(cmds, r.json()["results"]):
                    acked.append((cmd, res))
                    if cmd["op"] == "grant" and res["status"] == 201:
                        held[cmd["buyer"]].append(res["body"]["coupon"])
                    elif cmd["op"] == "checkout" and res["status"] == 201 and rng.random() < 0.7:
                        seq += 1
                        pays.append({"op": "pay", "idempotency_key": f"w{worker}-{seq}",
                                     "checkout": res["body"]["checkout"], "amount_fen": res["body"]["amount_fen"]})
                if pays:
                    r = c.post("/v1/batch", json={"commands": pays})
                    for cmd, res in zip(pays, r.json()["results"]):
                        acked.append((cmd, res))
    except (httpx.TransportError, ValueError):
        return  # the server was killed


def _raced(acked: list) -> bool:
    """Whether the load has spent coupons and met the budget or a per-buyer limit."""
    spent = sum(1 for cmd, res in acked if cmd["op"] == "checkout" and cmd.get("coupons") and res["status"] == 201)
    limited = any(res["status"] == 409 and res["body"]["error"]["code"] in ("budget_exhausted", "buyer_limit_reached")
                  for cmd, res in acked if cmd["op"] == "grant")
    return spent >= 5 and limited


def test_sigkill_mid_promotions_exceeds_no_budget_or_limit(tmp_path):
    from double11.catalog.files import save_catalog

    catalog_dir = tmp_path / "catalog"
    save_catalog(crash_catalog(), catalog_dir)
    data_dir, log_path = tmp_path / "data", tmp_path / "server.log"
    srv = ServerProcess(catalog_dir, data_dir, log_path, use_cli=True)
    _setup(srv.url)
    acked_by_thread: list[list] = [[] for _ in range(THREADS)]
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(srv.url, i, stop, acked_by_thread[i], errors))
               for i in range(THREADS)]
    try:
        for t in threads:
            t.start()
        # mid-load: once coupons are being spent and the budget has run out (on a
        # busy machine that takes longer than on a quiet one), a moment later
        deadline = time.monotonic() + LOAD_S_MAX
        while time.monotonic() < deadline and not _raced([x for per in acked_by_thread for x in list(per)]):
            time.sleep(0.05)
        time.sleep(0.3)
        srv.kill()
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        if srv.proc.poll() is None:
            srv.kill()
    assert not errors, errors
    acked = [x for per in acked_by_thread for x in per]
    codes = {res["body"]["error"]["code"] for _, res in acked if res["status"] >= 400}
    assert "budget_exhausted" in codes or "buyer_limit_reached" in codes, codes  # the race was run
    granted = [(cmd, res) for cmd, res in acked if cmd["op"] == "grant" and res["status"] == 201]
    spent = [(cmd, res) for cmd, res in acked if cmd["op"] == "checkout" and res["status"] == 201
             and cmd.get("coupons")]
    assert granted and spent

    srv = ServerProcess(catalog_dir, data_dir, log_path, use_cli=True)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            template = c.get("/v1/coupon-templates/1").json()
            assert len(granted) <= template["granted"] <= BUDGET
            coupons = [c.get(f"/v1/coupons/{k}").json() for k in range(1, template["granted"] + 1)]
            assert c.get(f"/v1/coupons/{template['granted'] + 1}").status_code == 404
            for cmd, res in granted:  # every acknowledged grant is there, as answered
                assert coupons[res["body"]["coupon"] - 1]["buyer"] == cmd["buyer"]
            per_buyer: dict[int, int] = {}
            for coupon in coupons:
                per_buyer[coupon["buyer"]] = per_buyer.get(coupon["buyer"], 0) + 1
            assert max(per_buyer.values()) <= PER_BUYER

            deal = c.get("/v1/deals/1").json()
            assert 0 <= deal["left"] <= DEAL_QTY and deal["sold"] + deal["reserved"] + deal["left"] == DEAL_QTY
            stats = c.get("/v1/stats").json()
            units: dict[int, int] = {}
            taken = 0
            for cid in range(1, stats["checkouts"] + 1):
                v = c.get(f"/v1/checkouts/{cid}").json()
                assert v["amount_fen"] == v.get("list_fen", v["amount_fen"]) - sum(v.get("discounts", {}).values())
                assert v["amount_fen"] == sum(o["amount_fen"] for o in v["orders"])
                if v["status"] in ("reserved", "paid"):
                    for line in v["lines"]:
                        if line["sku"] == DEAL_SKU and line.get("discounts", {}).get("deal"):
                            units[v["buyer"]] = units.get(v["buyer"], 0) + line["qty"]
                            taken += line["qty"]
            assert taken == deal["sold"] + deal["reserved"]
            assert max(units.values(), default=0) <= DEAL_PER_BUYER

            # every acknowledged command retried answers exactly its first result
            for i in range(0, len(acked), 2000):
                part = acked[i:i + 2000]
                r = c.post("/v1/batch", json={"commands": [cmd for cmd, _ in part]})
                for (cmd, first), again in zip(part, r.json()["results"]):
                    assert again == first, (cmd, first, again)
            assert c.get("/v1/ledger").json()["sum"] == 0
    finally:
        srv.kill()
