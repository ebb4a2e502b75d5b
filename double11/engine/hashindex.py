"""A hash index from uint64 keys to dense rows 0, 1, 2, ...

External ids (SKUs, buyers) and idempotency keys are arbitrary 64-bit numbers;
the engine works on dense rows so that every per-entity figure is a plain
array.  Open addressing with linear probing at load factor <= 0.6, compiled
with Numba: a probe is a multiply, a shift and (almost always) one cache miss.
Why 0.6 and not 1/2: the table is a power of two, and the engine's tables
are gigabytes, where every doubling costs (more TLB misses per walk; see
docs/performance.md, "Measurements behind the constants").
At 0.6, a key not in the table is found absent within 3.6 slots on average
(one or two cache lines).
A slot holds its key and row side by side, so a probe touches one cache line.
Key 0 marks an empty slot, so callers never insert 0.

The table is a plain (slots, 2) uint64 array so that the engine's compiled
lookup passes (`lookups.py`) probe it in place with `find_or_claim_one`.
"""

from __future__ import annotations

import numpy as np

from double11.engine.columns import touch_pages
from double11.engine.compiled import inline, kernel
from double11.engine.prefetch import prefetch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# the load factor kept: keys * LOAD_DEN <= slots * LOAD_NUM
LOAD_NUM, LOAD_DEN = 3, 5
_AHEAD = 16  # ids between prefetching a row and reading it


def _bits_for(keys: int) -> int:
    """Bits of the smallest table that holds `keys` at the kept load."""
    return max(10, int(-(-keys * LOAD_DEN // LOAD_NUM) - 1).bit_length())


@inline
def _home(key, shift):
    return np.int64((key * _GOLDEN) >> shift)


@kernel
def find_or_claim_one(table, shift, mask, key, new_row):
    """(row, added): the key's row, or new_row once the key is placed in
    its first empty slot."""
    slot = _home(key, shift)
    while True:
        found = table[slot, 0]
        if found == key:
            return np.int64(table[slot, 1]), False
        if found == 0:
            table[slot, 0] = key
            table[slot, 1] = np.uint64(new_row)
            return np.int64(new_row), True
        slot = (slot + 1) & mask


@kernel
def _lookup(table, shift, mask, keys, out):
    for i in range(len(keys)):
        key = keys[i]
        slot = _home(key, shift)
        out[i] = -1
        while True:
            found = table[slot, 0]
            if found == key:
                out[i] = np.int64(table[slot, 1])
                break
            if found == 0:
                break
            slot = (slot + 1) & mask


@kernel
def _find_or_claim(table, shift, mask, keys, size, rows, added):
    for i in range(len(keys)):
        rows[i], added[i] = find_or_claim_one(table, shift, mask, keys[i], size)
        if added[i]:
            size += 1
    return size


@kernel
def _place(table, shift, mask, keys, rows):
    for i in range(len(keys)):
        find_or_claim_one(table, shift, mask, keys[i], rows[i])


class HashIndex:
    def __init__(self, capacity: int = 1024, prefault: bool = False):
        """capacity: keys expected; the table is sized for it up front because
        growing means rehashing everything (a pause at the worst moment)."""
        self._alloc(_bits_for(capacity))
        if prefault:
            self.table.fill(0)
        self.size = 0

    def prefault(self) -> None:
        touch_pages(self.table)

    def _alloc(self, bits: int) -> None:
        self._bits = bits
        self.mask = np.int64((1 << bits) - 1)
        self.shift = np.uint64(64 - bits)
        # untouched slots cost address space only: pages are mapped on first write
        self.table = np.zeros((1 << bits, 2), dtype=np.uint64)

    def must_grow(self, extra: int) -> bool:
        """Whether `reserve(extra)` would grow the table (a pause: a rehash)."""
        return (self.size + extra) * LOAD_DEN > len(self.table) * LOAD_NUM

    def reserve(self, extra: int) -> None:
        """Room for `extra` more keys at the kept load factor (a compiled
        caller claims slots without checking)."""
        if self.must_grow(extra):
            self._grow(self.size + extra)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, or -1 where the key is absent."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        out = np.empty(len(keys), dtype=np.int64)
        _lookup(self.table, self.shift, self.mask, keys, out)
        return out

    def insert(self, keys: np.ndarray) -> np.ndarray:
        """Adds keys that are absent and distinct; returns their new rows."""
        rows, added = self.find_or_claim(keys)
        assert added.all(), "HashIndex.insert: a key was present already"
        return rows

    def find_or_claim(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The row of each key, adding the absent ones in order (a repeated
        key shares its first occurrence's row).  Returns (rows, added) where
        added marks the occurrences that took a new row."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        self.reserve(len(keys))
        rows = np.empty(len(keys), dtype=np.int64)
        added = np.empty(len(keys), dtype=np.bool_)
        self.size = int(_find_or_claim(self.table, self.shift, self.mask, keys, self.size, rows, added))
        return rows, added

    def _grow(self, needed: int) -> None:
        live = self.table[:, 0] != 0
        old = self.table[live]
        self._alloc(max(self._bits, _bits_for(needed)) + 1)
        _place(self.table, self.shift, self.mask, old[:, 0].copy(), old[:, 1].copy())

    def __getstate__(self):
        # a snapshot holds the entries, not the empty slots
        live = self.table[:, 0] != 0
        return {"bits": self._bits, "entries": self.table[live].copy(), "size": self.size}

    def __setstate__(self, state) -> None:
        self._alloc(state["bits"])
        entries = state["entries"]
        _place(self.table, self.shift, self.mask, entries[:, 0].copy(), entries[:, 1].copy())
        self.size = state["size"]

    @property
    def nbytes(self) -> int:
        """Bytes the entries need at the kept load factor (the table itself is
        a power of two: up to twice this)."""
        return 16 * self.size * LOAD_DEN // LOAD_NUM


@kernel
def _dense_rows(dense, ids, out):
    """out[i] = dense[ids[i]], -1 where the id is outside; the array is
    megabytes, so each read is prefetched a few ids ahead (a NumPy gather
    waits for each miss in turn)."""
    n = len(ids)
    top = len(dense)
    for j in range(n + _AHEAD):
        if j < n and 0 < ids[j] < top:
            prefetch(dense, ids[j])
        i = j - _AHEAD
        if i >= 0:
            out[i] = dense[ids[i]] if 0 < ids[i] < top else -1


class StaticIndex:
    """Rows of a fixed set of ids (the catalog's).  When the ids are dense
    enough, a plain array from id to row answers with one gather; otherwise
    a HashIndex does."""

    DENSE_SLACK = 4  # an id array at most this many times the count of ids

    def __init__(self, ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        top = int(ids.max()) if len(ids) else 0
        self._dense: np.ndarray | None = None
        self._hash: HashIndex | None = None
        if len(ids) and int(ids.min()) > 0 and top <= self.DENSE_SLACK * len(ids) + 1024:
            self._dense = np.full(top + 1, -1, dtype=np.int64)
            self._dense[ids] = np.arange(len(ids))
        else:
            self._hash = HashIndex(len(ids))
            self._hash.insert(ids.astype(np.uint64))

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, or -1 where the id is not in the set."""
        if self._hash is not None:
            return self._hash.lookup(np.asarray(ids).astype(np.uint64))
        rows = np.empty(len(ids), dtype=np.int64)
        _dense_rows(self._dense, np.ascontiguousarray(ids, dtype=np.int64), rows)
        return rows
