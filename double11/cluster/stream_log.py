"""A unit's command log on a replicated NATS JetStream stream.

`StreamLog` has the calls of service.durability.Log (as storage.log.CommandLog) that the festival's
durability uses (`append`, `sync`, `next_seq`, `close`, `start_segment`,
`drop_segments_before`, `cut_back`, `bytes_written`, `syncs`), so a festival
runs on it unchanged: a batch is answered once its record is in the stream,
that is once a majority of the stream's replicas (3 by default, each on its
own node, `sync_interval: always`) holds it.

One stream per unit (`D11-<unit>`, subject `double11.log.<unit>`), written by
that unit's primary only, so a record's sequence number is its stream
sequence.  A message is one record: [u64 seq][i64 time ms] then the batch's
wire bytes (time enters the log as data: replay reproduces the state).  Its
headers:
- `Nats-Msg-Id: <unit>:<seq>:<writer>`: a record sent again (its ack lost in
  a leader change) is dropped by the stream's dedup and acknowledged with the
  sequence of the copy it holds.  `writer` is drawn afresh each time a log is
  opened: a new primary's record n is not taken for an old primary's record n
  (dedup would acknowledge it while the stream holds the other batch);
- `Nats-Expected-Last-Sequence: <seq - 1>`: the stream stores a record only
  right after its predecessor.  If a publish is lost (a leader killed before
  it was replicated), every later record sent behind it is refused too, and
  `sync` confirms records in order, sending each again until the stream
  holds it: a record is never acknowledged after an earlier one was skipped,
  and the stream never has a gap.  It also fences a second writer (a primary
  that believes it still leads): its records are refused, never interleaved.

The client (nats-py) is asyncio; it runs on an event loop in a thread of its
own, and the festival's threads hand it calls.  `append` only queues the
publish; one sender task sends queued records in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from double11 import limits

RECORD_HEAD = struct.Struct("<Qq")  # seq, now_ms
_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code: the stream's last sequence is not the expected one
# the first copy of a record sent again is still being replicated (no quorum yet): its outcome is not known
_DUPLICATE_IN_PROCESS = 10158
_UNIT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_T = TypeVar("_T")


class StreamLogError(OSError):
    """The stream did not take a record (no quorum within the retry time, a
    refusal): a storage fault for the festival (503 until it reopens)."""


class StreamGap(StreamLogError):
    """A reader was given a record past the one it expects: read again from there."""


class StreamTrimmed(StreamLogError):
    """The stream no longer holds the records right after a snapshot: it was
    trimmed below a later snapshot (cluster/snapshots.py), so replaying it
    from this one would skip records.  Names the snapshot and the stream's first record."""

    def __init__(self, stream: str, snapshot_seq: int, first_seq: int, where: str = "") -> None:
        self.snapshot_seq, self.first_seq = snapshot_seq, first_seq
        super().__init__(errno.ENODATA, f"the stream {stream} starts at record {first_seq}: records "
                         f"{snapshot_seq + 1} to {first_seq - 1}, which follow the snapshot at record "
                         f"{snapshot_seq}{where}, were trimmed: replay needs a snapshot at record {first_seq - 1} "
                         f"or later")


def stream_name(unit: str) -> str:
    return f"D11-{unit}"


def subject_of(unit: str) -> str:
    return f"double11.log.{unit}"


def check_unit(unit: str) -> str:
    if not _UNIT_NAME.fullmatch(unit):
        raise ValueError(f"unit name must be 1-64 letters, digits, '-' or '_', got {unit!r}")
    return unit


