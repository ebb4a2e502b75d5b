"""The composition root of the transaction core: engine + command log + clock.

`Festival` is the in-process Python API.  HTTP reaches it through
`link.local.LocalFestival` (in the engine process of `double11 serve`, or in
the HTTP server's own process): `submit_singles` for the single requests the
engine process reads in one go, `submit_single` for one, `submit` (JSON
batches), `submit_binary` and the read methods.

It opens or recovers a data folder and composes the pieces beside it, which
share the engine, one lock (one writer or reader of the state at a time) and
the engine thread: `clock` gives each batch its time, `writes` applies a
batch with its log record, `durability` keeps the log and the snapshots,
`group_commit` gathers callers' commands into batches and answers them once
on disk, `reads` serves the state between batches.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import numpy as np

from double11 import limits, statuses
from double11.access.roles import OPERATOR, Principal
from double11.catalog import Catalog
from double11.config import FestivalConfig
from double11.engine import views
from double11.engine.batch import CommandBatch, Op
from double11.engine.encode import encode_commands
from double11.engine.json_commands import Bodies
from double11.engine.machine import Engine
from double11.engine.warm_up import compile_kernels
from double11.engine.wire import encode_results
from double11.errors import Double11Error
from double11.service.clock import FestivalClock, first_day, kept_clock
from double11.service.durability import Durability, Log, latest_snapshot, replay
from double11.service.group_commit import GroupCommit, check_batch_size
from double11.service.reads import Reads
from double11.service.writes import Writes
from double11.storage import log as command_log
from double11.storage.snapshot import SnapshotNotWritten


class Festival:
    def __init__(self, engine: Engine, data_dir: Path | None, log: Log | None,
                 clock: FestivalClock):
        self.engine = engine
        self.clock = clock
        # one writer or reader at a time: apply + append, or a read of the state
        lock = threading.RLock()  # a read may hold reads of its own (Festival.read of a function calling sku())
        # big batches are applied here (the compiled loop lets go of the GIL), so
        # the event loop takes in the next requests meanwhile; HTTP reads run
        # here too, between batches, never on a half-applied one
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="double11-engine")
        self.durability = Durability(data_dir, log, lock)
        self.writes = Writes(engine, clock, self.durability, lock)
        self.group_commit = GroupCommit(engine, self.writes.apply, self.durability, self._engine)
        self.reads = Reads(engine, clock, lock, self._engine, self.durability)

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
            config, clock_start_ms = first_day(config, clock_start_ms, speedup)
            return cls(Engine(catalog, config), None, None, FestivalClock(clock_start_ms, speedup))
        directory = Path(data_dir)
        return cls.recover(directory, catalog, config, speedup, clock_start_ms,
                           lambda engine, seq: replay(engine, directory, seq),
                           lambda seq: command_log.CommandLog(directory, seq + 1))

    @classmethod
    def recover(cls, directory: Path, catalog: Catalog | None, config: FestivalConfig | None, speedup: float,
                clock_start_ms: int | None, replay_log: Callable[[Engine, int], int],
                open_log: Callable[[int], Log]) -> Self:
        """A festival from the folder's latest snapshot (or a new one, of
        `catalog`) and a log: `replay_log(engine, seq)` applies the log's
        records after seq and gives the last one's; `open_log(seq)` gives the
        log the next records go to (a command log, or a unit's stream log:
        double11/cluster)."""
        compile_kernels()  # before a replay or a request waits for them
        directory.mkdir(parents=True, exist_ok=True)
        found = latest_snapshot(directory)
        if found:
            seq, engine = found
        else:
            if catalog is None:
                raise ValueError(f"{directory} holds no festival yet: a catalog is needed to start one")
            config, clock_start_ms = first_day(config, clock_start_ms, speedup)
            seq, engine = 0, Engine(catalog, config)
        seq = replay_log(engine, seq)
        clock = kept_clock(directory, speedup, clock_start_ms)
        festival = cls(engine, directory, open_log(seq), clock)
        festival.durability.snapshot_seq = found[0] if found else 0
        if not found:
            festival.snapshot()  # the catalog and config live in the snapshot from now on
        return festival

    # ------------------------------------------------------------------ writes
    def execute(self, commands: list[dict[str, Any]], now_ms: int | None = None,
                principal: Principal = OPERATOR) -> list[dict[str, Any]]:
        """Apply commands in order as one batch, durable on return, as sent
        by `principal` (double11/access; the operator may do everything).
        Each result is {"status": int, "body": dict}: the status HTTP would answer."""
        check_batch_size(len(commands))
        batch = encode_commands(commands).sent_by(principal.role, principal.id)
        code, ref, written = self.writes.apply(batch, now_ms)
        if written is not None:
            written.result()
        return [statuses.answer(result, body) for result, body in views.results(self.engine, batch, code, ref, 0,
                                                                                len(code))]

    def execute_binary(self, body: bytes, now_ms: int | None = None) -> bytes:
        batch = CommandBatch.from_bytes(body)
        code, ref, written = self.writes.apply(batch, now_ms)
        if written is not None:
            written.result()
        return encode_results(self.engine, batch, code, ref)

    # The group commit's (group_commit.GroupCommit has their whole story).
    async def submit(self, commands: list[dict[str, Any]], principal: Principal = OPERATOR) -> list[dict[str, Any]]:
        """Same as execute, but gathered with other callers' commands into one
        group-committed batch; resolves once the batch is on disk."""
        return [statuses.answer(result, body) for result, body in await self.group_commit.submit(commands, principal)]

    def submit_single(self, op: Op, target: int, body: bytes, principal: Principal = OPERATOR) -> asyncio.Future:
        """One command of a single HTTP request; the future gives (result
        code, JSON answer) once its batch is on disk.  (A plain function.)"""
        return self.group_commit.submit_single(op, target, body, principal)

    async def submit_binary(self, body: bytes, principal: Principal = OPERATOR) -> bytes:
        """The compact columnar batch format (double11.engine.batch / wire)."""
        return await self.group_commit.submit_binary(body, principal)

    def submit_singles(self, ops: np.ndarray, targets: np.ndarray, bodies: Bodies, roles: np.ndarray | None = None,
                       actors: np.ndarray | None = None) -> asyncio.Future:
        """Many single requests' commands at once; the future gives their
        (result code, JSON answer) in order."""
        return self.group_commit.submit_singles(ops, targets, bodies, roles, actors)

    async def drain(self, timeout_s: float = limits.drain_s_max) -> bool:
        """Waits until every command submitted so far is applied, on disk and
        answered (or failed); False if that took longer than timeout_s."""
        return await self.group_commit.drain(timeout_s)

    # ------------------------------------------------------------------- reads
    # Each read sees the state between two batches, once durable (service/reads.py).
    # From the event loop, use `read` with a view of `reads` (`reads.sku_view`, ...):
    # it waits for its turn on the engine thread instead of blocking the loop.
    async def read(self, view: Callable[..., Any], *args: Any) -> Any:
        return await self.reads.read(view, *args)

    def sku(self, sku: int) -> dict[str, Any] | None:
        return self.reads.sku(sku)

    def checkout(self, checkout: int) -> dict[str, Any] | None:
        return self.reads.checkout(checkout)

    def order(self, order: int) -> dict[str, Any] | None:
        return self.reads.order(order)

    def ledger(self) -> dict[str, Any]:
        return self.reads.ledger()

    def view(self, name: str, id_: int) -> dict[str, Any] | None:
        """An area's view of a thing: `view("coupon", 7)` (the names:
        areas.READS, e.g. docs/promotions.md's views); None when there is none."""
        return self.reads.view(name, id_)

    def stats(self) -> dict[str, Any]:
        return self.reads.stats()

    def state_bytes(self) -> int:
        """Memory held by the engine's growing tables (for bytes per order)."""
        return self.reads.state_bytes()

    def metrics(self) -> dict[str, int | float]:
        """The festival's figures for /metrics, the state's as durable (read them with `read`)."""
        e = self.engine
        latencies = sorted(self.group_commit.batch_ms)

        def p(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

        log = self.durability.log
        return {
            "double11_batches_total": self.writes.batches,
            "double11_commands_total": self.writes.commands,
            "double11_checkouts_total": e.stats.checkouts,
            "double11_orders_total": e.stats.orders,
            "double11_payments_total": e.stats.payments,
            "double11_gmv_fen": e.stats.gmv_fen,
            "double11_pending_commands": self.group_commit.pending_commands,
            "double11_log_bytes_total": log.bytes_written if log else 0,
            "double11_fsyncs_total": log.syncs if log else 0,
            "double11_table_grows_total": self.writes.table_grows,
            "double11_batch_ms_p50": p(0.50),
            "double11_batch_ms_p99": p(0.99),
            "double11_state_bytes": self.state_bytes(),
            "double11_storage_fault": int(self.durability.log_failure is not None),
        }

    # The figures and parts a festival always showed, now kept by its pieces.
    @property
    def data_dir(self) -> Path | None:
        return self.durability.data_dir

    @property
    def log(self) -> Log | None:
        return self.durability.log

    @property
    def log_failure(self) -> BaseException | None:
        return self.durability.log_failure

    @property
    def snapshot_seq(self) -> int:
        return self.durability.snapshot_seq

    @property
    def batches(self) -> int:
        return self.writes.batches

    @property
    def commands(self) -> int:
        return self.writes.commands

    @property
    def table_grows(self) -> int:
        return self.writes.table_grows

    @property
    def batch_ms(self) -> collections.deque[float]:
        return self.group_commit.batch_ms

    # --------------------------------------------------------------- lifecycle
    def snapshot(self) -> None:
        """Writes the whole state and starts a new log segment; older segments go."""
        self.durability.snapshot(self.engine)

    def reopen(self) -> Festival:
        """The festival as its data folder holds it (latest snapshot + log),
        after a storage fault: the batch whose record was lost is not there.
        Raises OSError while the folder cannot be written (a new log segment
        starts).  Call `abandon` on this one first."""
        return self.reopener()()

    def reopener(self) -> Callable[[], Festival]:
        """`reopen`, as a call that does not hold this festival (so that its
        state can go before the folder is read again)."""
        assert self.data_dir is not None, "a festival in memory has no storage to fault"
        return functools.partial(Festival.open, data_dir=self.data_dir, speedup=self.clock.speedup)

    def abandon(self) -> None:
        """Lets go of a festival whose log failed: its threads stop, nothing
        more is written (no snapshot: the state holds a batch the log does not)."""
        self.durability.abandon()
        self.group_commit.close()
        self._engine.shutdown(wait=True)

    def close(self, snapshot: bool = False) -> None:
        """Closes the log.  With snapshot, writes one first if commands came in
        since the last: a restart then loads it instead of replaying the log.
        A snapshot that cannot be written (a full disk) is said in one line
        and not raised: the log, closed intact, keeps everything
        (`durability.behind_snapshot()` then says the close went without it)."""
        try:
            self.durability.written()
        except Double11Error:  # a storage fault, said by durability: no snapshot of what the log may not hold
            snapshot = False
        if snapshot and self.durability.behind_snapshot():
            with contextlib.suppress(SnapshotNotWritten):  # said by durability; a start replays the log
                self.snapshot()
        self.durability.close()
        self.group_commit.close()
        self._engine.shutdown(wait=True)
