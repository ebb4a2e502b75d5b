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
import contextlib
import gc
import logging
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
from double11.gc_tuning import freeze_what_exists
from double11.link.frames import View
from double11.service import Festival, refusal
from double11.service.durability import storage_unavailable

_ENC = msgspec.json.Encoder()
log = logging.getLogger("double11.engine")
EMPTY_RESULTS = b'{"results":[]}'
_STOCK_PROBE_ITEM = np.dtype([("key", "<u8"), ("sku", "<i8"), ("role", "<i8"), ("actor", "<i8")])  # frames'


def json_batch_commands(body: bytes) -> list[Any]:
    """The commands of a JSON batch's body, `{"commands": [...]}`, each as it
    came (the engine checks them); the body refused whole otherwise."""
    obj = decode_object(body)
    commands = obj.get("commands")
    if type(commands) is not list:
        raise Double11Error(Result.invalid_request, 'body must be {"commands": [...]}')
    if len(commands) > limits.batch_commands_max:
        raise Double11Error(Result.batch_too_large, f"{len(commands)} commands > {limits.batch_commands_max}")
    return commands


class LocalFestival:
    """After a storage fault it answers every call 503 storage_unavailable
    and opens the festival again from its data folder every
    limits.storage_retry_s, until the folder can be written: then it serves
    the festival the log holds (`Festival.reopen`)."""

    def __init__(self, festival: Festival) -> None:
        self._festival = festival
        self._reads = FestivalReads()
        self.storage_faults = 0
        self._reopening: asyncio.Task | None = None
        # the event loop serving the calls (a fault comes from a call's write: it is known by then)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch(festival)

    # ------------------------------------------------------- storage faults
    def _watch(self, festival: Festival) -> None:
        festival.durability.on_fault.append(self._on_fault)

    def _on_fault(self) -> None:  # on whichever thread met it
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._faulted)

    def _faulted(self) -> None:
        self.storage_faults += 1
        if self._reopening is None and self._festival.data_dir is not None:
            self._reopening = asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        """Answers what is queued (refused), lets the failed festival go and
        opens its folder again until it can be written."""
        loop = asyncio.get_running_loop()
        failed = self._festival
        await failed.drain()
        failed.group_commit.stop()
        await loop.run_in_executor(None, failed.abandon)
        reopen = failed.reopener()
        self._festival = _Failed(failed)  # type: ignore[assignment]  # stands for it: refusals, health, close
        # its state may be held in cycles among what was frozen at the start: freed before
        # the folder is read again, so that memory never holds two festivals
        del failed
        gc.unfreeze()
        gc.collect()
        tries = 0
        while True:
            tries += 1
            try:
                festival = await loop.run_in_executor(None, reopen)
                break
            except (OSError, ValueError) as e:
                if tries == 1:
                    log.error("the data folder cannot be written yet (%s); trying again every %s s",
                              e, limits.storage_retry_s)
                await asyncio.sleep(limits.storage_retry_s)
        self._watch(festival)
        self._festival, self._reopening = festival, None
        freeze_what_exists()
        last = festival.log.next_seq - 1 if festival.log is not None else 0
        log.warning("the storage fault is over: the festival is open again from its snapshot and log, up to "
                    "record %s, the last one written; commands and reads are served", f"{last:,}")

    @property
    def festival(self) -> Festival:
        """The festival served; after a storage fault, until it is open again,
        a refusal (503 storage_unavailable) instead."""
        failure = self._festival.log_failure
        if failure is not None:
            raise storage_unavailable(failure)
        return self._festival

    @property
    def storage_fault(self) -> bool:
        return self._reopening is not None

    async def health(self) -> tuple[int, bytes]:
        """GET /healthz's answer: ok, or 503 storage_unavailable while the log cannot be written."""
        failure = self._festival.log_failure
        if failure is None:
            return Result.ok, b'{"status":"ok"}'
        return refusal(storage_unavailable(failure))

    def single(self, op: Op, target: int, body: bytes, principal: Principal = OPERATOR) -> asyncio.Future:
        """(result code, JSON answer) of one single request's command, once durable."""
        self._loop = self._loop or asyncio.get_running_loop()
        return self.festival.submit_single(op, target, body, principal)

    def singles(self, ops: np.ndarray, targets: np.ndarray, bodies: Bodies, roles: np.ndarray | None = None,
                actors: np.ndarray | None = None) -> asyncio.Future:
        """The same for many at once: their (result code, JSON answer) in order, as
        `engine.answers.Answers` (or a list, where some were refused before the engine)."""
        self._loop = self._loop or asyncio.get_running_loop()
        return self.festival.submit_singles(ops, targets, bodies, roles, actors)

    async def batch(self, body: bytes, binary: bool, principal: Principal = OPERATOR) -> tuple[int, bytes, bool]:
        """A batch request's answer: (result code, body, whether it is binary);
        a JSON body's results carry their HTTP statuses, as the Python API's do."""
        self._loop = self._loop or asyncio.get_running_loop()
        try:
            if binary:
                return Result.ok, await self.festival.submit_binary(body, principal), True
            commands = json_batch_commands(body)
            if not commands:
                return Result.ok, EMPTY_RESULTS, False
            # the engine answers each command on its own, a non-object one included
            return Result.ok, _ENC.encode({"results": await self.festival.submit(commands, principal)}), False
        except Double11Error as e:
            return (*refusal(e), False)

    async def view(self, which: int, id_: int = 0, principal: Principal = OPERATOR) -> tuple[int, bytes]:
        """A read of the state between two batches: (result code, JSON)."""
        try:
            festival = self.festival
        except Double11Error as e:  # a storage fault
            return refusal(e)
        return await self._reads.view(festival, which, id_, principal)

    async def sku_page(self, merchant: int, after: int, limit: int) -> tuple[int, bytes]:
        """GET /v1/skus: up to `limit` SKUs with an id over `after` (of
        `merchant` only, unless 0) in id order, and the next page's `after`:
        (Result.ok, JSON).  The query is checked by the HTTP front."""
        try:
            festival = self.festival
        except Double11Error as e:  # a storage fault
            return refusal(e)
        return await self._reads.sku_page(festival, merchant, after, limit)

    async def stock_probe(self, payload: bytes) -> tuple[int, bytes]:
        """The verdicts (engine/stock_probe.py) of the checkouts in `payload`
        (link.frames.STOCK_PROBE_ITEM each), a byte each: (Result.ok, bytes)."""
        items = np.frombuffer(payload, dtype=_STOCK_PROBE_ITEM)
        keys = scoped_keys(items["key"], items["role"].astype(np.uint8), items["actor"])
        try:
            verdicts = await self.festival.read(self.festival.reads.stock_probe_view, keys, items["sku"])
        except Double11Error as e:  # a storage fault
            return refusal(e)
        return Result.ok, verdicts.tobytes()

    async def metrics(self) -> dict[str, int | float]:
        faults: dict[str, int | float] = {"double11_storage_faults_total": self.storage_faults,
                                          "double11_storage_fault": int(self.storage_fault)}
        try:
            return {**await self.festival.read(self.festival.metrics), **faults}
        except Double11Error:  # a storage fault: the state's figures are not durable
            return faults

    async def drain(self) -> None:
        """Waits for the commands already queued (applied, durable, answered)."""
        if not await self._festival.drain():
            log.error("commands were still queued after %d s: closing anyway", limits.drain_s_max)

    def closed_short(self) -> bool:
        """Whether the festival closed without its last snapshot or in a storage fault."""
        durability = self._festival.durability
        return durability.log_failure is not None or durability.behind_snapshot()

    async def close(self) -> None:
        """Makes everything durable, snapshots and closes the festival (one
        being opened again after a storage fault is let go: its log holds
        everything acknowledged)."""
        if self._reopening is not None:
            self._reopening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopening
            if self._festival.log_failure is not None:
                return
        await asyncio.get_running_loop().run_in_executor(None, self._festival.close, True)


