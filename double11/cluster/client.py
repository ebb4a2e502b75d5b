"""The cluster as one festival, for a gateway's binary batches: each batch
split by unit (router.py), the parts sent to the units' primaries at once
over NATS (unit_requests.py), the answers merged in the batch's order.

A part is sent again, with the same bytes, while its unit has no primary (no
responder: the standby is taking over), its primary is stepping down or its
stream is electing a leader (503 storage_unavailable), or the answer did
not come in time: the idempotency keys make the retry answer the first
result, so a command is never done twice.  After `limits.cluster_retry_s_max`
the error is raised.

A promotions definition in a batch (a coupon template, a threshold
discount, a deal) goes to every unit, in the journal's order
(definitions.py), between the commands before it and those after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client

from double11 import limits
from double11.access.roles import OPERATOR, Principal
from double11.cluster.buckets import open_bucket
from double11.cluster.definitions import (
    DEFINITIONS_BUCKET,
    Definition,
    DefinitionSender,
    Journal,
    KvJournal,
    split_batch,
)
from double11.cluster.router import joined, merge, route, segments, take
from double11.cluster.slots import SlotMap, read_slot_map
from double11.cluster.unit_requests import ALIVE, ask, principal_headers
from double11.engine.batch import CommandBatch
from double11.errors import Double11Error, Result

_RETRIED = (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError)


class ClusterClient:
    def __init__(self, nc: Client, slot_map: SlotMap) -> None:
        self.nc, self.slot_map = nc, slot_map
        self.retries = 0  # parts sent again (a failover, an election)
        self._definitions: DefinitionSender | None = None

    @classmethod
    async def connect(cls, nc: Client) -> ClusterClient:
        return cls(nc, await read_slot_map(nc))

    async def submit(self, batch: bytes, principal: Principal = OPERATOR,
                     retry_s_max: float = limits.cluster_retry_s_max) -> bytes:
        """A binary batch's binary results, in the cluster's ids; its
        commands sent on behalf of `principal` (the units check whose things
        they name)."""
        whole = CommandBatch.from_bytes(batch)
        headers = principal_headers(principal)
        runs = segments(whole, self.slot_map)
        if len(runs) <= 1 and not (runs and runs[0][1]):
            return await self._routed(whole, headers, retry_s_max)
        results = []
        for places, defined in runs:
            part = take(whole, places)
            if defined:
                results.append(await self._defined(part, headers, retry_s_max))
            else:
                results.append(await self._routed(part, headers, retry_s_max))
        return joined(results)

    async def _routed(self, batch: CommandBatch, headers: dict[str, str] | None, retry_s_max: float) -> bytes:
        routed = route(batch, self.slot_map)
        answers = await asyncio.gather(*(self.send(p.unit, "batch", p.batch.to_bytes(), headers, retry_s_max)
                                         for p in routed.parts))
        return merge(routed, list(answers))

    async def _defined(self, batch: CommandBatch, headers: dict[str, str] | None, retry_s_max: float) -> bytes:
        """One definition's binary results: unit 0's (every unit's are alike)."""
        units = len(self.slot_map.units)
        split = split_batch(batch, units)
        payloads = ([b.to_bytes() for b in split] if split is not None
                    else [batch.to_bytes()] + [b""] * (units - 1))
        answers = await self.define(Definition("batch", payloads, headers), retry_s_max)
        return answers[0]

    async def define(self, definition: Definition, retry_s_max: float = limits.cluster_retry_s_max) -> list[bytes]:
        """Each unit's answer to a definition sent to every unit in the journal's order."""
        if self._definitions is None:
            self._definitions = DefinitionSender(await self.journal())

        async def send(unit: int, request: str, payload: bytes, headers: dict[str, str] | None) -> bytes:
            return await self.send(unit, request, payload, headers, retry_s_max)

        return await self._definitions.define(definition, send)

    async def journal(self) -> Journal:
        """The definitions' journal (the KV bucket)."""
        return KvJournal(await open_bucket(self.nc, DEFINITIONS_BUCKET))

    async def send(self, unit: int, request: str, data: bytes, headers: dict[str, str] | None = None,
                   retry_s_max: float = limits.cluster_retry_s_max) -> bytes:
        """A request to unit number `unit`, sent again while it fails over (send_to_unit)."""
        return await send_to_unit(self.nc, self.slot_map.units[unit], data, self._count_retry, request, headers,
                                  retry_s_max)

    def _count_retry(self) -> None:
        self.retries += 1


async def send_to_unit(nc: Client, unit: str, data: bytes, on_retry: Callable[[], None] = lambda: None,
                       request: str = "batch", headers: dict[str, str] | None = None,
                       retry_s_max: float = limits.cluster_retry_s_max) -> bytes:
    """A request (a binary batch by default) to the unit's primary, sent
    again while it fails over, for at most retry_s_max."""
    deadline = time.monotonic() + retry_s_max
    while True:
        try:
            return await answer_while_alive(nc, unit, request, data, headers)
        except _RETRIED as exc:
            error: BaseException = exc
        except Double11Error as exc:
            if exc.code != Result.storage_unavailable:
                raise
            error = exc
        if time.monotonic() > deadline:
            raise Double11Error(Result.storage_unavailable, message=f"unit {unit} did not answer within "
                                f"{retry_s_max:g} s ({type(error).__name__}: {error})")
        on_retry()
        await asyncio.sleep(limits.unit_lease_poll_s)


async def answer_while_alive(nc: Client, unit: str, request: str, data: bytes,
                             headers: dict[str, str] | None = None) -> bytes:
    """One try: the unit's answer within limits.unit_answer_s_max, or the
    try ends with NoRespondersError as soon as nobody serves the unit any
    more.  A primary killed after it took a request never answers it, and
    its unit's subjects lose their only subscriber with its connection: a
    request pending longer than limits.unit_alive_check_s asks whether the
    unit is served, so a try ends about when its primary died, not
    unit_answer_s_max after it was sent (the wait that set a failover's
    time, not the standby's promotion)."""
    asked = asyncio.ensure_future(ask(nc, unit, request, data, limits.unit_answer_s_max, headers))
    try:
        while True:
            done, _ = await asyncio.wait({asked}, timeout=limits.unit_alive_check_s)
            if done:
                return asked.result()
            with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):  # served, only slow: wait on
                await ask(nc, unit, ALIVE, b"", limits.unit_alive_check_s)
    finally:
        asked.cancel()
