"""The group commit: callers' commands gathered into batches, answered once on disk.

Callers queue their commands (single requests' bodies as they came, JSON
batches, binary batches); one committer task takes everything queued (waiting
a moment for company when nothing is on its way to disk), encodes it as one
batch, applies it (a big batch on the engine thread, so the event loop takes
in the next requests meanwhile) and hands its answering to a task of its own,
which answers every caller once the batch's log record is on disk.  While one
batch is being fsynced the next one is already being gathered and applied
(limits.group_commit_batches_in_flight_max), so the disk's latency sets the
batch size, not the throughput.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import msgspec
import numpy as np

from double11 import limits
from double11.access.roles import OPERATOR, Principal, Role
from double11.engine import views
from double11.engine.answers import answers
from double11.engine.batch import CommandBatch, Op
from double11.engine.encode import encode_commands
from double11.engine.json_commands import Bodies, encode_bodies
from double11.engine.json_shape import misshapen_batches
from double11.engine.machine import Engine
from double11.engine.wire import encode_results
from double11.errors import Double11Error, Result
from double11.service.durability import Durability

logger = logging.getLogger("double11.service")
_ENC = msgspec.json.Encoder()

# applies a batch at a time (or None: now) and says when its log record is on disk (writes.Writes.apply)
Apply = Callable[[CommandBatch, int | None], tuple[np.ndarray, np.ndarray, Future | None]]


class GroupCommit:
    def __init__(self, engine: Engine, apply: Apply, durability: Durability, engine_thread: ThreadPoolExecutor) -> None:
        self.engine = engine
        self._apply = apply
        self._durability = durability
        self._pending: list[tuple[Any, asyncio.Future, int]] = []  # (commands, caller, how many)
        self._pending_commands = 0
        self._wake = asyncio.Event()  # a fresh one with each committer (_enqueue)
        self._committer: asyncio.Task | None = None
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="double11-decode")
        # big batches are applied on the engine thread (the compiled loop lets go of the GIL)
        self._engine = engine_thread
        self.batch_ms: collections.deque[float] = collections.deque(maxlen=4096)  # apply + fsync, per batch
        self._open_batches = 0  # taken from the queue, not yet answered (or failed)

    @property
    def pending_commands(self) -> int:
        """Commands queued, not yet taken into a batch."""
        return self._pending_commands

    def _results(self, batch: CommandBatch, code: np.ndarray, ref: np.ndarray, start: int = 0,
                 stop: int | None = None) -> list[views.Answer]:
        stop = len(code) if stop is None else stop
        return views.results(self.engine, batch, code, ref, start, stop)

    async def submit(self, commands: list[dict[str, Any]], principal: Principal = OPERATOR) -> list[views.Answer]:
        """Festival.execute's (code, body) answers, but gathered with other callers'
        commands into one group-committed batch; resolves once the batch is on disk."""
        check_batch_size(len(commands))
        return await self._enqueue(JsonCommands(commands, principal), len(commands))

    def submit_single(self, op: Op, target: int, body: bytes, principal: Principal = OPERATOR) -> asyncio.Future:
        """One command of a single HTTP request; the future gives (result
        code, JSON answer) once its batch is on disk.  The body goes as it came: the
        group commit parses all of them in one compiled pass.  The op comes
        from the route, the target from the path (0 for a checkout).  A body
        that is not a JSON object fails the future with 400 invalid_request.
        (A plain function, not a coroutine.)  A run of one, as submit_singles
        takes them."""
        run = SingleRun(np.array([op], dtype=np.uint8), np.array([target], dtype=np.int64), Bodies.of([body]))
        if principal != OPERATOR:
            run.roles = np.array([principal.role], dtype=np.uint8)
            run.actors = np.array([principal.id], dtype=np.int64)
        answered = self._enqueue(run, 1)
        single = answered.get_loop().create_future()

        def unwrap(done: asyncio.Future) -> None:
            if single.done():
                return
            exc = done.exception()
            if exc is not None:
                single.set_exception(exc)
            elif run.refused:
                single.set_exception(run.refused[0])
            else:
                single.set_result(done.result()[0])

        answered.add_done_callback(unwrap)
        return single

    async def submit_binary(self, body: bytes, principal: Principal = OPERATOR) -> bytes:
        """The compact columnar batch format (double11.engine.batch / wire).
        A big batch is decoded and checked on a worker thread (NumPy lets go
        of the GIL), beside the engine applying the one before it."""
        if len(body) >= limits.decode_on_worker_bytes_min:
            batch = await asyncio.get_running_loop().run_in_executor(self._decoder, CommandBatch.from_bytes, body)
        else:
            batch = CommandBatch.from_bytes(body)
        return await self._enqueue(batch.sent_by(principal.role, principal.id), len(batch))

    def submit_singles(self, ops: np.ndarray, targets: np.ndarray, bodies: Bodies, roles: np.ndarray | None = None,
                       actors: np.ndarray | None = None) -> asyncio.Future:
        """Many single requests' commands at once (from an HTTP front
        process: ops and targets as arrays); the future gives their (result
        code, JSON answer) in order, a body that is not a JSON object answered with
        its 400."""
        run = SingleRun(np.asarray(ops, dtype=np.uint8), np.asarray(targets, dtype=np.int64), bodies)
        if roles is not None and actors is not None and (roles != Role.operator).any():
            run.roles, run.actors = np.asarray(roles, dtype=np.uint8), np.asarray(actors, dtype=np.int64)
        return self._enqueue(run, len(bodies))

    def _enqueue(self, item: Any, count: int) -> asyncio.Future:
        self._durability.refuse_after_failure()
        if self._pending_commands + count > limits.pending_commands_max:
            raise Double11Error(Result.overloaded, f"{self._pending_commands} commands waiting")
        loop = asyncio.get_running_loop()
        if self._committer is None or self._committer.done():
            self._wake = asyncio.Event()
            self._committer = loop.create_task(self._commit_loop())
        future = loop.create_future()
        self._pending.append((item, future, count))
        self._pending_commands += count
        self._wake.set()
        return future

    def _take_pending(self) -> tuple[CommandBatch, list] | None:
        """The next batch: what is waiting, up to group_commit_commands_max
        (always at least one caller's commands), and who gets which answers.
        Callers of one kind in a row are encoded together: one pass each."""
        while self._pending:
            if self._pending_commands <= limits.group_commit_commands_max:
                items, self._pending, count = self._pending, [], self._pending_commands
            else:
                taken, count = 0, 0
                while taken < len(self._pending) and (taken == 0 or count + self._pending[taken][2]
                                                       <= limits.group_commit_commands_max):
                    count += self._pending[taken][2]
                    taken += 1
                items, self._pending = self._pending[:taken], self._pending[taken:]
            self._pending_commands -= count
            parts: list[CommandBatch] = []
            # callers, their commands' counts, and what each sent
            runs: list[tuple[str, list[asyncio.Future], list[int], list[Any]]] = []
            for kind, run in _runs(items):
                try:
                    if kind == _RUN:
                        batch, run = _encode_runs(run)
                        parts.append(batch)
                    elif kind == _DICTS:
                        batch = encode_commands([cmd for item, _, _ in run for cmd in item.commands])
                        if batch.notes:  # a JSON batch holding a command not of its shape is refused whole
                            batch, run = _refuse_misshapen(batch, run)
                        parts.append(_sent_by(batch, [(item.principal, len(item.commands)) for item, _, _ in run]))
                    else:
                        parts.extend(item for item, _, _ in run)
                except Exception as exc:  # a bug of ours: fail these callers, keep serving
                    logger.exception("encoding a batch failed")
                    _fail([(kind, [future for _, future, _ in run], [], [])], exc)
                    continue
                if run:
                    runs.append((kind, [future for _, future, _ in run], [count for _, _, count in run],
                                 [item for item, _, _ in run]))
            if runs:
                return CommandBatch.concat(parts), runs
        return None

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        answering: set[asyncio.Task] = set()  # batches applied, waiting for the disk, then answered
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(answering) >= limits.group_commit_batches_in_flight_max:
                await asyncio.wait(answering, return_when=asyncio.FIRST_COMPLETED)
                continue
            if not answering and self._pending_commands < limits.group_commit_gather_commands:
                await self._gather()  # nothing on its way to disk: wait a moment for company
            taken = self._take_pending()
            if taken is None:
                continue
            batch, runs = taken
            self._open_batches += 1
            started = time.perf_counter()
            try:
                if len(batch) >= limits.apply_on_worker_commands_min:
                    code, ref, written = await loop.run_in_executor(self._engine, self._apply, batch, None)
                else:
                    code, ref, written = self._apply(batch, None)
            except Exception as exc:  # a bug: fail these callers, keep serving
                self._open_batches -= 1
                _fail(runs, exc)
                continue
            # answered by a task of its own, so the engine takes the next batch
            # while this one's record goes to disk and its answers are encoded
            durable = asyncio.wrap_future(written) if written is not None else None
            task = loop.create_task(self._answer(durable, batch, code, ref, runs, started))
            answering.add(task)
            task.add_done_callback(answering.discard)

    async def _gather(self) -> None:
        """Waits for more single requests while they keep arriving."""
        step_s = limits.group_commit_gather_step_us / 1e6
        waited_us = 0
        while waited_us < limits.group_commit_gather_us:
            before = self._pending_commands
            await asyncio.sleep(step_s)
            waited_us += limits.group_commit_gather_step_us
            if self._pending_commands == before or self._pending_commands >= limits.group_commit_gather_commands:
                return

    async def _answer(self, durable: asyncio.Future | None, batch: CommandBatch, code: np.ndarray,
                      ref: np.ndarray, runs: list, started: float) -> None:
        try:
            if durable is not None:
                try:
                    await durable
                except Exception as exc:  # the disk refused (said by durability): nobody may be told it is done
                    if not isinstance(exc, Double11Error):
                        logger.exception("writing the command log failed")
                    _fail(runs, exc)
                    return
            self.batch_ms.append((time.perf_counter() - started) * 1000)
            try:
                self._resolve(batch, code, ref, runs)
            except Exception as exc:  # a bug of ours: these callers get a 500, not a wait forever
                logger.exception("answering a batch failed")
                _fail(runs, exc)
        finally:
            self._open_batches -= 1

    async def drain(self, timeout_s: float = limits.drain_s_max) -> bool:
        """Waits until every command submitted so far is applied, on disk and
        answered (or failed): before closing while callers may still be
        queued (the engine process, when its front went away).  False if
        that took longer than timeout_s."""
        deadline = time.monotonic() + timeout_s
        while self._pending or self._open_batches:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(limits.group_commit_gather_step_us / 1e6)
        return True

    def _resolve(self, batch: CommandBatch, code: np.ndarray, ref: np.ndarray, runs: list) -> None:
        """Hands each caller of a durable batch its answers."""
        offset = 0
        # the answers to a run of JSON callers are built in one pass (single
        # requests come in hundreds: one pass, not one per request)
        for kind, futures, counts, items in runs:
            if kind == _BINARY:
                for future, count in zip(futures, counts):
                    if not future.done():
                        future.set_result(encode_results(self.engine, batch.slice(offset, offset + count),
                                                         code[offset:offset + count], ref[offset:offset + count]))
                    offset += count
                continue
            run_end = offset + sum(counts)
            if kind == _RUN:
                got = answers(self.engine, batch, code, ref, offset, run_end)
                at = 0
                for future, count, item in zip(futures, counts, items):
                    mine = got[at:at + count]
                    at += count
                    if item.refused:  # bodies refused before the engine: answered in their places
                        mine = list(mine)
                        for k in sorted(item.refused):
                            mine.insert(k, refusal(item.refused[k]))
                    if not future.done():
                        future.set_result(mine)
            else:
                results = self._results(batch, code, ref, offset, run_end)
                at = 0
                for future, count in zip(futures, counts):
                    if not future.done():
                        future.set_result(results[at:at + count])
                    at += count
            offset = run_end

    def stop(self) -> None:
        """Stops the committer (after a storage fault, once drained: it would
        wait for commands forever, holding the state).  On the event loop."""
        if self._committer is not None:
            self._committer.cancel()

    def close(self) -> None:
        """Lets the decoding thread go (after the last caller was answered)."""
        self._decoder.shutdown(wait=True)


class SingleRun:
    """Single requests' commands, not yet decoded (one, or the many an
    engine process reads in one go); `refused`: the bodies refused before
    the engine, by index, with their error."""

    __slots__ = ("ops", "targets", "bodies", "refused", "roles", "actors")

    def __init__(self, ops: np.ndarray, targets: np.ndarray, bodies: Bodies) -> None:
        self.ops, self.targets, self.bodies = ops, targets, bodies
        self.refused: dict[int, Double11Error] = {}
        # who sent each (access.roles): None, the operator's (trusted) all
        self.roles: np.ndarray | None = None
        self.actors: np.ndarray | None = None


class JsonCommands:
    """A JSON batch's commands, and who sent them."""

    __slots__ = ("commands", "principal")

    def __init__(self, commands: list[dict[str, Any]], principal: Principal) -> None:
        self.commands, self.principal = commands, principal


