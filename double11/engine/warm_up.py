"""`compile_kernels()`: every compiled kernel the engine serves with, loaded
(or compiled) before the first request has to wait for one.

Numba compiles a kernel at its first call, for the types of that call.
`compiled.py` caches the machine code in __pycache__, but the first start on
a machine (a fresh clone, an upgrade) has nothing there, and compiling the
engine's kernels takes about 25 s of CPU here.  While that happened on the first
requests, a server answered almost nothing: the bench's first single-request
load on a fresh clone measured 0 accepted orders/s.

Here a throwaway engine over a four-SKU catalog takes every kind of command
through every lane once: JSON batches (dicts), the compact binary form,
single requests' bodies and replayed log records, then expiry, both kinds
of SKU index and an index that grows.  The arrays are of the same kinds as
serving passes (a kernel compiled for writable arrays compiles again for
read-only ones); `tests/test_warm_up.py` checks that serving compiles
nothing more afterwards.  Once per process: compiled code stays loaded.
"""

from __future__ import annotations

import functools

import msgspec
import numpy as np

from double11 import geo, limits
from double11.catalog import Catalog
from double11.config import FestivalConfig
from double11.engine import views
from double11.engine.answers import answers
from double11.engine.batch import CommandBatch, Op
from double11.engine.encode import encode_commands
from double11.engine.hashindex import HashIndex, StaticIndex
from double11.engine.json_commands import Bodies, encode_bodies
from double11.engine.machine import Engine
from double11.engine.wire import encode_results


def _catalog() -> Catalog:
    cn = geo.encode("CN")
    return Catalog(
        merchant_id=np.array([11, 12], dtype=np.int64), merchant_name=["a", "b"],
        merchant_marketplace=np.zeros(2, dtype=np.uint8), merchant_country=np.full(2, cn, dtype=np.uint16),
        brand_id=np.array([21, 22], dtype=np.int64), brand_name=["c", "d"],
        brand_international=np.array([False, True]), brand_origin=np.full(2, cn, dtype=np.uint16),
        sku_id=np.arange(1, 5, dtype=np.int64), sku_merchant=np.array([11, 11, 12, 12], dtype=np.int64),
        sku_brand=np.array([21, 22, 21, 22], dtype=np.int64), sku_price_fen=np.full(4, 100, dtype=np.int64),
        sku_stock=np.full(4, 10, dtype=np.int64))


def _checkout(key: str, *skus: int, op: bool = True) -> dict:
    body = {"buyer": 7, "country": "CN", "channel": "mobile", "idempotency_key": key,
            "lines": [{"sku": s, "qty": 1} for s in skus]}
    return {"op": "checkout", **body} if op else body


@functools.cache
def compile_kernels() -> None:
    engine = Engine(_catalog(), FestivalConfig(expected_checkouts=64))
    now = engine.config.festival_start_ms

    # JSON batches: checkouts (two merchants; unknown SKU; out of stock), a restock
    dicts = encode_commands([_checkout("a", 1, 3), _checkout("b", 2), _checkout("c", 9),
                             {**_checkout("d", 4), "lines": [{"sku": 4, "qty": 11}]},
                             {"op": "restock", "sku": 4, "qty": 1, "idempotency_key": "e"}])
    code, ref = engine.apply(dicts, now)
    views.results(engine, dicts, code, ref, 0, len(code))
    paid, cancelled = int(ref[0]), int(ref[1])
    amount = int(engine.checkouts.rows["amount"][paid - 1])

    # the compact binary form, as a request (checked, copied) and as a log record replayed (read-only)
    pays = encode_commands([{"op": "pay", "checkout": paid, "amount_fen": amount, "idempotency_key": "f"},
                            {"op": "cancel", "checkout": cancelled, "idempotency_key": "g"}])
    binary = CommandBatch.from_bytes(pays.to_bytes())
    code, ref = engine.apply(binary, now)
    encode_results(engine, binary, code, ref)
    engine.apply(CommandBatch.from_bytes(dicts.to_bytes(), trusted=True), now)  # retries, by now

    # single requests' bodies, alone and in a group commit with a JSON batch
    first_order = int(engine.checkouts.rows["order_start"][paid - 1]) + 1
    # a confirmation, a refund, a retry, a key reused with another body, a body that is not an object
    body_dicts = [{"idempotency_key": "h"}, {"idempotency_key": "i"}, _checkout("a", 1, 3, op=False),
                  _checkout("a", 2, op=False)]
    bodies = Bodies.of([msgspec.json.encode(b) for b in body_dicts] + [b"[]"])
    ops = np.array([Op.confirm, Op.refund, Op.checkout, Op.checkout, Op.checkout], dtype=np.uint8)
    singles, _ = encode_bodies(bodies, ops, np.array([first_order, first_order + 1, 0, 0, 0], dtype=np.int64))
    for batch in (singles, CommandBatch.concat([singles, encode_commands([_checkout("j", 2)])])):
        code, ref = engine.apply(batch, now)
        answers(engine, batch, code, ref, 0, len(code))

    _promotions(engine, now)

    # a reserved checkout expires; the SKU index of sparse ids; an index grows
    engine.apply(encode_commands([]), now + engine.config.payment_timeout_ms + 1)
    StaticIndex(np.array([1, 1 << 40], dtype=np.int64)).lookup(np.array([1, 2], dtype=np.int64))
    HashIndex(16).find_or_claim(np.arange(1, 2000, dtype=np.uint64))


