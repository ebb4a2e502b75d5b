"""Growable NumPy storage for the engine's entities: append in bulk, index
and update in place.

- `Table`: the rows of one entity, one record per row (a structured array).
  A command reads or writes most fields of the few rows it touches, so a
  record puts them in one cache line (and one page) instead of one per
  field; and the compiled loop takes one array per entity, not one per field
  (every array is seven machine words copied for each helper call).
- `Field`: one field of a table, read like a column (`data` is a view).
- `Column`: a lone growable array, for what is not part of an entity's rows.
- `FieldOf`: declares, on a class holding tables, an attribute that reads
  one field of one of them (`c_amount = FieldOf("checkouts", "amount")`).
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np


def touch_pages(buf: np.ndarray) -> None:
    """Writes every page of `buf` (its bytes as they are), so that no later
    write to it pays a page fault: a restored table's free room, prefaulted as
    a new one's is."""
    raw = buf.reshape(-1).view(np.uint8)
    pages = raw[::_PAGE_BYTES]
    np.bitwise_or(pages, 0, out=pages)  # a write (an assignment of a view to itself is skipped by NumPy)


_PAGE_BYTES = 4096


def _zeros(dtype: np.dtype, capacity: int, prefault: bool) -> np.ndarray:
    # untouched capacity costs address space only: the OS maps pages on first write
    buf = np.zeros(max(capacity, 16), dtype=dtype)
    if prefault:
        buf.view(np.uint8).fill(0)
    return buf


class _Growable:
    """A buffer whose first `size` rows are in use."""

    __slots__ = ("_buf", "size")

    def __init__(self, dtype: np.dtype | type, capacity: int = 1 << 20, prefault: bool = False):
        self._buf = _zeros(np.dtype(dtype), capacity, prefault)
        self.size = 0

    def must_grow(self, extra: int) -> bool:
        """Whether `reserve(extra)` would grow the buffer (a pause: a copy)."""
        return self.size + extra > len(self._buf)

    def reserve(self, extra: int) -> np.ndarray:
        """Room for `extra` more rows; returns the whole buffer, for a compiled
        loop that appends in place and then sets `size`."""
        if self.must_grow(extra):
            end = self.size + extra
            # doubling keeps appends amortized O(1); the copy is the only pause
            grown = np.zeros(max(end, 2 * len(self._buf)), dtype=self._buf.dtype)
            grown[: self.size] = self._buf[: self.size]
            self._buf = grown
        return self._buf

    def prefault(self) -> None:
        touch_pages(self._buf)

    def refill(self, size: int, capacity: int) -> np.ndarray:
        """A fresh, zeroed buffer of `capacity` rows whose first `size` are in use;
        returns those rows for the caller to fill (a snapshot being read)."""
        self._buf = np.zeros(max(capacity, size, 16), dtype=self._buf.dtype)
        self.size = size
        return self._buf[:size]

    @property
    def capacity(self) -> int:
        return len(self._buf)

    # Pickling: only to read the snapshots of format 1 (storage/snapshot.py)
    def __getstate__(self):
        # a snapshot holds the rows, not the spare capacity
        return {"data": self._buf[: self.size].copy(), "capacity": len(self._buf)}

    def __setstate__(self, state) -> None:
        data = state["data"]
        self._buf = np.zeros(max(state["capacity"], len(data), 16), dtype=data.dtype)
        self._buf[: len(data)] = data
        self.size = len(data)

    @property
    def nbytes(self) -> int:
        """Bytes of rows in use (capacity never written is not resident)."""
        return self.size * self._buf.itemsize


class Column(_Growable):
    """One growable array.  `data` is the live view of the first `size` rows."""

    __slots__ = ()

    @property
    def data(self) -> np.ndarray:
        return self._buf[: self.size]


class Table(_Growable):
    """The rows of one entity as records.  `rows` is the live view of the
    first `size` records; `field(name)` reads one field like a column."""

    __slots__ = ()

    def __init__(self, fields: list[tuple[str, str]], capacity: int = 1 << 20, prefault: bool = False,
                 align: bool = True):
        super().__init__(np.dtype(fields, align=align), capacity, prefault)

    @property
    def rows(self) -> np.ndarray:
        return self._buf[: self.size]

    def field(self, name: str) -> Field:
        names = self._buf.dtype.names
        if names is None or name not in names:
            raise KeyError(name)
        return Field(self, name)


class Field:
    """One field of a Table, read like a Column: `data` is a (strided) view of
    its first `size` rows; writes to it land in the table."""

    __slots__ = ("table", "name")

    def __init__(self, table: Table, name: str):
        self.table, self.name = table, name

    @property
    def data(self) -> np.ndarray:
        return self.table.rows[self.name]

    @property
    def size(self) -> int:
        return self.table.size


class FieldOf:
    """A class attribute that is one field of one of the instance's tables:
    `obj.<attr>` is `obj.<table>.field(name)`, made on the first read and kept
    on the instance (so later reads are plain attribute reads)."""

    __slots__ = ("table", "name", "attr")

    def __init__(self, table: str, name: str):
        self.table, self.name, self.attr = table, name, ""

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> FieldOf: ...
    @overload
    def __get__(self, obj: Any, owner: type | None = None) -> Field: ...

    def __get__(self, obj: Any, owner: type | None = None) -> FieldOf | Field:
        if obj is None:
            return self
        field = getattr(obj, self.table).field(self.name)
        obj.__dict__[self.attr] = field
        return field