def _sent_by(batch: CommandBatch, senders: list[tuple[Principal, int]]) -> CommandBatch:
    """The batch with who sent its commands: each sender's count of them, in order."""
    if all(principal == OPERATOR for principal, _ in senders):
        return batch
    counts = [count for _, count in senders]
    batch.role = np.repeat(np.array([p.role for p, _ in senders], dtype=np.uint8), counts)
    batch.actor = np.repeat(np.array([p.id for p, _ in senders], dtype=np.int64), counts)
    return batch


_BINARY, _DICTS, _RUN = "binary", "dicts", "run"


def refusal(error: Double11Error) -> tuple[int, bytes]:
    """A refused command's (result code, JSON error body)."""
    return error.code, _ENC.encode(error.body())


def _refuse_misshapen(batch: CommandBatch, run: list) -> tuple[CommandBatch, list]:
    """JSON batches encoded together, less those holding a command not of its
    declared shape (engine/json_shape.py): each of those is answered its 400
    now, nothing of it applied, and the others are encoded again without it."""
    refused = misshapen_batches([item.commands for item, _, _ in run], batch.notes)
    if not refused:
        return batch, run
    for k, error in refused.items():
        future = run[k][1]
        if not future.done():
            future.set_exception(error)
    kept = [waiting for k, waiting in enumerate(run) if k not in refused]
    return encode_commands([cmd for item, _, _ in kept for cmd in item.commands]), kept


