"""The engine process loads every compiled kernel before it says it is ready
(`engine.warm_up.compile_kernels`, `link.engine.warm_up_link`): serving
afterwards compiles nothing more.

Checked as on a machine that has never compiled them (an empty Numba cache
folder: a fresh clone), in a fresh interpreter: every cached kernel but the
few that serving never calls is compiled by the warm-up; then a festival on
a catalog read from files takes every lane of the engine process (single
requests, JSON and binary batches and views through the link, the in-process
API, a restart that loads its snapshot and one that replays its log, a promotion
among its records), and no kernel may gain a compiled signature meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# cached kernels no serving lane calls (so the warm-up leaves them alone)
NOT_SERVED = {
    "double11.engine.counters._claim_each",  # ScarceCounters.claim: the general claim API, for later issues
}

SCRIPT = r'''
import asyncio, json, sys, tempfile
from pathlib import Path

import msgspec
import numba

from double11.engine.warm_up import compile_kernels
from double11.link.engine import EngineLink, warm_up_link

compile_kernels()
warm_up_link()


def kernels():
    # compiled.py's kernels and helpers: the dispatchers with a cache (its
    # inlined functions have none: they are compiled into their callers)
    found = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("double11."):
            continue
        for attr, obj in vars(module).items():
            if (isinstance(obj, numba.core.dispatcher.Dispatcher) and obj.__module__ == name
                    and type(obj._cache).__name__ != "NullCache"):
                found[f"{name}.{attr}"] = obj
    return found


warmed = {name: len(k.signatures) for name, k in kernels().items()}

from double11 import limits
from double11.catalog.files import load_catalog, save_catalog
from double11.catalog.generate import generate_catalog
from double11.config import FestivalConfig
from double11.engine.batch import Op
from double11.engine.encode import encode_commands
from double11.link.frames import CALL, Kind, View
from double11.link.local import LocalFestival
from double11.service import Festival

work = Path(tempfile.mkdtemp())
save_catalog(generate_catalog(merchants=5, skus=40, seed=3), work / "catalog")
catalog = load_catalog(work / "catalog")
skus = [int(s) for s in catalog.sku_id[:6]]
config = FestivalConfig(expected_checkouts=256, prefault_memory=True)


def checkout(key, *lines):
    return {"buyer": 5, "country": "CN", "channel": "mobile", "idempotency_key": key,
            "lines": [{"sku": s, "qty": 1} for s in lines]}


def command(key, *lines):
    return checkout(key, *lines) | {"op": "checkout"}


def call(kind, number, op, target, payload):
    return CALL.pack(int(kind), number, int(op), target, 1, 0, len(payload)) + payload


class Transport:
    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(data)

    def is_closing(self):
        return False


async def through_the_link(festival):
    link = EngineLink(LocalFestival(festival), asyncio.get_running_loop().create_future())
    link.transport = Transport()
    singles = [call(Kind.SINGLE, i + 1, Op.checkout, 0, msgspec.json.encode(checkout(f"s{i}", skus[i % 6], skus[5])))
               for i in range(40)]
    link.data_received(b"".join(singles))
    await festival.drain()
    first = festival.execute([command("x", skus[0])])[0]["body"]
    order = first["orders"][0]["order"]
    more = [
        call(Kind.SINGLE, 50, Op.pay, first["checkout"],
             b'{"amount_fen": %d, "idempotency_key": "p"}' % first["amount_fen"]),
        call(Kind.SINGLE, 51, Op.confirm, order, b'{"idempotency_key": "c"}'),
        call(Kind.SINGLE, 52, Op.refund, order, b'{"idempotency_key": "r"}'),
        call(Kind.SINGLE, 53, Op.cancel, 2, b'{"idempotency_key": "k"}'),
        call(Kind.SINGLE, 54, Op.restock, skus[1], b'{"qty": 3, "idempotency_key": "t"}'),
        call(Kind.SINGLE, 55, Op.checkout, 0, b'[1]'),
        call(Kind.BATCH, 56, 0, 0, msgspec.json.encode({"commands": [command("b1", skus[2]), command("b2", 999)]})),
        call(Kind.BATCH, 57, 1, 0, encode_commands([command("b3", skus[3])]).to_bytes()),
        call(Kind.VIEW, 58, View.SKU, skus[0], b""),
        call(Kind.VIEW, 59, View.CHECKOUT, 1, b""),
        call(Kind.VIEW, 60, View.ORDER, 1, b""),
        call(Kind.VIEW, 61, View.STATS, 0, b""),
        call(Kind.METRICS, 62, 0, 0, b""),
    ]
    for frame in more:
        link.data_received(frame)
        await asyncio.sleep(0)
    await festival.drain()
    for _ in range(50):
        await asyncio.sleep(0.01)
    festival.execute_binary(encode_commands([command("e", skus[4])]).to_bytes())


import uvloop

data = work / "data"
festival = Festival.open(catalog, data_dir=data, config=config)
uvloop.run(through_the_link(festival))
festival.close(snapshot=True)
festival = Festival.open(catalog, data_dir=data, config=config)  # loads the snapshot
# and a promotion naming a SKU (its id looked up into a row), so the replay below
# applies a read-only batch from the log whose args the engine rewrote
after = festival.execute([command("after", skus[0]),
                          {"op": "deal", "idempotency_key": "after-deal", "sku": skus[1], "price_fen": 1, "qty": 1,
                           "per_buyer_max": 1, "from": 0, "until": limits.festival_time_ms_max, "kind": "flash"}])
assert [a["status"] for a in after] == [201, 201], after
festival.close(snapshot=False)
festival = Festival.open(catalog, data_dir=data, config=config)  # and replays the log
festival.close(snapshot=False)

served = {name: len(k.signatures) for name, k in kernels().items()}
print(json.dumps({"unloaded": sorted(n for n, count in warmed.items() if count == 0),
                  "compiled_later": sorted(n for n in served if served[n] > warmed.get(n, 0))}))
'''


def test_after_the_warm_up_serving_compiles_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "numba")})
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["compiled_later"] == [], "serving compiled these after the warm-up"
    assert set(found["unloaded"]) == NOT_SERVED, "the warm-up left these kernels uncompiled"
