"""Durability: the command log (group commit) and snapshots."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Makes a folder's entries durable (a file created, renamed or removed in it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def numbered(directory: Path, prefix: str, suffix: str) -> list[tuple[int, Path]]:
    """Files named PREFIX-<sequence number>SUFFIX in a folder, in sequence order."""
    found = []
    for p in directory.glob(f"{prefix}-*{suffix}"):
        number = p.name[len(prefix) + 1: len(p.name) - len(suffix)]
        if number.isdigit():
            found.append((int(number), p))
    return sorted(found)


class UnreadableData(ValueError):
    """A data folder's file this code cannot read: written by a newer double11,
    or not what its name says.  The message names the file and the version."""


def newer_format(path: Path, kind: str, version: int, supported: int) -> UnreadableData:
    return UnreadableData(f"{path}: {kind} format version {version}, written by a newer double11 (this one "
                          f"reads versions 1 to {supported}); open this data folder with that release or later")