def _encode_runs(run: list) -> tuple[CommandBatch, list]:
    """Runs of single requests as one batch, and the callers it holds.  A
    body that is not a JSON object is answered in its place with its 400; a
    caller whose every body was refused is answered now."""
    items = [item for item, _, _ in run]
    if len(items) == 1:
        ops, targets = items[0].ops, items[0].targets
    else:
        ops, targets = np.concatenate([item.ops for item in items]), np.concatenate([item.targets for item in items])
    batch, refused = encode_bodies(Bodies.concat([item.bodies for item in items]), ops, targets)
    if any(item.roles is not None for item in items):
        roles = np.concatenate([item.roles if item.roles is not None else np.full(len(item.ops), Role.operator,
                                                                                  np.uint8) for item in items])
        actors = np.concatenate([item.actors if item.actors is not None else np.zeros(len(item.ops), np.int64)
                                 for item in items])
        if refused:  # those bodies are not in the batch
            keep = np.ones(len(roles), dtype=np.bool_)
            keep[list(refused)] = False
            roles, actors = roles[keep], actors[keep]
        batch.role, batch.actor = roles, actors
    if not refused:
        return batch, run
    starts = np.cumsum([0] + [count for _, _, count in run[:-1]])
    for i, error in refused.items():
        j = int(np.searchsorted(starts, i, side="right")) - 1
        items[j].refused[i - int(starts[j])] = error
    kept = []
    for item, future, count in run:
        if len(item.refused) < count:
            kept.append((item, future, count - len(item.refused)))
        elif not future.done():
            future.set_result([refusal(item.refused[k]) for k in range(count)])
    return batch, kept


def _fail(runs: list, exc: BaseException) -> None:
    for _, futures, _, _ in runs:
        for future in futures:
            if not future.done():
                future.set_exception(exc)


def _runs(items: list[tuple[Any, asyncio.Future, int]]) -> list[tuple[str, list]]:
    """The waiting callers in runs of one kind (binary, JSON dicts, single requests)."""
    runs: list[tuple[str, list]] = []
    last = None
    for waiting in items:
        t = type(waiting[0])
        kind = _RUN if t is SingleRun else _BINARY if t is CommandBatch else _DICTS
        if kind is last:
            runs[-1][1].append(waiting)
        else:
            runs.append((kind, [waiting]))
            last = kind
    return runs


def check_batch_size(n: int) -> None:
    if n > limits.batch_commands_max:
        raise Double11Error(Result.batch_too_large, f"{n} commands, limit {limits.batch_commands_max}")
