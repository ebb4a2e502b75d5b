"""A unit's node on NATS: the requests it answers (subjects: unit_requests.py).

`UnitService` holds the node's own connection and event loop (a LoopThread).
From its start it answers `d11.cluster.status` in whatever role the node is
(starting, standby, primary, stepping down).  `serve(festival)` makes it the
unit's primary on NATS: it subscribes to the unit's subjects and starts the
unit's figures publisher (figures.py); a standby calls it only once promoted,
so a standby never answers its unit's requests.  `stop_serving` unsubscribes
first (no new request reaches this node), then waits for the requests in
flight to be answered, stops the group commit and closes the publisher, in
that order, before the node closes or abandons its festival.

Batches go through the festival's group commit (`submit_binary`), on this
loop: requests arriving while a batch is on its way to the stream are
gathered into the next one, so batches in flight are pipelined rather than
applied one at a time.  Each request is handled by a task of its own for the
same reason (a subscription's callback is awaited message by message).
Requests carry no token: the front checks who sends what before it routes,
and the units trust their NATS cluster (its own network, or its accounts).
A front's requests say on whose behalf they come (the principal header), and
the unit checks whose thing each command names, as one machine's engine does.
Singles, views and JSON commands (a cluster's HTTP front: front_link.py) are
answered as the engine process answers its front (link/engine.py, link/local.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from double11 import limits
from double11.cluster.figures import FiguresPublisher
from double11.cluster.quotas import ReportsSent, StockReport
from double11.cluster.standby import Standby, state_hash
from double11.cluster.stream_log import LoopThread, check_unit, connect, stream_name
from double11.cluster.unit import UnitFestival
from double11.cluster.unit_requests import (
    ALIVE,
    ERROR_HEADER,
    SINGLE,
    STATUS_SUBJECT,
    VIEW,
    answered,
    principal_of,
    unit_subject,
)
from double11.errors import Double11Error, Result
from double11.link.frames import SKU_PAGE_QUERY, View
from double11.link.local import FestivalReads
from double11.service import refusal

logger = logging.getLogger("double11.cluster")
Handler = Callable[[Msg], Awaitable[bytes]]


def _stock_report(festival: UnitFestival, report_id: int) -> StockReport:  # under the read barrier
    return StockReport.of(festival.engine, festival.stream_log.next_seq - 1, report_id)


def _state(festival: UnitFestival, with_hash: bool) -> dict[str, Any]:  # under the read barrier
    state: dict[str, Any] = {"seq": festival.stream_log.next_seq - 1}
    if with_hash:
        state["state_hash"] = state_hash(festival.engine)
    return state


def _since(payload: bytes) -> int:
    """The report a stock request says its asker holds (0: none: a whole report)."""
    since = _field(payload, "since", 0, None, lambda value: type(value) is int and value >= 0,
                   'a stock request is empty or {"since": <report id>}')
    return int(since)


def _wants_hash(payload: bytes) -> bool:
    return bool(_field(payload, "hash", False, False, lambda value: isinstance(value, bool),
                       'a state request is empty or {"hash": true}'))


def _field(payload: bytes, name: str, empty: Any, absent: Any, valid: Callable[[Any], bool], words: str) -> Any:
    """One field of a request that is nothing or a JSON object: `empty` for
    nothing, `absent` where the object lacks it; anything not `valid` is
    refused in `words`."""
    if not payload.strip():
        return empty
    try:
        asked = json.loads(payload)
    except ValueError:
        asked = None
    value = asked.get(name, absent) if isinstance(asked, dict) else None
    if not isinstance(asked, dict) or not valid(value):
        raise Double11Error(Result.invalid_request, message=words)
    return value


class UnitService:
    """The NATS side of unit `unit`'s node (its folder: data_dir)."""

    def __init__(self, urls: list[str], unit: str, data_dir: str | Path) -> None:
        self.urls, self.unit, self.data_dir = list(urls), check_unit(unit), str(data_dir)
        self.role = "starting"
        self.festival: UnitFestival | None = None
        self.standby: Standby | None = None
        self._figures: FiguresPublisher | None = None
        self._subscriptions: list[Subscription] = []
        self._requests: set[asyncio.Task[None]] = set()
        self._reads = FestivalReads()
        self._reports = ReportsSent()
        self._io = LoopThread(f"double11-service-{unit}")
        try:
            self._nc, self._js = self._io.call(self._open(), limits.stream_connect_s_max * 2)
        except BaseException as exc:
            self._io.close()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            reason = f"{type(exc).__name__} {exc}".rstrip()
            raise ConnectionError(f"unit {unit} cannot serve: no NATS server answered at {', '.join(urls)} "
                                  f"({reason})") from None

    async def _open(self) -> tuple[Client, JetStreamContext]:
        nc = await asyncio.wait_for(connect(self.urls), limits.stream_connect_s_max)
        await nc.subscribe(STATUS_SUBJECT, cb=self._spawning(self._status))
        await nc.flush()
        return nc, nc.jetstream(timeout=limits.cluster_status_wait_s)

    # ------------------------------------------------------------ roles
    def follow(self, standby: Standby) -> None:
        """The node is its unit's standby (it answers the status only)."""
        self.standby, self.role = standby, "standby"

    def serve(self, festival: UnitFestival) -> None:
        """The node is its unit's primary: it answers the unit's requests and publishes its figures."""
        self._figures = FiguresPublisher(festival, self.urls, self.unit)
        self.festival, self.standby, self.role = festival, None, "primary"
        self._io.call(self._subscribe(), limits.stream_connect_s_max)

    async def _subscribe(self) -> None:
        handlers: dict[str, Handler] = {"batch": self._batch, "stock": self._stock, "state": self._state,
                                        "config": self._config, "single": self._single, "view": self._view,
                                        "commands": self._commands, ALIVE: self._alive}
        for request, handler in handlers.items():
            self._subscriptions.append(await self._nc.subscribe(unit_subject(self.unit, request),
                                                                cb=self._spawning(handler)))
        await self._nc.flush()

    def stop_serving(self, role: str) -> None:
        """Takes no more requests (unsubscribed first), answers those in
        flight, stops the group commit and closes the figures publisher; the
        node then closes (or abandons) its festival.  `role`: what the node
        says it is meanwhile (stepping_down, closing)."""
        self.role = role
        if self.festival is not None:
            self._io.call(self._unsubscribe_and_drain(self.festival), limits.drain_s_max * 2)
        if self._figures is not None:
            figures, self._figures = self._figures, None
            figures.close()  # publishes the unit's last figures (none after a storage fault: said in the log)

    async def _unsubscribe_and_drain(self, festival: UnitFestival) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._nc.flush(timeout=int(limits.stream_ack_wait_s))
        await festival.drain()
        if self._requests:
            await asyncio.wait(set(self._requests), timeout=limits.drain_s_max)
        festival.group_commit.stop()

    def close(self) -> None:
        """Disconnects (after stop_serving, if it served)."""
        if self._io.loop.is_closed():
            return
        try:
            self._io.call(self._nc.close(), limits.nats_stop_s_max)
        except Exception:  # noqa: BLE001 (the connection is gone either way)
            pass
        finally:
            self._io.close()

    # ------------------------------------------------------------ requests
    def _spawning(self, handler: Handler) -> Callable[[Msg], Awaitable[None]]:
        """A subscription callback that answers each request in a task of its own."""
        async def callback(msg: Msg) -> None:
            task = asyncio.get_running_loop().create_task(self._answer(msg, handler))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
        return callback

    async def _answer(self, msg: Msg, handler: Handler) -> None:
        if not msg.reply:
            return  # a publish, not a request: nobody to answer
        headers = None
        try:
            data = await handler(msg)
        except Double11Error as exc:
            data, headers = json.dumps(exc.body()).encode(), {ERROR_HEADER: str(int(exc.code))}
        except Exception as exc:  # a bug of ours: the asker gets a refusal, not a wait until its timeout
            logger.exception("unit %s: a request on %s failed", self.unit, msg.subject)
            error = Double11Error(Result.internal, f"{type(exc).__name__}: {exc}")
            data, headers = json.dumps(error.body()).encode(), {ERROR_HEADER: str(int(Result.internal))}
        with contextlib.suppress(nats.errors.Error):  # the asker's connection went away: nobody to tell
            await self._nc.publish(msg.reply, data, headers=headers)

    def _serving(self) -> UnitFestival:
        if self.festival is None or self.role != "primary":
            raise Double11Error(Result.storage_unavailable,
                                message=f"unit {self.unit}'s node is {self.role}, not its primary: ask again")
        return self.festival

    async def _batch(self, msg: Msg) -> bytes:
        return await self._serving().submit_binary(msg.data, principal_of(msg))

    async def _alive(self, msg: Msg) -> bytes:
        return b""  # subscribed only while it serves: an answer says the unit has a primary

    async def _config(self, msg: Msg) -> bytes:
        return msgspec.json.encode(self._serving().engine.config)

    async def _single(self, msg: Msg) -> bytes:
        """A single request's command (SINGLE, then its body): refusals of
        the body are answers; a storage fault is a refusal of the request,
        which the front sends again."""
        festival, principal = self._serving(), principal_of(msg)
        if len(msg.data) < SINGLE.size:
            raise Double11Error(Result.invalid_request, message=f"a single request starts with {SINGLE.size} bytes")
        op, target = SINGLE.unpack_from(msg.data)
        try:
            code, body = await festival.submit_single(op, target, msg.data[SINGLE.size:], principal)
        except Double11Error as exc:
            if exc.code == Result.storage_unavailable:
                raise
            code, body = refusal(exc)
        return answered(code, body)

    async def _view(self, msg: Msg) -> bytes:
        """A view (VIEW: its number and id; a page of SKUs: its query after it)."""
        festival, principal = self._serving(), principal_of(msg)
        if len(msg.data) < VIEW.size:
            raise Double11Error(Result.invalid_request, message=f"a view request starts with {VIEW.size} bytes")
        which, id_ = VIEW.unpack_from(msg.data)
        if which == View.SKU_PAGE and len(msg.data) == VIEW.size + SKU_PAGE_QUERY.size:
            code, body = await self._reads.sku_page(festival, *SKU_PAGE_QUERY.unpack_from(msg.data, VIEW.size))
        elif self._reads.known(which):
            code, body = await self._reads.view(festival, which, id_, principal)
        else:
            raise Double11Error(Result.invalid_request, message=f"no view number {which}")
        return answered(code, body)

    async def _commands(self, msg: Msg) -> bytes:
        """A JSON batch's commands (checked whole by the front): their results, in order."""
        festival, principal = self._serving(), principal_of(msg)
        try:
            commands = msgspec.json.decode(msg.data)
        except msgspec.DecodeError as exc:
            raise Double11Error(Result.invalid_request, message=f"commands that are not JSON ({exc})") from None
        if type(commands) is not list:
            raise Double11Error(Result.invalid_request, message="the commands must be a JSON list")
        return msgspec.json.encode({"results": await festival.submit(commands, principal)})

    async def _stock(self, msg: Msg) -> bytes:
        """The unit's quotas: whole, or what changed since a report the asker holds ({"since": id})."""
        festival, since = self._serving(), _since(msg.data)
        report: StockReport = await festival.read(_stock_report, festival, self._reports.new_id())
        return self._reports.answer(report, since)

    async def _state(self, msg: Msg) -> bytes:
        festival = self._serving()
        state = await festival.read(_state, festival, _wants_hash(msg.data))
        return json.dumps({"unit": self.unit, "role": self.role, "pid": os.getpid(), **state}).encode()

    async def _status(self, msg: Msg) -> bytes:
        seq = self._seq()
        lag = None
        if seq is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):  # no stream leader now: the lag is not known
                info = await asyncio.wait_for(self._js.stream_info(stream_name(self.unit)),
                                              limits.cluster_status_wait_s)
                lag = max(0, info.state.last_seq - seq)
        return json.dumps({"unit": self.unit, "role": self.role, "pid": os.getpid(), "seq": seq, "lag": lag,
                           "data": self.data_dir}).encode()

    def _seq(self) -> int | None:
        """The last stream record this node's engine holds (None: not open yet)."""
        if self.festival is not None:
            return self.festival.stream_log.next_seq - 1
        if self.standby is not None:
            return self.standby.seq
        return None
