"""The engine process: the festival, served to the front over the link.

Started by the front (`remote.start_engine`) with its end of a socket pair.
It opens (or recovers) the festival, says it is ready, then answers calls
until the link closes, and closes the festival with a snapshot.  It ignores
SIGINT and SIGTERM, and SIGHUP once open: Ctrl-C in a terminal, a closed
terminal or a service manager stopping the whole group reaches both
processes, and the front must first finish the requests in flight; it then
closes the link.  If the front dies, the link closes too; and the kernel
sends SIGHUP (lifecycle.follow_parent), which stops an engine still opening.

The single requests among the calls read in one go are handed to the group
commit together (one caller for all of them), so the engine spends no
Python per request on them beyond cutting the frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from double11 import limits
from double11.access.roles import Principal, Role
from double11.engine.answers import Answers
from double11.engine.json_commands import Bodies
from double11.errors import Double11Error, Result, error_body
from double11.gc_tuning import freeze_what_exists
from double11.lifecycle import CLOSING, SERVING, follow_parent, lock_data_dir, mark_data_dir
from double11.link.frames import (
    ANSWER,
    CALL,
    READY_CALL,
    SINGLE_KIND,
    SKU_PAGE_QUERY,
    FrameTooLarge,
    Kind,
    View,
    pack_answers,
    scan_calls,
)
from double11.link.local import LocalFestival
from double11.service import refusal

log = logging.getLogger("double11.engine")
_ENC = msgspec.json.Encoder()
_INTERNAL = (int(Result.internal), _ENC.encode(error_body(Result.internal)))


class EngineLink(asyncio.Protocol):
    """The engine's end of the link: cuts calls out of the stream, answers them."""

    def __init__(self, local: LocalFestival, closed: asyncio.Future, opened: bytes = b"") -> None:
        self.local = local
        self.closed = closed
        self.opened = opened  # the ready answer's body: what the front says once open (opened_note)
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._tasks: set[asyncio.Task] = set()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.answer(READY_CALL, 200, self.opened, False)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while buf:
            try:
                frames = scan_calls(buf, limits.link_call_bytes_max)
            except FrameTooLarge as e:
                log.error("%s on the link: closing it", e)
                if self.transport is not None:  # connection_made set it before any data
                    self.transport.close()
                return
            if not len(frames):
                return
            with memoryview(buf) as view:
                single = frames.kind == SINGLE_KIND
                if single.all():  # the phones' calls and nothing else: the common case
                    calls, ops, targets, starts, ends = frames.call, frames.op, frames.target, frames.start, frames.end
                    roles, actors = frames.role, frames.actor
                else:
                    for i in np.flatnonzero(~single).tolist():  # batches, views, metrics: one task each
                        payload = bytes(view[frames.start[i]:frames.end[i]])
                        task = asyncio.get_running_loop().create_task(
                            self._other(int(frames.kind[i]), int(frames.call[i]), int(frames.op[i]),
                                        int(frames.target[i]), payload,
                                        Principal(Role(int(frames.role[i])), int(frames.actor[i]))))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    calls, ops, targets = frames.call[single], frames.op[single], frames.target[single]
                    starts, ends = frames.start[single], frames.end[single]
                    roles, actors = frames.role[single], frames.actor[single]
                if len(calls):  # the bodies stay where they are, in one copy of what was read
                    read = np.frombuffer(view[:frames.consumed].tobytes(), dtype=np.uint8)
                    self._singles(calls, ops, targets, Bodies(read, starts, ends), roles, actors)
            del buf[:frames.consumed]

    def _singles(self, calls: np.ndarray, ops: np.ndarray, targets: np.ndarray, bodies: Bodies,
                 roles: np.ndarray, actors: np.ndarray) -> None:
        try:
            future = self.local.singles(ops, targets, bodies, roles, actors)
        except Double11Error as e:  # overloaded, or the log failed: all of them get it
            self._answer_all(calls, [refusal(e)] * len(calls))
            return
        future.add_done_callback(lambda f: self._answer_all(calls, _answers_of(f, len(calls))))

    def _answer_all(self, calls: np.ndarray, answers: Answers | list[tuple[int, bytes]]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if type(answers) is Answers:  # the common case: framed in one compiled pass
            self.transport.write(pack_answers(calls, answers.code, answers.data, answers.starts, answers.ends))
            return
        pack = ANSWER.pack
        self.transport.write(b"".join([part for call, (code, body) in zip(calls.tolist(), answers)
                                       for part in (pack(call, code, 0, len(body)), body)]))

    def answer(self, call: int, code: int, body: bytes, binary: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ANSWER.pack(call, code, int(binary), len(body)) + body)

    async def _other(self, kind: int, call: int, op: int, target: int, payload: bytes, principal: Principal) -> None:
        try:
            if kind == Kind.BATCH:
                code, body, binary = await self.local.batch(payload, bool(op), principal)
            elif kind == Kind.VIEW and op == View.SKU_PAGE:
                (code, body), binary = await self.local.sku_page(*SKU_PAGE_QUERY.unpack(payload)), False
            elif kind == Kind.VIEW and op == View.STOCK_PROBE:
                (code, body), binary = await self.local.stock_probe(payload), False
            elif kind == Kind.VIEW and op == View.HEALTH:
                (code, body), binary = await self.local.health(), False
            elif kind == Kind.VIEW:
                (code, body), binary = await self.local.view(op, target, principal), False
            elif kind == Kind.METRICS:
                code, body, binary = Result.ok, _ENC.encode(await self.local.metrics()), False
            else:
                raise ValueError(f"unknown call kind {kind}")
        except Exception:
            log.exception("answering a call of kind %s failed", kind)
            (code, body), binary = _INTERNAL, False
        self.answer(call, code, body, binary)

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    def _close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _answers_of(future: asyncio.Future, n: int) -> Answers | list[tuple[int, bytes]]:
    try:
        return future.result()
    except Double11Error as e:
        return [refusal(e)] * n
    except Exception:  # the festival logged it
        return [_INTERNAL] * n


def warm_up_link() -> None:
    """Loads the link's compiled passes (compiles them, the first time on a
    machine: seconds) before the first request has to wait for them."""
    frames = scan_calls(bytearray(CALL.pack(Kind.SINGLE, 1, 1, 0, 1, 0, 2) + b"{}"), limits.link_call_bytes_max)
    one = np.ones(1, dtype=np.int64)
    pack_answers(frames.call, one, b"{}", one - 1, one + 1)


DEMO_CATALOG = {"merchants": 2000, "skus": 20000, "seed": 11}  # `serve` without --catalog
SKUS_TO_TRY = 3  # `serve` names a few SKUs to try, of as many merchants


def catalog_folder(options: dict[str, Any]) -> str:
    """The catalog's folder: the one given, or where the demo catalog is written."""
    return options.get("catalog_dir") or str(Path(options["data_dir"]) / "catalog")


def opened_note(festival: Any, catalog_dir: str) -> bytes:
    """What the front says once open (http.server.try_lines): the catalog's
    folder and size, and a few SKUs in stock of different merchants, the most
    wanted first (SKU rows are in popularity order)."""
    engine = festival.engine
    catalog = engine.catalog
    merchants: set[int] = set()
    skus = []
    for row in np.flatnonzero(engine.available[:catalog.skus] > 0).tolist():
        merchant = int(catalog.sku_merchant[row])
        if merchant not in merchants:
            merchants.add(merchant)
            skus.append({"sku": int(catalog.sku_id[row]), "merchant": merchant,
                         "price_fen": int(engine.sku_price[row])})
            if len(skus) == SKUS_TO_TRY:
                break
    return json.dumps({"catalog_dir": catalog_dir, "merchants": catalog.merchants, "skus": catalog.skus,
                       "skus_to_try": skus}).encode()


def open_festival(options: dict[str, Any]):
    """The festival `double11 serve` was asked for (see http.server.serve_main)."""
    from fractions import Fraction

    from double11.config import load_config
    from double11.service import Festival

    if options.get("catalog_dir"):
        from double11.catalog.files import load_catalog

        catalog = load_catalog(options["catalog_dir"])
    else:  # the demo catalog, written beside the log for `simulate --catalog` and the curious
        from double11.catalog.files import save_catalog
        from double11.catalog.generate import generate_catalog

        catalog = generate_catalog(**DEMO_CATALOG)
        folder = Path(catalog_folder(options))
        if not (folder / "skus.csv").exists():
            save_catalog(catalog, folder)
    scaled = {}
    if options.get("scale"):
        fraction = Fraction(options["scale"]).limit_denominator(10**12)
        scaled = {"scale_num": fraction.numerator, "scale_den": fraction.denominator}
    # a server writes its tables' pages at start: first touches mid-festival cost more than the work.
    # The configuration is the festival's from its first start on (it lives in the snapshot).
    config = load_config(options.get("config_path"), prefault_memory=True,
                         expected_checkouts=options.get("expected_checkouts"),
                         expected_discounted_checkouts=options.get("expected_discounted_checkouts"), **scaled)
    return Festival.open(catalog, data_dir=options["data_dir"], config=config, speedup=options["speedup"],
                         clock_start_ms=options.get("clock_start_ms"))


async def serve_link(local: LocalFestival, sock: socket.socket, opened: bytes = b"",
                     on_closing: Callable[[], None] | None = None) -> None:
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    transport, _ = await loop.create_unix_connection(lambda: EngineLink(local, closed, opened), sock=sock)
    await closed
    transport.close()
    if on_closing is not None:
        on_closing()
    # the front is gone; what it sent is applied and made durable (nobody
    # hears of it: a retry after the restart finds the first answer)
    await local.drain()
    await local.close()


def main(argv: list[str]) -> int:
    fd, options = int(argv[0]), json.loads(argv[1])
    # SIGHUP when the front dies: until open, that stops us (SIGHUP's default);
    # once open, the link's end does it, after the last commands are made durable
    follow_parent(signal.SIGHUP)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the front's to handle: it closes the link when done
        signal.signal(sig, signal.SIG_IGN)
    # the engine holds every request's latency and needs little CPU: let it run first
    with contextlib.suppress(OSError):
        os.nice(limits.engine_process_nice)
    sys.setswitchinterval(limits.engine_gil_switch_interval_s)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # exit status 2: said why, in one line (the front adds nothing)
    try:
        lock = lock_data_dir(Path(options["data_dir"]))
    except SystemExit as e:
        print(e, file=sys.stderr, flush=True)
        return 2
    try:
        festival = open_festival(options)
    except (Double11Error, OSError, ValueError) as e:  # a bad catalog, config or data folder
        # a file's problem, not a request's: its detail without "the request is malformed"
        reason = e.detail if isinstance(e, Double11Error) and e.detail else e
        print(f"double11 serve: cannot open the festival: {reason}", file=sys.stderr, flush=True)
        return 2
    warm_up_link()
    freeze_what_exists()
    opened = opened_note(festival, catalog_folder(options))
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    mark_data_dir(lock, SERVING)
    local = LocalFestival(festival)
    link = serve_link(local, sock, opened, lambda: mark_data_dir(lock, CLOSING))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - granian[uvloop] brings it
        asyncio.run(link)
    else:
        uvloop.run(link)
    # closed without its last snapshot (a full disk: said in one line above) or in a
    # storage fault: the log keeps everything acknowledged, but the operator has a disk to see to
    return 1 if local.closed_short() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
