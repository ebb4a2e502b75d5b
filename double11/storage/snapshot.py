"""Snapshots: the engine's whole state at a log sequence number, as named arrays.

A snapshot file (format 2, `snapshot-<seq>.d11snap`) is

    [8 bytes magic][u32 format version][u32 zero][u64 header bytes]
    [header: UTF-8 JSON]  [array][array]...  (each array at a 64-byte aligned offset)

The header holds the format version, the sequence number, the scalars (plain
JSON) and the schema: each array's name, dtype (a structured record's names,
formats and offsets spelled out), shape and offset.  Arrays are written
straight from the engine's buffers and read straight into new ones
(`readinto`), so nothing is pickled and a reader needs no code of the writer:
a later release can read this file by its schema, and refuses what it cannot.

Format 1 (`snapshot-<seq>.pickle`) is the pickled Engine of the releases
before; it is still read (the pickle is the platform's own file, trusted like
the log) and never written.  Recovery takes the latest snapshot of either kind.

Written to a temporary file, fsynced, then renamed, so a crash leaves either
the old snapshot or the new one, never half of one.  A write that fails (a
full disk at any step) removes what it wrote, giving the space back, and
leaves the previous snapshot as it was: the older snapshots go only once the
new one is durable.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from double11.storage import UnreadableData, fsync_dir, newer_format, numbered

SNAPSHOT_FORMAT = 2
_MAGIC = b"d11snap\n"
_PREAMBLE = struct.Struct("<8sIIQ")
_ALIGN = 64  # an array starts on a cache line: its rows read in place, never straddling one needlessly
_SUFFIX = ".d11snap"
_PICKLE_SUFFIX = ".pickle"  # format 1
_TMP_SUFFIX = ".tmp"  # a snapshot being written


class SnapshotNotWritten(OSError):
    """A snapshot that could not be written (its errno: ENOSPC for a full disk).
    Nothing of it is left on disk and the previous snapshot is as it was; the
    message says so, in one line, for the operator."""

    def __init__(self, message: str, cause: OSError) -> None:
        super().__init__(cause.errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class State:
    """What a snapshot holds: JSON scalars and named arrays (any shape, any
    dtype without objects).  Arrays may be views of live buffers: `write` only
    reads them."""

    scalars: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _name(seq: int) -> str:
    return f"snapshot-{seq:016d}{_SUFFIX}"


def latest(directory: Path) -> tuple[int, Path] | None:
    """The snapshot with the highest sequence number, of either format (the new
    one where both hold the same: a crash between writing it and removing the old)."""
    found = [(seq, 1, p) for seq, p in numbered(directory, "snapshot", _PICKLE_SUFFIX)]
    found += [(seq, 2, p) for seq, p in numbered(directory, "snapshot", _SUFFIX)]
    if not found:
        return None
    seq, _, path = max(found)
    return seq, path


# ------------------------------------------------------------------ schema
def dtype_schema(dtype: np.dtype) -> str | dict[str, Any]:
    """A dtype as JSON: its string for a plain one, names/formats/offsets/itemsize
    for a record (padding and alignment included, so the bytes read back as written)."""
    if dtype.names is None:
        if dtype.hasobject or dtype.subdtype is not None:
            raise TypeError(f"a snapshot array cannot hold {dtype}")
        return dtype.str
    fields: dict[str, Any] = dict(dtype.fields or {})
    return {"names": list(dtype.names), "formats": [dtype_schema(fields[n][0]) for n in dtype.names],
            "offsets": [fields[n][1] for n in dtype.names], "itemsize": dtype.itemsize}


def dtype_of(schema: str | dict[str, Any]) -> np.dtype:
    if isinstance(schema, str):
        return np.dtype(schema)
    return np.dtype({"names": schema["names"], "formats": [dtype_of(f) for f in schema["formats"]],
                     "offsets": schema["offsets"], "itemsize": schema["itemsize"]})


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


# ------------------------------------------------------------------ writing
def write(directory: Path, seq: int, state: State) -> Path:
    """Writes the state as the snapshot at `seq` (atomically), then removes the
    older snapshots of either format.  Raises the OSError of a step that
    failed, having removed what it wrote: the folder holds what it held."""
    arrays = {name: np.ascontiguousarray(a) for name, a in state.arrays.items()}
    # the header's length fixes where the arrays start, and the header holds their
    # offsets: lay the arrays out after a generous guess of the header's size
    schema: list[dict[str, Any]] = [
        {"name": name, "dtype": dtype_schema(a.dtype), "shape": list(a.shape), "nbytes": a.nbytes}
        for name, a in arrays.items()]
    header = {"format": SNAPSHOT_FORMAT, "seq": seq, "scalars": state.scalars, "arrays": schema}
    room = _aligned(_PREAMBLE.size + len(json.dumps(header)) + 32 * len(schema) + 64)
    at = room
    for entry in schema:
        entry["offset"] = at
        at = _aligned(at + entry["nbytes"])
    header["end"] = at
    text = json.dumps(header, separators=(",", ":")).encode()
    assert _PREAMBLE.size + len(text) <= room, "snapshot header outgrew its room"
    path = directory / _name(seq)
    tmp = path.with_suffix(_TMP_SUFFIX)
    # the same state written again (no command since) replaces a snapshot that
    # must then stay, whatever happens to this write
    replaces_one = path.exists()
    renamed = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, _PREAMBLE.pack(_MAGIC, SNAPSHOT_FORMAT, 0, len(text)) + text)
            for entry, a in zip(schema, arrays.values(), strict=True):
                os.lseek(fd, entry["offset"], os.SEEK_SET)
                _write_all(fd, a.data.cast("B") if a.nbytes else b"")
            os.ftruncate(fd, at)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        renamed = True
        fsync_dir(directory)
    except BaseException:
        # a full disk most likely: give its space back; the older snapshots
        # are still there (a crash now recovers from one of them or from this
        # one, whose bytes are on disk: both with the log they need)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if renamed and not replaces_one:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise
    # durable: the older snapshots, and a temporary file a crash left, can go
    for pattern in (f"snapshot-*{_PICKLE_SUFFIX}", f"snapshot-*{_SUFFIX}", f"snapshot-*{_TMP_SUFFIX}"):
        for p in directory.glob(pattern):
            if p != path:
                p.unlink()
    return path


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------ reading
class Snapshot:
    """An open format 2 snapshot: its scalars and schema; arrays are read on
    request, into a new array or into a buffer the caller made (a table with
    room to grow)."""

    def __init__(self, path: Path, seq: int, scalars: dict[str, Any], schema: list[dict[str, Any]],
                 f: io.BufferedReader):
        self.path, self.seq, self.scalars = path, seq, scalars
        self.schema = {entry["name"]: entry for entry in schema}
        self._f = f

    def dtype(self, name: str) -> np.dtype:
        return dtype_of(self._entry(name)["dtype"])

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)["shape"])

    def array(self, name: str) -> np.ndarray:
        out = np.empty(self.shape(name), dtype=self.dtype(name))
        self.read_into(name, out)
        return out

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Reads array `name` into `out`, which must be C-contiguous, of its
        dtype and shape."""
        entry = self._entry(name)
        if out.dtype != self.dtype(name) or out.shape != self.shape(name) or not out.flags.c_contiguous:
            raise UnreadableData(f"{self.path}: array {name} is {self.dtype(name)} {self.shape(name)}, "
                                 f"read into {out.dtype} {out.shape}")
        self._f.seek(entry["offset"])
        view = out.data.cast("B") if out.nbytes else memoryview(bytearray())
        got = 0
        while got < len(view):
            n = self._f.readinto(view[got:])
            if not n:
                raise UnreadableData(f"{self.path}: array {name} is cut short")
            got += n

    def _entry(self, name: str) -> dict[str, Any]:
        entry = self.schema.get(name)
        if entry is None:
            raise UnreadableData(f"{self.path}: no array {name!r} in this snapshot")
        return entry

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def snapshot_format(path: Path) -> int:
    """1 for a pickled snapshot, else the version in the file's preamble."""
    if path.name.endswith(_PICKLE_SUFFIX):
        return 1
    with open(path, "rb") as f:
        preamble = f.read(_PREAMBLE.size)
    if len(preamble) < _PREAMBLE.size or preamble[:8] != _MAGIC:
        raise UnreadableData(f"{path}: not a double11 snapshot (no snapshot preamble)")
    return _PREAMBLE.unpack(preamble)[1]


def open_snapshot(path: Path) -> Snapshot:
    """Opens a format 2 snapshot; refuses a newer format, naming the file and version."""
    version = snapshot_format(path)
    if version > SNAPSHOT_FORMAT:
        raise newer_format(path, "snapshot", version, SNAPSHOT_FORMAT)
    if version != SNAPSHOT_FORMAT:
        raise UnreadableData(f"{path}: snapshot format {version} is not read by open_snapshot")
    f = open(path, "rb")  # noqa: SIM115 - the Snapshot owns it until closed
    try:
        _, _, _, header_bytes = _PREAMBLE.unpack(f.read(_PREAMBLE.size))
        header = json.loads(f.read(header_bytes))
        size = os.fstat(f.fileno()).st_size
        if size != header["end"]:
            raise UnreadableData(f"{path}: {size} bytes where its header says {header['end']}")
        return Snapshot(path, header["seq"], header["scalars"], header["arrays"], f)
    except BaseException:
        f.close()
        raise


def read_pickled(path: Path) -> Any:
    """A format 1 snapshot: the Engine object the releases before pickled."""
    with open(path, "rb") as f:
        return pickle.load(f)
