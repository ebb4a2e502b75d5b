"""The composition root of the transaction core: engine + command log + clock.

`Festival` is the in-process Python API.  HTTP reaches it through
`link.local.LocalFestival` (in the engine process of `double11 serve`, or in
the HTTP server's own process): `submit_singles` for the single requests the
engine process reads in one go, `submit_single` for one, `submit` (JSON
batches), `submit_binary` and the read methods.

Group commit: callers queue their commands; one committer task takes
everything queued, applies it as one batch, and hands the batch's log record
to the log thread, which appends it and fsyncs once for all of them; a task
per batch answers its callers once the record is on disk.  While one batch
is being fsynced the next one is already being gathered and applied
(limits.group_commit_batches_in_flight_max), so the disk's latency sets the
batch size, not the throughput.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from double11 import limits
from double11.catalog import Catalog
from double11.clock import FestivalClock
from double11.config import FestivalConfig, own_day
from double11.engine import views
from double11.engine.answers import answers
from double11.engine.batch import CommandBatch, Op
from double11.engine.encode import encode_commands
from double11.engine.json_commands import Bodies, encode_bodies
from double11.engine.machine import Engine
from double11.engine.warm_up import compile_kernels
from double11.engine.wire import encode_results
from double11.errors import Double11Error, Result
from double11.storage import engine_state
from double11.storage import log as command_log
from double11.storage import snapshot as snapshots

logger = logging.getLogger("double11.service")
_ENC = msgspec.json.Encoder()


class Festival:
    def __init__(self, engine: Engine, data_dir: Path | None, log: command_log.CommandLog | None,
                 clock: FestivalClock):
        self.engine = engine
        self.data_dir = data_dir
        self.log = log
        self.clock = clock
        # one writer or reader at a time: apply + append, or a read of the state
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, asyncio.Future, int]] = []  # (commands, caller, how many)
        self._pending_commands = 0
        self._wake = asyncio.Event()  # a fresh one with each committer (_enqueue)
        self._committer: asyncio.Task | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="double11-log")
        self._last_write: Future | None = None  # the last record handed to the log thread
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="double11-decode")
        # big batches are applied here (the compiled loop lets go of the GIL), so
        # the event loop takes in the next requests meanwhile; HTTP reads run
        # here too, between batches, never on a half-applied one
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="double11-engine")
        self.batches = 0
        self.commands = 0
        self.table_grows = 0  # tables grown to take a batch (each a pause)
        self.batch_ms: collections.deque[float] = collections.deque(maxlen=4096)  # apply + fsync, per batch
        self.snapshot_seq = 0
        # set when a log record could not be written: the state then holds a
        # batch the log does not, so no more commands until a restart recovers
        self.log_failure: BaseException | None = None
        self._open_batches = 0  # taken from the queue, not yet answered (or failed)

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, catalog: Catalog | None = None, data_dir: str | Path | None = None,
             config: FestivalConfig | None = None, speedup: float = 1.0,
             clock_start_ms: int | None = None) -> Festival:
        """Open (or recover) a festival.  With data_dir, every command is logged
        and fsynced before it is answered; without, state is in memory only."""
        if data_dir is None:
            if catalog is None:
                raise ValueError("an in-memory festival needs a catalog")
            compile_kernels()
            config, clock_start_ms = cls._first_day(config, clock_start_ms, speedup)
            return cls(Engine(catalog, config), None, None, FestivalClock(clock_start_ms, speedup))
        compile_kernels()  # before a replay or a request waits for them
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        found = snapshots.latest(directory)
        if found:
            seq, path = found
            engine = engine_state.read(path)  # a snapshot of any format this code reads
        else:
            if catalog is None:
                raise ValueError(f"{directory} holds no festival yet: a catalog is needed to start one")
            config, clock_start_ms = cls._first_day(config, clock_start_ms, speedup)
            seq, engine = 0, Engine(catalog, config)
        def records():
            nonlocal seq  # ends as the last record's
            for record_seq, now_ms, payload in command_log.replay(directory, seq):
                seq = record_seq
                yield CommandBatch.from_bytes(payload, trusted=True), now_ms

        for _ in engine.apply_all(records()):  # each record's lookups beside the main loop of the one before
            pass
        clock = cls._clock(directory, speedup, clock_start_ms)
        festival = cls(engine, directory, command_log.CommandLog(directory, seq + 1), clock)
        festival.snapshot_seq = found[0] if found else 0
        if not found:
            festival.snapshot()  # the catalog and config live in the snapshot from now on
        return festival

    @staticmethod
    def _first_day(config: FestivalConfig | None, clock_start_ms: int | None,
                   speedup: float) -> tuple[FestivalConfig, int | None]:
        """A new festival's config and clock start, its day fixed (config.own_day)."""
        return own_day(config or FestivalConfig(), clock_start_ms, time.time_ns() // 1_000_000, speedup)

    @staticmethod
    def _clock(directory: Path, speedup: float, clock_start_ms: int | None) -> FestivalClock:
        """A restarted festival keeps its clock unless told otherwise."""
        path = directory / "clock.json"
        if path.exists() and clock_start_ms is None:
            saved = json.loads(path.read_text())
            return FestivalClock(saved["start_ms"], saved["speedup"], saved["real_start_ms"])
        clock = FestivalClock(clock_start_ms, speedup)
        path.write_text(json.dumps(clock.to_dict()))
        return clock

    # ------------------------------------------------------------------ writes
    def _apply(self, batch: CommandBatch, now_ms: int | None) -> tuple[np.ndarray, np.ndarray, Future | None]:
        """Applies a batch; the future says when its log record is on disk
        (None: it already is, or there is no log).

        The log holds the batch and its time, not its results (replay applies
        it again, deterministically), so a big batch's record is written
        (serialized, checksummed, fsynced) on the log thread while the engine
        applies it: the batch is answered when both are done, instead of after
        the one and then the other.  Records go in the order batches are
        applied (one thread, first in first out, under the lock).  A small
        batch's record is written here, after it is applied, when no record is
        on its way: handing it to a thread and back cost more time than the
        fsync itself when the CPUs are busy (measured: about 2 ms against
        0.4 ms per batch of single requests)."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        self._refuse_after_log_failure()
        with self._lock:
            now = max(int(now), self.engine.now_ms)  # the engine's clock never goes back
            inline = self.log is not None and len(batch) < limits.log_inline_commands_max and (
                self._last_write is None or self._last_write.done())
            written = None
            if self.log is not None and not inline:
                written = self._last_write = self._io.submit(self._write, now, batch)
            growing = self.engine.must_grow(len(batch), len(batch.sku))
            started = time.perf_counter()
            code, ref = self.engine.apply(batch, now)
            if growing:
                self._grown(growing, time.perf_counter() - started)
            if inline:
                self._write(now, batch)
        self.batches += 1
        self.commands += len(batch)
        return code, ref, written

    def _grown(self, tables: list[str], seconds: float) -> None:
        """A batch had to wait for tables to grow: said loudly, because the
        pause grows with the festival (seconds at tens of millions of
        checkouts, and it comes at the peak)."""
        self.table_grows += len(tables)
        logger.warning("the engine's %s table%s grew to take a batch, which waited %.2f s: size the festival "
                       "for its peak (serve --expected-checkouts; now %s checkouts)", ", ".join(tables),
                       "s" if len(tables) > 1 else "", seconds, f"{self.engine.stats.checkouts:,}")

    def _refuse_after_log_failure(self) -> None:
        if self.log_failure is not None:
            raise Double11Error(Result.internal, "the command log could not be written; restart to recover")

    def _write(self, now_ms: int, batch: CommandBatch) -> None:
        if self.log_failure is not None:  # never a record after a lost one: replay would skip a batch
            raise self.log_failure
        log = self.log
        assert log is not None, "written only by a festival with a log (apply)"
        try:
            log.append(now_ms, batch.to_bytes())
            log.sync()
        except BaseException as exc:
            self.log_failure = exc
            raise

    def _written(self) -> None:
        """Waits until every applied batch's record is on disk (after a failed
        write nothing more goes there)."""
        if self.log is not None and self.log_failure is None:
            self._io.submit(self.log.sync).result()

    def _results(self, batch: CommandBatch, code: np.ndarray, ref: np.ndarray, start: int = 0,
                 stop: int | None = None) -> list[dict[str, Any]]:
        stop = len(code) if stop is None else stop
        return views.results(self.engine, batch, code, ref, start, stop)

    def execute(self, commands: list[dict[str, Any]], now_ms: int | None = None) -> list[dict[str, Any]]:
        """Apply commands in order as one batch, durable on return.
        Each result is {"status": int, "body": dict}."""
        _check_batch_size(len(commands))
        batch = encode_commands(commands)
        code, ref, written = self._apply(batch, now_ms)
        if written is not None:
            written.result()
        return self._results(batch, code, ref)

    def execute_binary(self, body: bytes, now_ms: int | None = None) -> bytes:
        batch = CommandBatch.from_bytes(body)
        code, ref, written = self._apply(batch, now_ms)
        if written is not None:
            written.result()
        return encode_results(self.engine, batch, code, ref)

    async def submit(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Same as execute, but gathered with other callers' commands into one
        group-committed batch; resolves once the batch is on disk."""
        _check_batch_size(len(commands))
        return await self._enqueue(commands, len(commands))

    def submit_single(self, op: Op, target: int, body: bytes) -> asyncio.Future:
        """One command of a single HTTP request; the future gives (status,
        JSON answer) once its batch is on disk.  The body goes as it came: the
        group commit parses all of them in one compiled pass.  The op comes
        from the route, the target from the path (0 for a checkout).  A body
        that is not a JSON object fails the future with 400 invalid_request.
        (A plain function, not a coroutine.)  A run of one, as submit_singles
        takes them."""
        run = SingleRun(np.array([op], dtype=np.uint8), np.array([target], dtype=np.int64), Bodies.of([body]))
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

    async def submit_binary(self, body: bytes) -> bytes:
        """The compact columnar batch format (double11.engine.batch / wire).
        A big batch is decoded and checked on a worker thread (NumPy lets go
        of the GIL), beside the engine applying the one before it."""
        if len(body) >= limits.decode_on_worker_bytes_min:
            batch = await asyncio.get_running_loop().run_in_executor(self._decoder, CommandBatch.from_bytes, body)
        else:
            batch = CommandBatch.from_bytes(body)
        return await self._enqueue(batch, len(batch))

    def submit_singles(self, ops: np.ndarray, targets: np.ndarray, bodies: Bodies) -> asyncio.Future:
        """Many single requests' commands at once (from an HTTP front
        process: ops and targets as arrays); the future gives their (status,
        JSON answer) in order, a body that is not a JSON object answered with
        its 400."""
        return self._enqueue(SingleRun(np.asarray(ops, dtype=np.uint8), np.asarray(targets, dtype=np.int64), bodies),
                             len(bodies))

    def _enqueue(self, item: Any, count: int) -> asyncio.Future:
        self._refuse_after_log_failure()
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
                        parts.append(encode_commands([cmd for item, _, _ in run for cmd in item]))
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
                except Exception as exc:  # the disk refused: nobody may be told it is done
                    logger.exception("writing the command log failed; no more commands until a restart")
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

    # ------------------------------------------------------------------- reads
    # Each read sees the state between two batches.  From the event loop, use
    # `read`: it waits for its turn on the engine thread instead of blocking the
    # loop while a batch applies.
    async def read(self, view: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._engine, view, *args)

    def sku(self, sku: int) -> dict[str, Any] | None:
        with self._lock:
            return views.sku(self.engine, sku)

    def checkout(self, checkout: int) -> dict[str, Any] | None:
        with self._lock:
            return views.checkout(self.engine, checkout)

    def order(self, order: int) -> dict[str, Any] | None:
        with self._lock:
            return views.order(self.engine, order)

    def ledger(self) -> dict[str, Any]:
        with self._lock:
            return self.engine.ledger.view()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            now = max(self.clock.now_ms(), self.engine.now_ms)
            view = self.engine.stats.view(self.engine.catalog, now)
        # the clock's pace, for a client that replays a day against it (double11 simulate)
        view["speedup"] = self.clock.speedup
        return view

    def metrics(self) -> dict[str, int | float]:
        e = self.engine
        latencies = sorted(self.batch_ms)

        def p(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

        return {
            "double11_batches_total": self.batches,
            "double11_commands_total": self.commands,
            "double11_checkouts_total": e.stats.checkouts,
            "double11_orders_total": e.stats.orders,
            "double11_payments_total": e.stats.payments,
            "double11_gmv_fen": e.stats.gmv_fen,
            "double11_pending_commands": self._pending_commands,
            "double11_log_bytes_total": self.log.bytes_written if self.log else 0,
            "double11_fsyncs_total": self.log.syncs if self.log else 0,
            "double11_table_grows_total": self.table_grows,
            "double11_batch_ms_p50": p(0.50),
            "double11_batch_ms_p99": p(0.99),
            "double11_state_bytes": self.state_bytes(),
        }

    def state_bytes(self) -> int:
        """Memory held by the engine's growing tables (for bytes per order)."""
        engine = self.engine
        return (sum(table.nbytes for table in engine.growing_tables())
                + engine.idem_index.nbytes + engine.buyer_index.nbytes)

    # --------------------------------------------------------------- lifecycle
    def snapshot(self) -> None:
        """Writes the whole state and starts a new log segment; older segments go."""
        if self.data_dir is None or self.log is None:
            return
        if self.log_failure is not None:  # the state holds batches the log lost: keep them out
            logger.error("no snapshot: the command log could not be written; a restart recovers from it")
            return
        with self._lock:
            self._written()  # the state holds every batch applied; so must the log
            seq = self.log.next_seq - 1
            engine_state.write(self.data_dir, seq, self.engine)
            self.log.start_segment(seq + 1)
            self.log.drop_segments_before(seq + 1)
            self.snapshot_seq = seq

    def close(self, snapshot: bool = False) -> None:
        """Closes the log.  With snapshot, writes one first if commands came in
        since the last: a restart then loads it instead of replaying the log."""
        self._written()
        if snapshot and self.log is not None and self.log.next_seq - 1 > self.snapshot_seq:
            self.snapshot()
        if self.log is not None:
            with self._lock:
                self.log.close()
        for pool in (self._io, self._decoder, self._engine):
            pool.shutdown(wait=True)


class SingleRun:
    """Single requests' commands, not yet decoded (one, or the many an
    engine process reads in one go); `refused`: the bodies refused before
    the engine, by index, with their error."""

    __slots__ = ("ops", "targets", "bodies", "refused")

    def __init__(self, ops: np.ndarray, targets: np.ndarray, bodies: Bodies) -> None:
        self.ops, self.targets, self.bodies = ops, targets, bodies
        self.refused: dict[int, Double11Error] = {}


_BINARY, _DICTS, _RUN = "binary", "dicts", "run"


def refusal(error: Double11Error) -> tuple[int, bytes]:
    """A refused command's (HTTP status, JSON error body)."""
    return error.http_status, _ENC.encode(error.body())


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


def _check_batch_size(n: int) -> None:
    if n > limits.batch_commands_max:
        raise Double11Error(Result.batch_too_large, f"{n} commands, limit {limits.batch_commands_max}")