# ------------------------------------------------------------- the loop thread
class LoopThread:
    """An asyncio event loop running in a thread of its own; other threads hand it coroutines."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, _T], timeout_s: float) -> _T:
        return self.submit(coro).result(timeout_s)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        # what is still waiting (a lease being taken at a stop) is cancelled, not
        # left to be "destroyed but pending" in the process's output
        with contextlib.suppress(Exception):
            self.submit(_cancel_the_rest()).result(limits.nats_stop_s_max)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _cancel_the_rest() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def connect(urls: list[str]) -> Client:
    """A client that reconnects to any node for as long as it lives."""
    async def quiet(exc: Exception) -> None:  # a node going away is expected: the retries say what matters
        pass

    return await nats.connect(servers=urls, connect_timeout=limits.stream_connect_s_max / 4,
                              allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                              error_cb=quiet)


async def ensure_stream(js: JetStreamContext, unit: str, replicas: int) -> api.StreamInfo:
    """The unit's stream, created if the cluster has none yet."""
    name = stream_name(unit)
    try:
        return await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        pass
    config = api.StreamConfig(name=name, subjects=[subject_of(unit)], storage=api.StorageType.FILE,
                              num_replicas=replicas, retention=api.RetentionPolicy.LIMITS,
                              duplicate_window=limits.stream_dedup_window_s,
                              max_msg_size=limits.nats_payload_bytes_max)
    return await js.add_stream(config)


# ------------------------------------------------------------------ the log
@dataclass
class _Record:
    seq: int
    data: bytes
    headers: dict[str, str]
    sent: asyncio.Future[asyncio.Future[api.PubAck]] | None = field(default=None)  # set on the loop


