"""Snapshots: the engine's whole state at a log sequence number.

Written to a temporary file, fsynced, then renamed, so a crash leaves either
the old snapshot or the new one, never half of one.  The state is plain NumPy
arrays and builtins; pickle protocol 5 writes the arrays without copies.
The file is the platform's own, on its own disk: it is trusted like the log.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from double11.storage import numbered


def _name(seq: int) -> str:
    return f"snapshot-{seq:016d}.pickle"


def latest(directory: Path) -> tuple[int, Path] | None:
    found = numbered(directory, "snapshot", ".pickle")
    return found[-1] if found else None


def write(directory: Path, seq: int, state: Any) -> Path:
    path = directory / _name(seq)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(state, f, protocol=5)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for p in directory.glob("snapshot-*.pickle"):
        if p != path:
            p.unlink()
    return path


def read(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)
