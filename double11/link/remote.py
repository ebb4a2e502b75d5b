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
from double11.engine.batch import Op
from double11.errors import Double11Error, Result
from double11.lifecycle import child_env
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

    # ------------------------------------------------------------ operations
    def single(self, op: Op, target: int, body: bytes) -> asyncio.Future:
        """Its result starts (result code, JSON answer), as LocalFestival.single's.
        (`_call` written out: the phones' path, a few microseconds a request.)"""
        waiting = self._waiting
        if self.lost:
            raise EngineLost()
        if len(waiting) >= limits.link_calls_in_flight_max:
            raise Double11Error(Result.overloaded, f"{len(waiting)} requests wait for the engine")
        call = next(self._ids) & CALL_ID_MASK or next(self._ids)
        future = waiting[call] = self._loop.create_future()
        out = self._out
        out.append(_pack_call(SINGLE_KIND, call, op, target, len(body)))
        out.append(body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    async def batch(self, body: bytes, binary: bool) -> tuple[int, bytes, bool]:
        code, answer, is_binary = await self._call(Kind.BATCH, int(binary), 0, body)
        return code, answer, bool(is_binary)

    async def view(self, which: int, id_: int = 0) -> tuple[int, bytes]:
        code, body, _ = await self._call(Kind.VIEW, which, id_, b"")
        return code, body

    async def sku_page(self, merchant: int, after: int, limit: int) -> tuple[int, bytes]:
        code, body, _ = await self._call(Kind.VIEW, View.SKU_PAGE, 0, SKU_PAGE_QUERY.pack(merchant, after, limit))
        return code, body

    async def metrics(self) -> dict[str, int | float]:
        code, body, _ = await self._call(Kind.METRICS, 0, 0, b"")
        return msgspec.json.decode(body) if code == Result.ok else {}

    def _call(self, kind: Kind, op: int, target: int, payload: bytes) -> asyncio.Future:
        if self.lost:
            raise EngineLost()
        if len(self._waiting) >= limits.link_calls_in_flight_max:
            raise Double11Error(Result.overloaded, f"{len(self._waiting)} requests wait for the engine")
        call = next(self._ids) & CALL_ID_MASK or next(self._ids)
        future = self._loop.create_future()
        self._waiting[call] = future
        self._out.append(CALL.pack(kind, call, op, target, len(payload)))
        self._out.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

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
        at, n = 0, len(buf)
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