async def when_ready(nc: Client, attempt: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """attempt(), tried again while a cluster just started still places its
    streams (a transient error, for up to stream_connect_s_max); the
    connection is closed if it fails for good."""
    deadline = time.monotonic() + limits.stream_connect_s_max
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if time.monotonic() > deadline or not is_transient(exc):
                await nc.close()
                raise
            await asyncio.sleep(0.2)


def is_transient(exc: BaseException) -> bool:
    """Errors a leader change or a lost connection gives: the record is sent again."""
    if isinstance(exc, nats.js.errors.APIError):
        return exc.err_code == _DUPLICATE_IN_PROCESS or (
            exc.err_code != _WRONG_LAST_SEQUENCE and (exc.code or 0) in (0, 503, 408))
    return isinstance(exc, (asyncio.TimeoutError, TimeoutError, nats.errors.Error, ConnectionError))


class StreamLog:
    """The command log of unit `unit` on the cluster at `urls`; the next record is `next_seq`."""

    def __init__(self, urls: list[str], unit: str, next_seq: int, replicas: int = limits.stream_replicas) -> None:
        self.unit = check_unit(unit)
        self.stream = stream_name(unit)
        self.subject = subject_of(unit)
        self.next_seq = next_seq
        self.bytes_written = 0
        self.syncs = 0
        self.retries = 0  # records sent again (a leader change, a lost connection)
        self.writer = secrets.token_hex(6)
        self._unconfirmed: collections.deque[_Record] = collections.deque()
        self._io = LoopThread(f"double11-stream-{unit}")
        try:
            self._nc, self._js = self._io.call(self._open(urls, replicas), limits.stream_connect_s_max * 2)
        except StreamLogError:
            self._io.close()
            raise
        except BaseException as exc:
            self._io.close()
            raise StreamLogError(errno.EHOSTUNREACH, f"the stream {self.stream} could not be opened on "
                                 f"{', '.join(urls)}: {type(exc).__name__}: {exc}") from exc

    async def _open(self, urls: list[str], replicas: int) -> tuple[Client, JetStreamContext]:
        nc = await connect(urls)
        js = nc.jetstream(timeout=limits.stream_ack_wait_s)
        info = await when_ready(nc, lambda: ensure_stream(js, self.unit, replicas))
        last = info.state.last_seq
        if last != self.next_seq - 1:
            await nc.close()
            raise StreamLogError(errno.EINVAL, f"the stream {self.stream} ends at record {last}, but this log "
                                 f"goes on from record {self.next_seq}: replay the stream first")
        self._queue: asyncio.Queue[_Record | None] = asyncio.Queue()
        self._sender = asyncio.get_running_loop().create_task(self._send_in_order(js))
        return nc, js

    # ------------------------------------------------------------- records
    def append(self, now_ms: int, payload: bytes | memoryview) -> int:
        """Sends one record (not yet confirmed: `sync`); returns its sequence number."""
        seq = self.next_seq
        data = RECORD_HEAD.pack(seq, now_ms) + bytes(payload)
        if len(data) > limits.nats_payload_bytes_max:
            raise StreamLogError(errno.EMSGSIZE, f"a log record of {len(data):,} bytes is over the stream's "
                                 f"{limits.nats_payload_bytes_max:,} (limits.nats_payload_bytes_max)")
        record = _Record(seq, data, {"Nats-Msg-Id": f"{self.unit}:{seq}:{self.writer}",
                                     "Nats-Expected-Last-Sequence": str(seq - 1)})
        self._unconfirmed.append(record)
        self._io.loop.call_soon_threadsafe(self._enqueue, record)
        self.next_seq = seq + 1
        self.bytes_written += len(data)
        return seq

    def _enqueue(self, record: _Record) -> None:  # on the loop, in append's order
        record.sent = self._io.loop.create_future()
        self._queue.put_nowait(record)

    async def _send_in_order(self, js: JetStreamContext) -> None:
        """The one sender: records leave in sequence order (one await after another)."""
        while (record := await self._queue.get()) is not None:
            assert record.sent is not None
            try:
                ack = await js.publish_async(self.subject, record.data, headers=record.headers)
            except Exception as exc:  # noqa: BLE001 (handed to sync, which sends again or says it)
                record.sent.set_exception(exc)
            else:
                record.sent.set_result(ack)

    def sync(self) -> None:
        """Returns once the stream holds every record appended so far (group
        commit: one call covers many); raises StreamLogError if it did not take
        one within limits.stream_retry_s_max."""
        records = list(self._unconfirmed)
        if records:
            try:
                self._io.call(self._confirm(records), limits.stream_retry_s_max + 2 * limits.stream_ack_wait_s)
            except StreamLogError:
                raise
            except Exception as exc:
                raise StreamLogError(errno.ETIMEDOUT, f"the stream {self.stream} did not confirm record "
                                     f"{records[0].seq}: {type(exc).__name__}: {exc}") from exc
            for _ in records:
                self._unconfirmed.popleft()
        self.syncs += 1

    async def _confirm(self, records: list[_Record]) -> None:
        deadline = time.monotonic() + limits.stream_retry_s_max
        for record in records:  # in order: a record is confirmed only after every one before it
            assert record.sent is not None
            try:
                ack_future = await record.sent
                ack = await asyncio.wait_for(asyncio.shield(ack_future), limits.stream_ack_wait_s)
            except Exception as exc:
                if not (is_transient(exc) or is_wrong_last_sequence(exc)):
                    raise StreamLogError(errno.EIO, f"the stream {self.stream} refused record {record.seq}: "
                                         f"{exc}") from exc
                if record.sent.done() and not record.sent.exception():
                    record.sent.result().cancel()  # frees its slot among the client's pending publishes
                ack = await self._send_again(record, deadline)
            self._check(record, ack)

    async def _send_again(self, record: _Record, deadline: float) -> api.PubAck:
        """Sends the record again until the stream holds it (every record before
        it is already there, so its expected last sequence holds)."""
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            self.retries += 1
            try:
                return await self._js.publish(self.subject, record.data, timeout=limits.stream_ack_wait_s,
                                              headers=record.headers)
            except Exception as exc:
                last_error = exc
                if is_wrong_last_sequence(exc):  # the stream is past seq - 1: is this record there already?
                    if await self._holds(record):
                        return api.PubAck(stream=self.stream, seq=record.seq, duplicate=True)
                    raise StreamLogError(errno.EIO, f"the stream {self.stream} does not end at record "
                                         f"{record.seq - 1} and holds no record {record.seq} of this log's: "
                                         f"another writer wrote there") from exc
                if not is_transient(exc):
                    raise StreamLogError(errno.EIO, f"the stream {self.stream} refused record {record.seq}: "
                                         f"{exc}") from exc
                await asyncio.sleep(0.1)
        raise StreamLogError(errno.ETIMEDOUT, f"the stream {self.stream} did not take record {record.seq} within "
                             f"{limits.stream_retry_s_max:g} s (limits.stream_retry_s_max): "
                             f"{type(last_error).__name__}: {last_error}")

    async def _holds(self, record: _Record) -> bool:
        try:
            held = await self._js.get_msg(self.stream, record.seq)
        except nats.js.errors.NotFoundError:
            return False
        return (held.headers or {}).get("Nats-Msg-Id") == record.headers["Nats-Msg-Id"]

    def _check(self, record: _Record, ack: api.PubAck) -> None:
        if ack.stream != self.stream or ack.seq != record.seq:
            raise StreamLogError(errno.EIO, f"record {record.seq} was stored as {ack.stream} record {ack.seq}: "
                                 f"the stream has another writer")

    # ------------------------------------------------------------ the rest
    def start_segment(self, first_seq: int) -> None:
        """A snapshot was written at first_seq - 1: the stream goes on as it is."""

    def drop_segments_before(self, first_seq: int) -> None:
        """Kept: the stream is the unit's log for every machine, and the others
        have no copy of this one's local snapshots.  The stream is trimmed
        below the oldest snapshot kept in the cluster's object store, once one
        is published there (cluster/snapshots.py)."""

    def unwritable(self) -> str | None:
        return None  # a leader change is waited out by sending again (a LeasedStreamLog says its lease)

    def cut_back(self) -> str:
        """After a failed sync: nothing more is sent, and says what the stream
        may hold.  A record sent but not confirmed may still land (its
        commands were never answered as done; their idempotency keys answer
        a retry from the first result after a reopen)."""
        first = self._unconfirmed[0].seq if self._unconfirmed else self.next_seq
        self._shut()
        return (f"the stream {self.stream} confirmed every record before {first}; the records from {first} on "
                f"were never acknowledged and may or may not be in it")

    def close(self) -> None:
        try:
            if self._unconfirmed:
                self.sync()
        finally:
            self._shut()

    def _shut(self) -> None:
        if self._io.loop.is_closed():
            return

        async def stop() -> None:
            await self._queue.put(None)
            await self._sender
            await self._nc.close()

        _stop_on(self._io, stop)


def _stop_on(io: Any, stop: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs `stop` on the client's loop (a bounded wait), then ends the loop."""
    try:
        io.call(stop(), limits.nats_stop_s_max)
    except Exception:  # noqa: BLE001 (the connection is gone either way)
        pass
    finally:
        io.close()


def is_wrong_last_sequence(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == _WRONG_LAST_SEQUENCE


# ---------------------------------------------------------------- reading back
class StreamReader:
    """Reads a unit's stream from a sequence number on, in order, checking
    that each record is the next one (an ephemeral pull consumer)."""

    def __init__(self, urls: list[str], unit: str, after_seq: int, replicas: int = limits.stream_replicas) -> None:
        self.unit = check_unit(unit)
        self.stream = stream_name(unit)
        self.expected = after_seq + 1
        self._io = LoopThread(f"double11-read-{unit}")
        try:
            self._nc, self._js, self._sub = self._io.call(self._open(urls, replicas), limits.stream_connect_s_max * 2)
        except BaseException:
            self._io.close()
            raise

    async def _open(self, urls: list[str], replicas: int) -> tuple[Client, JetStreamContext, Any]:
        nc = await connect(urls)
        js = nc.jetstream(timeout=limits.stream_replay_wait_s)
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.expected,
                                    ack_policy=api.AckPolicy.NONE, inactive_threshold=60.0,
                                    num_replicas=1, mem_storage=True)

        async def subscribe() -> Any:
            info = await ensure_stream(js, self.unit, replicas)  # a unit not yet written has an empty one
            # records after `expected - 1` that the stream no longer holds (a stream trimmed to
            # its end keeps its last sequence: first_seq is then last_seq + 1, with no record)
            if info.state.first_seq > self.expected and self.expected <= info.state.last_seq:
                raise StreamTrimmed(self.stream, self.expected - 1, info.state.first_seq)
            return await js.pull_subscribe(subject_of(self.unit), stream=self.stream, config=config)

        return nc, js, await when_ready(nc, subscribe)

    def last_seq(self) -> int:
        async def last() -> int:
            try:
                return int((await self._js.stream_info(self.stream)).state.last_seq)
            except nats.errors.Error as exc:
                raise StreamLogError(errno.EAGAIN, f"the stream {self.stream}'s end could not be read: "
                                     f"{type(exc).__name__}: {exc}") from exc
        return self._io.call(last(), limits.stream_replay_wait_s * 2)

    def fetch(self, records_max: int = limits.stream_replay_fetch_records_max,
              wait_s: float = limits.stream_replay_wait_s) -> list[tuple[int, int, memoryview]]:
        """The next records, at most records_max; [] if none came within wait_s."""
        async def fetch() -> list[Any]:
            try:
                return list(await self._sub.fetch(records_max, timeout=wait_s))
            except (TimeoutError, nats.errors.TimeoutError):
                return []
            except nats.errors.Error as exc:  # a replica catching up, no leader yet: the reader's caller retries
                raise StreamLogError(errno.EAGAIN, f"the stream {self.stream} could not be read at record "
                                     f"{self.expected}: {type(exc).__name__}: {exc}") from exc
        out: list[tuple[int, int, memoryview]] = []
        for msg in self._io.call(fetch(), wait_s * 2 + limits.stream_ack_wait_s):
            stream_seq = msg.metadata.sequence.stream
            seq, now_ms = RECORD_HEAD.unpack_from(msg.data)
            if stream_seq > self.expected and seq == stream_seq:
                # records skipped in delivery (a pull that expired with messages on their way,
                # which a consumer without acks does not send again), or trimmed: the caller
                # reads again from `expected`, where a trimmed stream says so (StreamTrimmed)
                raise StreamGap(errno.EAGAIN, f"the stream {self.stream} gave record {seq} where record "
                                f"{self.expected} belongs")
            if stream_seq != self.expected or seq != stream_seq:
                raise StreamLogError(errno.EIO, f"the stream {self.stream} gave record {seq} at position "
                                     f"{stream_seq} where record {self.expected} belongs")
            out.append((seq, now_ms, memoryview(msg.data)[RECORD_HEAD.size:]))
            self.expected = seq + 1
        return out

    def close(self) -> None:
        if self._io.loop.is_closed():
            return

        async def stop() -> None:
            try:
                await self._sub.unsubscribe()
            finally:
                await self._nc.close()

        _stop_on(self._io, stop)


def stream_replay(urls: list[str], unit: str, after_seq: int,
                  replicas: int = limits.stream_replicas) -> Iterator[tuple[int, int, memoryview]]:
    """(seq, now_ms, payload) of every record of the unit's stream after
    after_seq, as storage.log.replay gives a folder's: in order, contiguous
    (StreamLogError otherwise), up to the stream's last record when it began."""
    reader = StreamReader(urls, unit, after_seq, replicas)
    try:
        last = reader.last_seq()
        while reader.expected <= last:
            try:
                records = reader.fetch()
            except StreamGap:  # read again from the record expected (StreamTrimmed if it is gone)
                expected = reader.expected
                reader.close()
                reader = StreamReader(urls, unit, expected - 1, replicas)
                continue
            if not records:
                raise StreamLogError(errno.ETIMEDOUT, f"the stream {reader.stream} gave no record "
                                     f"{reader.expected} of {last} within {limits.stream_replay_wait_s:g} s")
            yield from records
    finally:
        reader.close()


def ask_cluster(urls: list[str], name: str, question: Callable[[Client], Coroutine[Any, Any, _T]],
                timeout_s: float = limits.stream_connect_s_max * 2) -> _T:
    """One question to the cluster from a thread without an event loop: a
    connection of its own, `question(client)` (answered within timeout_s),
    and the connection closed."""
    io = LoopThread(name)

    async def ask() -> _T:
        nc = await connect(urls)
        try:
            return await question(nc)
        finally:
            await nc.close()

    try:
        return io.call(ask(), timeout_s)
    finally:
        io.close()


def stream_info(urls: list[str], unit: str) -> api.StreamInfo:
    """The unit's stream as the cluster sees it now: its leader and replicas, first and last records."""
    async def info(nc: Client) -> api.StreamInfo:
        return await nc.jetstream(timeout=limits.stream_replay_wait_s).stream_info(stream_name(check_unit(unit)))

    return ask_cluster(urls, f"double11-info-{unit}", info)