class FestivalReads:
    """The HTTP API's reads of a festival, answered as the front says them:
    a view by number (link.frames.View, or an area's), and a page of SKUs.
    Used by LocalFestival and by a cluster's unit (cluster/unit_service.py)."""

    def __init__(self) -> None:
        # by number: the read (a view of service.reads.Reads, by name), its code when there is no
        # such thing, and who may see it (the front checked the role; a view of another's thing
        # is answered as missing)
        self._views: dict[int, tuple[str, Result | None, Allowed | None, tuple]] = {
            View.SKU: ("sku_view", Result.unknown_sku, policy.ROUTES["/v1/skus/{sku}"], ()),
            View.CHECKOUT: ("checkout_view", Result.unknown_checkout, policy.ROUTES["/v1/checkouts/{checkout}"], ()),
            View.ORDER: ("order_view", Result.unknown_order, policy.ROUTES["/v1/orders/{order}"], ()),
            View.LEDGER: ("ledger_view", None, None, ()),
            View.STATS: ("stats_view", None, None, ()),
        }
        for read in areas.READS:  # the areas' views, by their numbers
            self._views[areas.READ_NUMBER[read.name]] = ("area_view", read.missing, read.allowed, (read.name,))
        self._listing: SkuListing | None = None

    def known(self, which: int) -> bool:
        return which in self._views

    async def view(self, festival: Festival, which: int, id_: int, principal: Principal) -> tuple[int, bytes]:
        """(result code, JSON) of view `which` of thing `id_`, as `principal` may see it."""
        name, missing, allowed, first = self._views[which]
        try:
            reads = festival.reads
            if missing is None:  # the ledger and the stats: always there
                return Result.ok, _ENC.encode(await reads.read(getattr(reads, name)))
            value = await reads.read(getattr(reads, name), *first, id_)
        except Double11Error as e:  # a storage fault
            return refusal(e)
        if value is None or (allowed is not None and not may_see(allowed, principal, value)):
            return refusal(Double11Error(missing))
        return Result.ok, _ENC.encode(value)

    async def sku_page(self, festival: Festival, merchant: int, after: int, limit: int) -> tuple[int, bytes]:
        try:
            page = await festival.read(self._sku_page, festival, merchant, after, limit)
        except Double11Error as e:  # a storage fault
            return refusal(e)
        return Result.ok, _ENC.encode(page)

    def _sku_page(self, festival: Festival, merchant: int, after: int, limit: int) -> dict[str, Any]:
        engine = festival.engine
        if self._listing is None:  # sorted once, on the first listing (the catalog never changes)
            self._listing = SkuListing(engine.catalog)
        rows, next_after = self._listing.page(after, limit, merchant or None)
        return views.sku_page(engine, rows, next_after)


class _Failed:
    """What stands for a festival whose log failed while its folder is
    opened again: its fault and its durability (which holds no state)."""

    def __init__(self, failed: Festival) -> None:
        self.log_failure = failed.log_failure
        self.data_dir = failed.data_dir
        self.durability = failed.durability

    async def drain(self) -> bool:
        return True  # its callers were answered before it was let go
