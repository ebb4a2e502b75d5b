"""A festival unit whose command log is a JetStream stream (stream_log.StreamLog).

Opening a unit is Festival.open with the log in the cluster: the latest
snapshot, the folder's or the cluster's object store's when that one is newer
(snapshots.py: a new machine starts from an empty folder), then every stream
record after it, then the festival goes on appending to the stream.  The
catalog and config live in the snapshots, as in a data folder.  The folder
keeps the snapshots and the clock; the stream keeps the commands, replicated,
trimmed below the oldest snapshot the object store keeps.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from double11 import limits
from double11.catalog import Catalog
from double11.cluster.lease import LeasedStreamLog, UnitLease
from double11.cluster.snapshots import BUCKET, fetch_latest
from double11.cluster.stream_log import StreamLog, StreamTrimmed, stream_name, stream_replay
from double11.config import FestivalConfig
from double11.engine.batch import CommandBatch
from double11.engine.machine import Engine
from double11.service.festival import Festival


def replay_stream(engine: Engine, urls: list[str], unit: str, seq: int) -> int:
    """Applies every record of the unit's stream after seq; the last record's sequence number."""
    def records() -> Iterator[tuple[CommandBatch, int]]:
        nonlocal seq
        for record_seq, now_ms, payload in stream_replay(urls, unit, seq):
            seq = record_seq
            yield CommandBatch.from_bytes(payload, trusted=True), now_ms

    for _ in engine.apply_all(records()):
        pass
    return seq


class UnitFestival(Festival):
    """A festival on a stream log; after a storage fault it reopens from the stream."""

    urls: list[str]
    unit: str
    stream_log: StreamLog  # the festival's log (durability.log), by its own type

    def reopener(self) -> Callable[[], Festival]:
        assert self.data_dir is not None
        return functools.partial(open_unit, self.urls, self.unit, self.data_dir, speedup=self.clock.speedup)


def open_unit(urls: list[str], unit: str, data_dir: str | Path, catalog: Catalog | None = None,
              config: FestivalConfig | None = None, speedup: float = 1.0,
              clock_start_ms: int | None = None, lease: UnitLease | None = None) -> UnitFestival:
    """Opens (or recovers) unit `unit` of the cluster at `urls`, its snapshots in data_dir
    (the object store's latest fetched there first when it is newer); with a lease
    (held: lease.py), its log takes no record once the lease is not held.  Raises
    StreamTrimmed if the stream no longer holds the records after the latest snapshot."""
    logs: list[StreamLog] = []

    def open_log(seq: int) -> StreamLog:
        logs.append(StreamLog(urls, unit, seq + 1) if lease is None else LeasedStreamLog(urls, unit, seq + 1, lease))
        return logs[0]

    deadline = time.monotonic() + limits.stream_connect_s_max
    while True:
        fetch_latest(urls, unit, Path(data_dir))
        try:
            festival = UnitFestival.recover(
                Path(data_dir), catalog, config, speedup, clock_start_ms,
                lambda engine, seq: replay_stream(engine, urls, unit, seq), open_log)
            break
        except StreamTrimmed as exc:
            # the stream was trimmed below a snapshot in the object store: a cluster just
            # started again may not show that bucket yet; looked for again for a while
            if time.monotonic() > deadline:
                raise trimmed_beyond(exc, unit, data_dir) from exc
            time.sleep(limits.unit_lease_poll_s * 5)
    festival.urls, festival.unit, festival.stream_log = list(urls), unit, logs[0]
    return festival


def trimmed_beyond(exc: StreamTrimmed, unit: str, data_dir: str | Path) -> StreamTrimmed:
    """The refusal, naming where the snapshot came from."""
    return StreamTrimmed(stream_name(unit), exc.snapshot_seq, exc.first_seq,
                         f" (unit {unit}'s latest, in {data_dir} or in the object store {BUCKET})")
