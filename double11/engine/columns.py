"""Growable NumPy columns: append in bulk, index and update in place."""

from __future__ import annotations

import numpy as np


class Column:
    """One field of an entity table.  `data` is the live view of the first `size` rows."""

    __slots__ = ("_buf", "size")

    def __init__(self, dtype: np.dtype | type, capacity: int = 1 << 20, prefault: bool = False):
        # untouched capacity costs address space only: the OS maps pages on first write
        self._buf = np.zeros(max(capacity, 16), dtype=dtype)
        if prefault:
            self._buf.fill(0)
        self.size = 0

    @property
    def data(self) -> np.ndarray:
        return self._buf[: self.size]

    def reserve(self, extra: int) -> np.ndarray:
        """Room for `extra` more rows; returns the whole buffer, for a compiled
        loop that appends in place and then sets `size`."""
        end = self.size + extra
        if end > len(self._buf):
            # doubling keeps appends amortized O(1); the copy is the only pause
            grown = np.zeros(max(end, 2 * len(self._buf)), dtype=self._buf.dtype)
            grown[: self.size] = self._buf[: self.size]
            self._buf = grown
        return self._buf

    def __getstate__(self):
        # a snapshot holds the rows, not the spare capacity
        return {"data": self.data.copy(), "capacity": len(self._buf)}

    def __setstate__(self, state) -> None:
        data = state["data"]
        self._buf = np.zeros(max(state["capacity"], len(data), 16), dtype=data.dtype)
        self._buf[: len(data)] = data
        self.size = len(data)

    @property
    def nbytes(self) -> int:
        """Bytes of rows in use (capacity never written is not resident)."""
        return self.size * self._buf.itemsize
