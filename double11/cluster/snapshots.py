"""A unit's snapshots in the cluster's object store, and the trimming of its stream.

Each unit's snapshots live in the bucket `d11-snapshots` (3 replicas, file
storage, as the streams: it serves with a node gone), one object per
snapshot, `<unit>/<position>` (the position 16 digits wide): the snapshot
file as storage/snapshot.py wrote it, in chunks of
limits.unit_snapshot_chunk_bytes, with the festival's clock in a header.  A
snapshot at position n holds the state after the stream's records 1..n (a
StreamLog's record n is stream message n, and Durability.snapshot writes at
the last record the stream confirmed), so replay goes on from record n + 1.

Who calls what:
- `publish_snapshot(festival)`: the unit's primary (cluster/node.py), from a
  thread of its own, every so often while it serves and once as it closes.
  It writes the festival's snapshot in its folder (Festival.snapshot, under
  the festival's lock), then, outside the lock while the unit serves, puts
  that file in the bucket, keeps the unit's latest limits.unit_snapshots_kept
  and trims the unit's stream below the oldest one kept: a JetStream purge
  up to record m + 1, m that snapshot's position, so the stream keeps m + 1
  on.  One publisher per unit: its primary.
- `fetch_latest(urls, unit, folder)`: open_unit and Standby.from_snapshot,
  before they read the folder.  When the bucket's latest snapshot of the unit
  is newer than the folder's (an empty folder: a new machine), it is fetched
  into the folder (its digest checked by the client, its position checked
  against its name), with the primary's clock if the folder has none.

A stream trimmed beyond the snapshot a machine starts from is refused
(stream_log.StreamTrimmed), never replayed with records missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import io
import json
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.object_store import ObjectStore

from double11 import limits
from double11.cluster.stream_log import ask_cluster, check_unit, is_transient, stream_name, when_ready
from double11.storage import fsync_dir
from double11.storage import snapshot as snapshot_files

if TYPE_CHECKING:
    from double11.cluster.unit import UnitFestival

BUCKET = "d11-snapshots"
_CLOCK_HEADER = "Double11-Clock"  # the festival clock's settings (clock.json), so a new machine keeps the unit's day
_FETCHING_SUFFIX = ".fetching"  # a snapshot on its way from the bucket
_RETRY_WAIT_S = 0.5
_T = TypeVar("_T")


class SnapshotStoreError(OSError):
    """A snapshot that could not be put in or fetched from the bucket: one line.
    A put that failed trimmed nothing; a fetch that failed left the folder as it was."""


@dataclass(frozen=True)
class PublishedSnapshot:
    seq: int  # the snapshot's position: it holds records 1..seq
    size_bytes: int
    kept: list[int]  # the unit's snapshots in the bucket, oldest first
    stream_first_seq: int  # the stream's first record after trimming


def object_name(unit: str, seq: int) -> str:
    return f"{check_unit(unit)}/{seq:016d}"


def _position(name: str, unit: str) -> int | None:
    prefix = f"{unit}/"
    number = name[len(prefix):]
    return int(number) if name.startswith(prefix) and number.isdigit() else None


def _transfer_s(size_bytes: int) -> float:
    """How long one try of a snapshot's put or fetch may last."""
    return limits.stream_connect_s_max + size_bytes / limits.unit_snapshot_bytes_per_s_min


def _transient(exc: BaseException) -> bool:
    # nats-py raises its not-found errors without a status code, which reads as transient
    return not isinstance(exc, nats.js.errors.NotFoundError) and is_transient(exc)


