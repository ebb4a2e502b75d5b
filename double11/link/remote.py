"""The front's end of the link: the festival in the engine process, with the
operations of `local.LocalFestival`.

Calls made in one turn of the event loop go down the socket in one write;
answers are matched to their calls by number.  If the engine process goes
away, every waiting call and every later one is answered 503 unavailable
and `on_lost` is called (the server then stops: a supervisor restarts both,
and the engine recovers from its log).  The engine process stops when this
one dies (lifecycle.follow_parent), and when its start is given up.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from double11 import limits
from double11.access.roles import OPERATOR, Principal
from double11.engine.batch import Op
from double11.errors import Double11Error, Result
from double11.lifecycle import child_env
from double11.link.admission import admitted_max, batch_commands
from double11.link.frames import ANSWER, CALL, CALL_ID_MASK, READY_CALL, SINGLE_KIND, SKU_PAGE_QUERY, Kind, View

log = logging.getLogger("double11.link")
_pack_call = CALL.pack
_unpack_answer = ANSWER.unpack_from
_ANSWER_SIZE = ANSWER.size


class EngineLost(Double11Error):
    def __init__(self, returncode: int | None = None) -> None:
        super().__init__(Result.unavailable, "the engine process stopped")
        self.returncode = returncode  # its exit status, where known

    def how(self) -> str:
        if self.returncode is None:
            return "it closed the link"
        if self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode}"


def overloaded(in_flight: int, bound: int) -> Double11Error:
    """429 overloaded: the work in flight and the bound it reached (the
    front adds Retry-After: limits.overloaded_retry_after_s)."""
    return Double11Error(Result.overloaded, message=(
        f"the engine is behind: {in_flight} commands wait for it, at most {bound} may at its pace now "
        f"(about {limits.admission_queue_delay_ms_target} ms of work); retry after "
        f"{limits.overloaded_retry_after_s} s with the same idempotency_key"))


class RemoteFestival(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.process: subprocess.Popen | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.lost = False
        self.on_lost: Callable[[], None] | None = None
        # what the engine said once open: its catalog folder and a few SKUs (engine.opened_note)
        self.opened: dict[str, Any] = {}
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[int, asyncio.Future] = {}
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        # admission (link/admission.py): batches' commands in flight beyond
        # their one call each, calls answered since the bound was last set,
        # and the bound on the commands in flight beside which a single one is admitted
        self._batched = 0
        self._answered = 0
        self.admitted_max = min(limits.admission_calls_in_flight_min, limits.link_calls_in_flight_max)
        self._adapted_at = self._loop.time()
        self._loop.call_later(limits.admission_window_ms / 1000, self._adapt)

    # ------------------------------------------------------------ operations
    def single(self, op: Op, target: int, body: bytes, principal: Principal = OPERATOR) -> asyncio.Future:
        """Its result starts (result code, JSON answer), as LocalFestival.single's.
        (`_call` written out: the phones' path, a few microseconds a request.)"""
        waiting = self._waiting
        if self.lost:
            raise EngineLost()
        if len(waiting) + self._batched >= self.admitted_max:  # the engine is behind: refused at once
            raise overloaded(len(waiting) + self._batched, self.admitted_max)
        call = next(self._ids) & CALL_ID_MASK or next(self._ids)
        future = waiting[call] = self._loop.create_future()
        out = self._out
        out.append(_pack_call(SINGLE_KIND, call, op, target, principal[0], principal[1], len(body)))
        out.append(body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    async def batch(self, body: bytes, binary: bool, principal: Principal = OPERATOR) -> tuple[int, bytes, bool]:
        # A batch counts as its commands, so that single commands are refused
        # while big batches keep the engine busy; the batch itself is bound
        # by the ceiling alone: a gateway's batches are its many phones'
        # commands at once, pipelined, and one in flight is already more
        # than the floor of the admission bound
        extra = batch_commands(body, binary) - 1
        answered = self._call(Kind.BATCH, int(binary), 0, body, principal)
        self._batched += extra
        try:
            code, answer, is_binary = await answered
        finally:
            self._batched -= extra
            self._answered += extra
        return code, answer, bool(is_binary)

    async def view(self, which: int, id_: int = 0, principal: Principal = OPERATOR) -> tuple[int, bytes]:
        code, body, _ = await self._call(Kind.VIEW, which, id_, b"", principal)
        return code, body

    async def sku_page(self, merchant: int, after: int, limit: int) -> tuple[int, bytes]:
        code, body, _ = await self._call(Kind.VIEW, View.SKU_PAGE, 0, SKU_PAGE_QUERY.pack(merchant, after, limit))
        return code, body

    async def stock_probe(self, payload: bytes) -> tuple[int, bytes]:
        code, body, _ = await self._call(Kind.VIEW, View.STOCK_PROBE, 0, payload)
        return code, body

    async def health(self) -> tuple[int, bytes]:
        code, body, _ = await self._call(Kind.VIEW, View.HEALTH, 0, b"")
        return code, body

    async def metrics(self) -> dict[str, int | float]:
        code, body, _ = await self._call(Kind.METRICS, 0, 0, b"")
        return msgspec.json.decode(body) if code == Result.ok else {}

    def _call(self, kind: Kind, op: int, target: int, payload: bytes,
              principal: Principal = OPERATOR) -> asyncio.Future:
        if self.lost:
            raise EngineLost()
        in_flight = len(self._waiting) + self._batched
        if in_flight >= limits.link_calls_in_flight_max:
            raise overloaded(in_flight, limits.link_calls_in_flight_max)
        call = next(self._ids) & CALL_ID_MASK or next(self._ids)
        future = self._loop.create_future()
        self._waiting[call] = future
        self._out.append(CALL.pack(kind, call, op, target, principal[0], principal[1], len(payload)))
        self._out.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _adapt(self) -> None:
        """Sets the admission bound from the engine's answers over the window
        just ended, and takes the next one (until the link is gone)."""
        now = self._loop.time()
        self.admitted_max = admitted_max(self._answered, now - self._adapted_at)
        self._answered, self._adapted_at = 0, now
        if not self.lost:
            self._loop.call_later(limits.admission_window_ms / 1000, self._adapt)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and not self.lost:
            self.transport.write(b"".join(out))

    # ------------------------------------------------------------------ link
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # each answer handed over as soon as its frame is whole (the engine's
        # answers are as big as what it was asked: no limit of their own)
        buf = self._buffer
        buf += data
        waiting, unpack, size = self._waiting, _unpack_answer, _ANSWER_SIZE
        at, n, before = 0, len(buf), len(waiting)
        with memoryview(buf) as view:
            while n - at >= size:
                call, code, binary, length = unpack(buf, at)
                end = at + size + length
                if end > n:
                    break
                future = waiting.pop(call, None)
                if future is not None:
                    if not future.done():
                        future.set_result((code, bytes(view[at + size:end]), binary))
                elif call == READY_CALL and not self.ready.done():
                    self.ready.set_result(bytes(view[at + size:end]))
                at = end
        del buf[:at]
        self._answered += before - len(waiting)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        closing, self.lost = self.lost, True
        if not self.ready.done():
            self.ready.set_exception(EngineLost())
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(EngineLost())
        if self.on_lost is not None and not closing:
            self.on_lost()

    # ------------------------------------------------------------- lifecycle
    @classmethod
    async def start(cls, options: dict[str, Any]) -> RemoteFestival:
        """Starts the engine process and waits until its festival is open
        (recovering a big one takes a while)."""
        front_end, engine_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        remote = cls()
        try:
            remote.process = subprocess.Popen(
                [sys.executable, "-m", "double11.link.engine", str(engine_end.fileno()), json.dumps(options)],
                pass_fds=[engine_end.fileno()], env=child_env())
        except BaseException:
            front_end.close()
            raise
        finally:
            engine_end.close()
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: remote, sock=front_end)
            note = await remote.ready
        except BaseException as e:  # the engine stopped, or we were stopped (cancelled): it must not go on
            await remote._give_up(front_end)
            if isinstance(e, EngineLost):
                raise EngineLost(remote.process.returncode) from None
            raise
        remote.opened = json.loads(note) if note else {}
        return remote

    async def _give_up(self, front_end: socket.socket) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.cancel()
        if self.transport is not None:
            self.transport.close()
        else:
            front_end.close()
        if self.process is not None:
            if self.process.poll() is None:
                # opening, it dies of SIGHUP; if it has just opened, it ignores it and closes with the link
                self.process.send_signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(None, self.process.wait)

    async def close(self) -> None:
        """Closes the link; the engine makes everything durable, snapshots and exits."""
        self.lost = True  # from now on, calls are refused: the engine is going
        if self.transport is not None:
            self.transport.close()
        if self.process is not None:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self.process.wait, limits.engine_close_s_max)
            except subprocess.TimeoutExpired:
                log.error("the engine did not stop in %d s: killing it (the log keeps what was acknowledged)",
                          limits.engine_close_s_max)
                self.process.kill()
                await loop.run_in_executor(None, self.process.wait)
