"""The HTTP API's operations on a festival in this process.

Each takes what an HTTP request carries (a body as it came, a path id) and
gives what its answer carries: (result code, body) with the body in JSON,
or in the binary batch format where `binary` says so; the front says the
code as an HTTP status.  Refused input is answered,
not raised, so the engine process can send every answer down the link the
same way; only a single command's future may fail (with a Double11Error).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from double11 import areas, limits
from double11.access import policy
from double11.access.commands import scoped_keys
from double11.access.reads import may_see
from double11.access.roles import OPERATOR, Allowed, Principal
from double11.catalog.listing import SkuListing
from double11.engine import views
from double11.engine.batch import Op
from double11.engine.encode import decode_object
from double11.engine.json_commands import Bodies
from double11.errors import Double11Error, Result
from double11.link.frames import View
from double11.service import Festival, refusal

_ENC = msgspec.json.Encoder()
log = logging.getLogger("double11.engine")
_EMPTY_RESULTS = b'{"results":[]}'
_STOCK_PROBE_ITEM = np.dtype([("key", "<u8"), ("sku", "<i8"), ("role", "<i8"), ("actor", "<i8")])  # frames'


class LocalFestival:
    def __init__(self, festival: Festival) -> None:
        self.festival = festival
        f = festival
        # by number: the read, its code when there is no such thing, and who may see it (the
        # front checked the role; a view of another's thing is answered as missing)
        self._views: dict[int, tuple[Callable[..., Any], Result | None, Allowed | None]] = {
            View.SKU: (f.sku, Result.unknown_sku, policy.ROUTES["/v1/skus/{sku}"]),
            View.CHECKOUT: (f.checkout, Result.unknown_checkout, policy.ROUTES["/v1/checkouts/{checkout}"]),
            View.ORDER: (f.order, Result.unknown_order, policy.ROUTES["/v1/orders/{order}"]),
            View.LEDGER: (f.ledger, None, None),
            View.STATS: (f.stats, None, None),
        }
        for read in areas.READS:  # the areas' views, by their numbers
            self._views[areas.READ_NUMBER[read.name]] = (functools.partial(f.view, read.name), read.missing,
                                                        read.allowed)
        self._listing: SkuListing | None = None

    def single(self, op: Op, target: int, body: bytes, principal: Principal = OPERATOR) -> asyncio.Future:
        """(result code, JSON answer) of one single request's command, once durable."""
        return self.festival.submit_single(op, target, body, principal)

    def singles(self, ops: np.ndarray, targets: np.ndarray, bodies: Bodies, roles: np.ndarray | None = None,
                actors: np.ndarray | None = None) -> asyncio.Future:
        """The same for many at once: their (result code, JSON answer) in order, as
        `engine.answers.Answers` (or a list, where some were refused before the engine)."""
        return self.festival.submit_singles(ops, targets, bodies, roles, actors)

    async def batch(self, body: bytes, binary: bool, principal: Principal = OPERATOR) -> tuple[int, bytes, bool]:
        """A batch request's answer: (result code, body, whether it is binary);
        a JSON body's results carry their HTTP statuses, as the Python API's do."""
        try:
            if binary:
                return Result.ok, await self.festival.submit_binary(body, principal), True
            obj = decode_object(body)
            commands = obj.get("commands")
            if type(commands) is not list:
                raise Double11Error(Result.invalid_request, 'body must be {"commands": [...]}')
            if len(commands) > limits.batch_commands_max:
                raise Double11Error(Result.batch_too_large, f"{len(commands)} commands > {limits.batch_commands_max}")
            if not commands:
                return Result.ok, _EMPTY_RESULTS, False
            # the engine answers each command on its own, a non-object one included
            return Result.ok, _ENC.encode({"results": await self.festival.submit(commands, principal)}), False
        except Double11Error as e:
            return (*refusal(e), False)

    async def view(self, which: int, id_: int = 0, principal: Principal = OPERATOR) -> tuple[int, bytes]:
        """A read of the state between two batches: (result code, JSON)."""
        get, missing, allowed = self._views[which]
        if missing is None:  # the ledger and the stats: always there
            return Result.ok, _ENC.encode(await self.festival.read(get))
        value = await self.festival.read(get, id_)
        if value is None or (allowed is not None and not may_see(allowed, principal, value)):
            return refusal(Double11Error(missing))
        return Result.ok, _ENC.encode(value)

    async def sku_page(self, merchant: int, after: int, limit: int) -> tuple[int, bytes]:
        """GET /v1/skus: up to `limit` SKUs with an id over `after` (of
        `merchant` only, unless 0) in id order, and the next page's `after`:
        (Result.ok, JSON).  The query is checked by the HTTP front."""
        page = await self.festival.read(self._sku_page, merchant, after, limit)
        return Result.ok, _ENC.encode(page)

    def _sku_page(self, merchant: int, after: int, limit: int) -> dict[str, Any]:
        engine = self.festival.engine
        if self._listing is None:  # sorted once, on the first listing (the catalog never changes)
            self._listing = SkuListing(engine.catalog)
        rows, next_after = self._listing.page(after, limit, merchant or None)
        return views.sku_page(engine, rows, next_after)

    async def stock_probe(self, payload: bytes) -> tuple[int, bytes]:
        """The verdicts (engine/stock_probe.py) of the checkouts in `payload`
        (link.frames.STOCK_PROBE_ITEM each), a byte each: (Result.ok, bytes)."""
        items = np.frombuffer(payload, dtype=_STOCK_PROBE_ITEM)
        keys = scoped_keys(items["key"], items["role"].astype(np.uint8), items["actor"])
        verdicts = await self.festival.read(self.festival.reads.stock_probe, keys, items["sku"])
        return Result.ok, verdicts.tobytes()

    async def metrics(self) -> dict[str, int | float]:
        return self.festival.metrics()

    async def drain(self) -> None:
        """Waits for the commands already queued (applied, durable, answered)."""
        if not await self.festival.drain():
            log.error("commands were still queued after %d s: closing anyway", limits.drain_s_max)

    async def close(self) -> None:
        """Makes everything durable, snapshots and closes the festival."""
        await asyncio.get_running_loop().run_in_executor(None, self.festival.close, True)