async def _retrying(attempt: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """attempt(), tried again after a transient error (a node gone, an
    election) for up to limits.unit_snapshot_retry_s_max."""
    deadline = time.monotonic() + limits.unit_snapshot_retry_s_max
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if time.monotonic() > deadline or not _transient(exc):
                raise
            await asyncio.sleep(_RETRY_WAIT_S)


def _jetstream(nc: Client) -> JetStreamContext:
    return nc.jetstream(timeout=limits.unit_snapshot_chunk_ack_wait_s)


async def _bucket(nc: Client, create: bool) -> ObjectStore | None:
    """The cluster's snapshot bucket (None: there is none yet and create is False)."""
    js = _jetstream(nc)

    async def open_it() -> ObjectStore | None:
        try:
            return await js.object_store(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            if not create:
                return None
        config = api.ObjectStoreConfig(description="double11: each unit's latest snapshots",
                                       storage=api.StorageType.FILE, replicas=limits.stream_replicas)
        return await js.create_object_store(BUCKET, config=config)

    return await when_ready(nc, open_it)


async def _unit_snapshots(store: ObjectStore, unit: str) -> dict[int, api.ObjectInfo]:
    """The unit's snapshots in the bucket, by position."""
    try:
        infos = await _retrying(lambda: store.list(ignore_deletes=True))
    except nats.js.errors.NotFoundError:  # an empty bucket
        return {}
    found = {}
    for info in infos:
        seq = _position(info.name, unit)
        if seq is not None and not info.deleted:
            found[seq] = info
    return found


def unit_snapshots(urls: list[str], unit: str) -> list[int]:
    """The positions of the unit's snapshots in the bucket, oldest first."""
    async def positions(nc: Client) -> list[int]:
        store = await _bucket(nc, create=False)
        return [] if store is None else sorted(await _unit_snapshots(store, check_unit(unit)))

    return ask_cluster(urls, f"double11-snapshots-{unit}", positions)


# --------------------------------------------------------------- publishing
def publish_snapshot(festival: UnitFestival, kept: int = limits.unit_snapshots_kept) -> PublishedSnapshot:
    """Writes the festival's snapshot in its folder, then puts it in the
    bucket, keeps the unit's latest `kept` and trims the stream below the
    oldest of them (put_snapshot).  Raises SnapshotNotWritten (storage) if the
    folder could not take the snapshot, SnapshotStoreError if the bucket did
    not: the stream is then not trimmed."""
    if kept < 1:
        raise ValueError(f"kept must be at least 1 (the snapshot the stream goes on from), got {kept}")
    assert festival.data_dir is not None, "a unit's festival has a folder"
    festival.snapshot()
    return put_snapshot(festival.urls, festival.unit, festival.data_dir, json.dumps(festival.clock.to_dict()), kept)


def put_snapshot(urls: list[str], unit: str, directory: Path, clock: str,
                 kept: int = limits.unit_snapshots_kept) -> PublishedSnapshot:
    """Puts the folder's latest snapshot in the bucket with the festival's
    clock (clock.json's text), unless the bucket holds that position already;
    keeps the unit's latest `kept` and trims the stream below the oldest."""
    found = snapshot_files.latest(directory)
    if found is None:
        raise SnapshotStoreError(errno.ENOENT, f"{directory} holds no snapshot of unit {unit} to publish")
    seq, path = found
    with open(path, "rb") as f:  # held open: a later snapshot may replace the file, not what is read from it
        size = os.fstat(f.fileno()).st_size

        async def publish(nc: Client) -> PublishedSnapshot:
            return await _publish(nc, unit, seq, f, size, clock, kept)

        try:
            return ask_cluster(urls, f"double11-publish-{unit}", publish,
                               timeout_s=limits.unit_snapshot_retry_s_max + 2 * _transfer_s(size))
        except Exception as exc:
            raise SnapshotStoreError(errno.EIO, f"the snapshot of unit {unit} at record {seq} could not be put in "
                                     f"the object store {BUCKET}: {type(exc).__name__}: {exc}; the stream was not "
                                     f"trimmed") from exc


async def _publish(nc: Client, unit: str, seq: int, f: io.BufferedReader, size: int, clock: str,
                   kept: int) -> PublishedSnapshot:
    store = await _bucket(nc, create=True)
    assert store is not None
    held = await _unit_snapshots(store, unit)
    if seq not in held:
        meta = api.ObjectMeta(headers={_CLOCK_HEADER: [clock]},
                              options=api.ObjectMetaOptions(max_chunk_size=limits.unit_snapshot_chunk_bytes))

        async def put() -> api.ObjectInfo:
            f.seek(0)
            return await asyncio.wait_for(store.put(object_name(unit, seq), f, meta), _transfer_s(size))

        held[seq] = await _retrying(put)
    positions = sorted(held)
    for old in positions[:-kept]:
        with contextlib.suppress(nats.js.errors.NotFoundError):  # gone already
            await _retrying(functools.partial(store.delete, object_name(unit, old)))
    positions = positions[-kept:]
    first = await _trim(_jetstream(nc), unit, positions[0] + 1)
    return PublishedSnapshot(seq, size, positions, first)


async def _trim(js: JetStreamContext, unit: str, first_kept: int) -> int:
    """Purges the unit's stream below record first_kept; its first record after that."""
    name = stream_name(unit)
    state = (await _retrying(lambda: js.stream_info(name))).state
    if state.first_seq < first_kept <= state.last_seq + 1:
        await _retrying(lambda: js.purge_stream(name, seq=first_kept))
        return first_kept
    return int(state.first_seq)


# ----------------------------------------------------------------- fetching
def fetch_latest(urls: list[str], unit: str, directory: Path) -> int | None:
    """Brings the bucket's latest snapshot of the unit into the folder when it
    is newer than the folder's latest (and the unit's clock, when the folder
    has none); the position of the folder's latest snapshot afterwards (None:
    neither holds one)."""
    check_unit(unit)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    local = snapshot_files.latest(directory)
    have = local[0] if local else None

    async def latest(nc: Client) -> tuple[int, api.ObjectInfo] | None:
        store = await _bucket(nc, create=False)
        held = {} if store is None else await _unit_snapshots(store, unit)
        return max(held.items(), key=lambda item: item[0]) if held else None

    try:
        newest = ask_cluster(urls, f"double11-snapshots-{unit}", latest)
    except Exception as exc:
        raise SnapshotStoreError(errno.EHOSTUNREACH, f"the object store {BUCKET} could not be read on "
                                 f"{', '.join(urls)}: {type(exc).__name__}: {exc}") from exc
    if newest is None or (have is not None and newest[0] <= have):
        return have
    seq, info = newest
    _fetch(urls, unit, directory, seq, info)
    return seq


def _fetch(urls: list[str], unit: str, directory: Path, seq: int, info: api.ObjectInfo) -> None:
    name = object_name(unit, seq)
    size = int(info.size or 0)
    partial = directory / f"snapshot-{seq:016d}{_FETCHING_SUFFIX}"

    async def fetch(nc: Client) -> None:
        store = await _bucket(nc, create=False)
        if store is None:
            raise SnapshotStoreError(errno.ENOENT, f"the object store {BUCKET} is gone")

        async def get() -> None:
            with open(partial, "wb") as f:
                await asyncio.wait_for(store.get(name, writeinto=f), _transfer_s(size))
                f.flush()
                os.fsync(f.fileno())

        await _retrying(get)

    try:
        ask_cluster(urls, f"double11-fetch-{unit}", fetch,
                    timeout_s=limits.unit_snapshot_retry_s_max + 2 * _transfer_s(size))
        with snapshot_files.open_snapshot(partial) as snap:  # the whole file, as its header says
            if snap.seq != seq:
                raise SnapshotStoreError(errno.EINVAL, f"the object {name} holds the snapshot at record "
                                         f"{snap.seq}, not {seq}")
        os.replace(partial, directory / snapshot_files._name(seq))
        fsync_dir(directory)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, (SnapshotStoreError, KeyboardInterrupt, SystemExit)):
            raise
        raise SnapshotStoreError(errno.EIO, f"the snapshot {name} could not be fetched from the object store "
                                 f"{BUCKET} into {directory}: {type(exc).__name__}: {exc}") from exc
    clock = (info.headers or {}).get(_CLOCK_HEADER)
    kept_clock = directory / "clock.json"
    if clock and not kept_clock.exists():
        text = clock[0] if isinstance(clock, list) else clock
        written = kept_clock.with_suffix(_FETCHING_SUFFIX)
        written.write_text(text)
        os.replace(written, kept_clock)