def _promotions(engine: Engine, now: int) -> None:
    """Promotions through every lane: operator commands and grants (binary,
    checked), checkouts priced by a deal, a store and a platform coupon and
    a threshold (JSON and a single request's body), then paid, cancelled,
    refunded; one left reserved expires with the rest."""
    always = {"grant_from": 0, "grant_until": limits.festival_time_ms_max,
              "use_from": 0, "use_until": limits.festival_time_ms_max}
    setup = encode_commands([
        {"op": "coupon_template", "idempotency_key": "p1", "kind": "store", "merchant": 11, "discount_fen": 10,
         "min_spend_fen": 0, "budget_count": 10, **always},
        {"op": "coupon_template", "idempotency_key": "p2", "kind": "platform", "discount_fen": 10,
         "min_spend_fen": 0, "budget_count": 10, "per_buyer_max": 5, **always},
        {"op": "threshold_discount", "idempotency_key": "p3", "every_fen": 100, "off_fen": 5, "merchants": [11],
         "from": 0, "until": limits.festival_time_ms_max},
        {"op": "deal", "idempotency_key": "p4", "sku": 2, "price_fen": 50, "qty": 5, "per_buyer_max": 3, "from": 0,
         "until": limits.festival_time_ms_max, "kind": "flash"},
        *({"op": "grant", "idempotency_key": f"p{5 + k}", "template": 1 + (k > 0), "buyer": 7, "source": "warm-up"}
          for k in range(4)),
    ])
    binary = CommandBatch.from_bytes(setup.to_bytes())
    code, ref = engine.apply(binary, now)
    views.results(engine, binary, code, ref, 0, len(code))
    coupons = ref[4:].tolist()
    engine.apply(CommandBatch.from_bytes(setup.to_bytes(), trusted=True), now)  # as replayed (read-only): retries
    priced = encode_commands([{**_checkout("q", 1, 2), "coupons": coupons[:2]},
                              {**_checkout("r", 2), "coupons": coupons[2:3]}])
    code, ref = engine.apply(priced, now)
    views.results(engine, priced, code, ref, 0, len(code))
    answers(engine, priced, code, ref, 0, len(code))
    encode_results(engine, priced, code, ref)
    paid, cancelled = int(ref[0]), int(ref[1])
    payable = int(views.checkout(engine, paid)["amount_fen"])  # type: ignore[index]
    order = int(engine.checkouts.rows["order_start"][paid - 1]) + 1
    life = encode_commands([{"op": "pay", "checkout": paid, "amount_fen": payable, "idempotency_key": "s"},
                            {"op": "cancel", "checkout": cancelled, "idempotency_key": "t"},
                            {"op": "refund", "order": order, "idempotency_key": "u"}])
    engine.apply(life, now)
    body = msgspec.json.encode({**_checkout("v", 2, op=False), "coupons": coupons[3:]})
    singles, _ = encode_bodies(Bodies.of([body]), np.array([Op.checkout], dtype=np.uint8),
                               np.zeros(1, dtype=np.int64))
    code, ref = engine.apply(singles, now)
    answers(engine, singles, code, ref, 0, len(code))
