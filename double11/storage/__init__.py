"""Durability: the command log (group commit) and snapshots."""

from __future__ import annotations

from pathlib import Path


def numbered(directory: Path, prefix: str, suffix: str) -> list[tuple[int, Path]]:
    """Files named PREFIX-<sequence number>SUFFIX in a folder, in sequence order."""
    found = []
    for p in directory.glob(f"{prefix}-*{suffix}"):
        number = p.name[len(prefix) + 1: len(p.name) - len(suffix)]
        if number.isdigit():
            found.append((int(number), p))
    return sorted(found)
