"""A vectorized hash index from uint64 keys to dense rows 0, 1, 2, ...

External ids (SKUs, buyers) and idempotency keys are arbitrary 64-bit numbers;
the engine works on dense rows so that every per-entity figure is a plain
array.  Open addressing with linear probing at load factor <= 1/2; every
operation handles a whole batch of keys with a few NumPy passes (one pass per
probe step, and the number of keys still probing halves each step).
A slot holds its key and row side by side, so a probe touches one cache line.
Key 0 marks an empty slot, so callers never insert 0.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class HashIndex:
    def __init__(self, capacity: int = 1024, prefault: bool = False):
        """capacity: keys expected; the table is sized for it up front because
        growing means rehashing everything (a pause at the worst moment)."""
        bits = max(10, int(capacity * 2 - 1).bit_length())
        self._alloc(bits)
        if prefault:
            self._slots_kv.fill(0)
        self.size = 0

    def _alloc(self, bits: int) -> None:
        self._bits = bits
        self._mask = np.int64((1 << bits) - 1)
        self._shift = np.uint64(64 - bits)
        # untouched slots cost address space only: pages are mapped on first write
        self._slots_kv = np.zeros((1 << bits, 2), dtype=np.uint64)

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _GOLDEN) >> self._shift).astype(np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, or -1 where the key is absent."""
        keys = np.asarray(keys, dtype=np.uint64)
        out = np.full(len(keys), -1, dtype=np.int64)
        pending = np.arange(len(keys))
        slot = self._slots(keys)
        table = self._slots_kv
        while pending.size:
            found = table[slot, 0]
            hit = found == keys[pending]
            if hit.any():
                out[pending[hit]] = table[slot[hit], 1].astype(np.int64)
            go_on = (found != 0) & ~hit
            pending = pending[go_on]
            slot = (slot[go_on] + 1) & self._mask
        return out

    def insert(self, keys: np.ndarray) -> np.ndarray:
        """Adds keys that are absent and distinct; returns their new rows."""
        keys = np.asarray(keys, dtype=np.uint64)
        rows = np.arange(self.size, self.size + len(keys), dtype=np.int64)
        if (self.size + len(keys)) * 2 > len(self._slots_kv):
            self._grow(self.size + len(keys))
        self._place(keys, rows.astype(np.uint64))
        self.size += len(keys)
        return rows

    def find_or_claim(self, keys: np.ndarray, distinct: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The row of each key, adding the absent ones in one probing pass
        (repeated keys share a row; `distinct` promises there are none).
        Returns (rows, added) where added marks one occurrence of each new
        key; new rows follow the order of those."""
        keys = np.asarray(keys, dtype=np.uint64)
        n = len(keys)
        if (self.size + n) * 2 > len(self._slots_kv):
            self._grow(self.size + n)
        table = self._slots_kv
        rows = np.full(n, -1, dtype=np.int64)
        claimed = np.zeros(n, dtype=bool)
        claimed_slot = np.zeros(n, dtype=np.int64)
        pending = np.arange(n)
        slot = self._slots(keys)
        while pending.size:
            wanted = keys[pending]
            found = table[slot, 0]
            done = found == wanted
            if done.any():
                rows[pending[done]] = table[slot[done], 1].astype(np.int64)
            empty = np.flatnonzero(found == 0)
            if empty.size:
                # the first empty slot on a key's chain is its place; when several
                # keys want one slot, all write it and the key left there won
                target = slot[empty]
                table[target, 0] = wanted[empty]
                won = empty[table[target, 0] == wanted[empty]]
                claimed[pending[won]] = True
                claimed_slot[pending[won]] = slot[won]
                done[won] = True
            pending = pending[~done]
            slot = (slot[~done] + 1) & self._mask
        new = np.flatnonzero(claimed)
        if distinct:
            new_rows = np.arange(self.size, self.size + len(new), dtype=np.int64)
            table[claimed_slot[new], 1] = new_rows.astype(np.uint64)
            rows[new] = new_rows
            self.size += len(new)
            return rows, claimed
        # equal keys move in lockstep and claim the same slot: one owns it
        where = claimed_slot[new]
        table[where, 1] = new.astype(np.uint64)
        owner = table[where, 1].astype(np.int64)
        owns = owner == new
        owners = new[owns]
        new_rows = np.arange(self.size, self.size + len(owners), dtype=np.int64)
        table[claimed_slot[owners], 1] = new_rows.astype(np.uint64)
        rows[owners] = new_rows
        rows[new[~owns]] = rows[owner[~owns]]
        claimed[new[~owns]] = False
        self.size += len(owners)
        return rows, claimed

    def lookup_or_insert(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of keys, adding the absent ones (duplicates share a row).
        Returns (rows, new_keys): the keys added, in the order of their rows."""
        keys = np.asarray(keys, dtype=np.uint64)
        rows, added = self.find_or_claim(keys)
        return rows, keys[added]

    def _grow(self, needed: int) -> None:
        live = self._slots_kv[:, 0] != 0
        old = self._slots_kv[live]
        bits = self._bits
        while (1 << bits) < needed * 2:
            bits += 1
        self._alloc(bits + 1)
        self._place(old[:, 0].copy(), old[:, 1].copy())

    def _place(self, keys: np.ndarray, rows: np.ndarray) -> None:
        # keys are distinct: when several want one free slot, all write it and
        # the one whose key stayed there won; the others probe on
        table = self._slots_kv
        slot = self._slots(keys)
        while keys.size:
            free = np.flatnonzero(table[slot, 0] == 0)
            target = slot[free]
            table[target, 0] = keys[free]
            won = table[target, 0] == keys[free]
            table[target[won], 1] = rows[free[won]]
            losers = np.ones(keys.size, dtype=bool)
            losers[free[won]] = False
            keys, rows = keys[losers], rows[losers]
            slot = (slot[losers] + 1) & self._mask

    def __getstate__(self):
        # a snapshot holds the entries, not the empty slots
        live = self._slots_kv[:, 0] != 0
        return {"bits": self._bits, "entries": self._slots_kv[live].copy(), "size": self.size}

    def __setstate__(self, state) -> None:
        self._alloc(state["bits"])
        entries = state["entries"]
        self._place(entries[:, 0].copy(), entries[:, 1].copy())
        self.size = state["size"]

    @property
    def nbytes(self) -> int:
        """Bytes the entries need at the table's load factor of 1/2 (the table
        itself is a power of two: up to twice this)."""
        return 2 * 16 * self.size


class StaticIndex:
    """Rows of a fixed set of ids (the catalog's).  When the ids are dense
    enough, a plain array from id to row answers with one gather; otherwise
    a HashIndex does."""

    DENSE_SLACK = 4  # an id array at most this many times the count of ids

    def __init__(self, ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        top = int(ids.max()) if len(ids) else 0
        if len(ids) and int(ids.min()) > 0 and top <= self.DENSE_SLACK * len(ids) + 1024:
            self._dense = np.full(top + 1, -1, dtype=np.int64)
            self._dense[ids] = np.arange(len(ids))
            self._hash = None
        else:
            self._dense = None
            self._hash = HashIndex(len(ids))
            self._hash.insert(ids.astype(np.uint64))

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id, or -1 where the id is not in the set."""
        if self._dense is None:
            return self._hash.lookup(np.asarray(ids).astype(np.uint64))
        ids = np.asarray(ids, dtype=np.int64)
        inside = (ids > 0) & (ids < len(self._dense))
        if inside.all():
            return self._dense[ids]
        rows = np.full(len(ids), -1, dtype=np.int64)
        rows[inside] = self._dense[ids[inside]]
        return rows
