"""Catalog files: load a folder of CSV or Parquet tables into a Catalog, and save one.

A catalog folder holds one table per entity, each as ``<name>.csv`` or ``<name>.parquet``
(Parquet wins when both exist):

- ``merchants``: merchant, name, marketplace, country
- ``brands``:    brand, name, international, origin
- ``skus``:      sku, merchant, brand, price_fen, stock, and optionally name (the product's;
  without the column each SKU is named "SKU <id>")
- ``buyers``:    buyer  (optional: buyers who bought before, so not "new buyers")

SKU rows keep their file order, which is their popularity rank (see
double11.catalog.generate).  Extra columns are ignored.  Names are at most
limits.catalog_name_chars_max characters.

Every problem raises ``Double11Error(Result.invalid_request, detail)``; the detail names the
file, the column and, where cheap, the first bad row.  Rows are counted from 1 and do not
count the header, so CSV row N is on line N + 1 (unless a quoted value spans lines).
Nothing is returned until every table has been checked, so a caller never sees a partial
catalog.  Validation is vectorized (pyarrow.compute / NumPy): a million SKUs load in a
fraction of a second to a few seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from double11 import geo, limits
from double11.catalog.model import MARKETPLACES, Catalog
from double11.errors import Double11Error, Result

COLUMNS: dict[str, tuple[str, ...]] = {
    "merchants": ("merchant", "name", "marketplace", "country"),
    "brands": ("brand", "name", "international", "origin"),
    "skus": ("sku", "merchant", "brand", "price_fen", "stock"),
    "buyers": ("buyer",),
}
# columns a table may have, read when present
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"skus": ("name",)}
FORMATS = ("csv", "parquet")

# Returning buyers have no limit in double11.limits yet; a billion is far above the real
# platform's active users of 2017 and still bounds memory (8 GB of ids).
returning_buyers_max = 1_000_000_000

_ALPHA2 = pa.array(geo.ALPHA2)
_ALPHA2_CODE = np.array([geo.encode(a) for a in geo.ALPHA2], dtype=np.uint16)
_COUNTRY_NAME = np.array([geo.decode(c) for c in range(geo.COUNTRY_SLOTS)], dtype=object)
_MARKETPLACES = pa.array(MARKETPLACES)
_INTEGER = r"^-?[0-9]+$"


def _fail(detail: str) -> Double11Error:
    return Double11Error(Result.invalid_request, detail)


class _Table:
    """One loaded file: its display name (for error details) and its pyarrow table."""

    def __init__(self, file: str, table: pa.Table):
        self.file = file
        self.table = table

    def fail(self, column: str, row: int, problem: str) -> Double11Error:
        return _fail(f"{self.file}: column '{column}', row {row + 1}: {problem}")

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def strings(self, name: str, trim: bool, col: pa.ChunkedArray | None = None,
                expected: str = "strings") -> pa.ChunkedArray:
        """The column (or col, derived from it) as strings; nulls (possible in Parquet) are refused."""
        col = self.column(name) if col is None else col
        t = col.type
        if pa.types.is_dictionary(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            col = col.cast(pa.string())
        elif not pa.types.is_string(col.type):
            raise _fail(f"{self.file}: column '{name}' has type {t}, expected {expected}")
        if col.null_count:
            raise self.fail(name, _first(pc.is_null(col)), "missing value")
        return pc.utf8_trim_whitespace(col) if trim else col

    def integers(self, name: str) -> np.ndarray:
        """The column as int64; refuses blanks, non-integers and values outside int64."""
        col = self.column(name)
        if pa.types.is_integer(col.type):
            if col.null_count:
                raise self.fail(name, _first(pc.is_null(col)), "missing value")
            if col.type == pa.uint64():
                row = _first(pc.greater(col, pa.scalar(limits.id_max, pa.uint64())))
                if row >= 0:
                    raise self.fail(name, row, f"{col[row].as_py()} is out of range")
            return col.cast(pa.int64()).to_numpy()
        col = self.strings(name, trim=True, expected="integers")
        ok = pc.fill_null(pc.match_substring_regex(col, _INTEGER), False)
        row = _first(pc.invert(ok))
        if row >= 0:
            raise self.fail(name, row, f"{col[row].as_py()!r} is not an integer")
        try:
            return col.cast(pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            # Only values of 19 digits or more can overflow; find the first in Python.
            long = np.flatnonzero(pc.utf8_length(col).to_numpy() >= 19)
            for long_row in long:
                value = int(col[int(long_row)].as_py())
                if not -(2**63) <= value <= limits.id_max:
                    raise self.fail(name, int(long_row), f"{value} is out of range") from None
            raise

    def ids(self, name: str) -> np.ndarray:
        """Positive int64 ids (1..2**63-1), each once."""
        ids = self.integers(name)
        self.check(name, ids >= 1, lambda v: f"id {v} is out of range 1..2**63-1", ids)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        repeat = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) + 1
        if len(repeat):
            # stable sort: within a run of equal ids, rows ascend, so the run's start is the
            # first occurrence and the smallest later row is the first repetition in the file.
            k = repeat[np.argmin(order[repeat])]
            first = order[np.searchsorted(sorted_ids, sorted_ids[k])]
            raise self.fail(name, int(order[k]), f"duplicate id {sorted_ids[k]} (first at row {first + 1})")
        return ids

    def check(self, name: str, ok: np.ndarray, problem, values: np.ndarray) -> None:
        """Raise for the first row where ok is False; problem(value) describes it."""
        if not ok.all():
            row = int(np.argmin(ok))
            raise self.fail(name, row, problem(values[row]))

    def names(self, name: str) -> list[str]:
        """Names of at most limits.catalog_name_chars_max characters, as written."""
        col = self.strings(name, trim=False)
        length = pc.utf8_length(col)
        row = _first(pc.greater(length, limits.catalog_name_chars_max))
        if row >= 0:
            raise self.fail(name, row, f"name of {length[row].as_py()} characters, over the limit of "
                                       f"{limits.catalog_name_chars_max} (limits.catalog_name_chars_max)")
        return col.to_pylist()

    def marketplaces(self, name: str) -> np.ndarray:
        col = self.strings(name, trim=True)
        index = pc.index_in(col, value_set=_MARKETPLACES)
        if index.null_count:
            row = _first(pc.is_null(index))
            expected = ", ".join(MARKETPLACES)
            raise self.fail(name, row, f"unknown marketplace {col[row].as_py()!r} (expected one of {expected})")
        return index.to_numpy().astype(np.uint8)

    def countries(self, name: str) -> np.ndarray:
        col = self.strings(name, trim=True)
        index = pc.index_in(col, value_set=_ALPHA2)
        if index.null_count:
            row = _first(pc.is_null(index))
            raise self.fail(name, row, f"{col[row].as_py()!r} is not an ISO 3166 alpha-2 country code")
        return _ALPHA2_CODE[index.to_numpy()]

    def flags(self, name: str) -> np.ndarray:
        col = self.column(name)
        if pa.types.is_boolean(col.type):
            if col.null_count:
                raise self.fail(name, _first(pc.is_null(col)), "missing value")
            return col.to_numpy()
        if pa.types.is_integer(col.type):
            col = col.cast(pa.string())
        col = pc.utf8_lower(self.strings(name, trim=True, col=col, expected="true/false"))
        true = pc.is_in(col, value_set=pa.array(["true", "1"]))
        false = pc.is_in(col, value_set=pa.array(["false", "0"]))
        row = _first(pc.invert(pc.or_(true, false)))
        if row >= 0:
            raise self.fail(name, row, f"{self.column(name)[row].as_py()!r} is not true, false, 1 or 0")
        return true.to_numpy()


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    """Row of the first True in a boolean column, -1 if none."""
    return pc.index(mask, True).as_py()


def _find(folder: Path, base: str, required: bool) -> Path | None:
    for fmt in ("parquet", "csv"):
        path = folder / f"{base}.{fmt}"
        if path.is_file():
            return path
    if required:
        raise _fail(f"{base}.csv (or {base}.parquet) not found in {folder}")
    return None


def _read(path: Path, columns: tuple[str, ...], rows_max: int, limit_name: str,
          optional: tuple[str, ...] = ()) -> _Table:
    file = path.name
    try:
        if path.suffix == ".parquet":
            pf = pq.ParquetFile(path)
            rows = pf.metadata.num_rows
            if rows > rows_max:  # refuse before reading the data
                raise _fail(f"{file}: {rows} rows, more than the limit of {rows_max} ({limit_name})")
            table = pf.read()
        else:
            # Every known column as a string: ids like "007" and names like "123" or "true"
            # must not be guessed into other types; we convert and check them ourselves.
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns + optional}),
            )
    except (pa.ArrowException, OSError) as e:
        raise _fail(f"{file}: cannot be read: {e}") from None
    names = table.column_names
    for c in columns:
        if c not in names:
            raise _fail(f"{file}: missing column '{c}' (columns: {', '.join(names)})")
    for c in columns + optional:
        if names.count(c) > 1:
            raise _fail(f"{file}: column '{c}' appears more than once")
    if table.num_rows > rows_max:
        raise _fail(f"{file}: {table.num_rows} rows, more than the limit of {rows_max} ({limit_name})")
    return _Table(file, table)


def _references(t: _Table, name: str, refs: np.ndarray, ids: np.ndarray, target: str) -> None:
    """Every value of refs must be one of ids (the id column of target)."""
    known = np.sort(ids)
    pos = np.minimum(np.searchsorted(known, refs), max(len(known) - 1, 0))
    found = known[pos] == refs if len(known) else np.zeros(len(refs), dtype=bool)
    t.check(name, found, lambda v: f"{name} {v} is not in {target}", refs)


def load_catalog(path: str | os.PathLike) -> Catalog:
    """Load and check the catalog folder at path; raise Double11Error(invalid_request) if bad."""
    folder = Path(path)
    found = {base: _find(folder, base, required=base != "buyers") for base in COLUMNS}
    # the required files: _find raised if one is missing
    merchants, brands, skus = (cast(Path, found[base]) for base in ("merchants", "brands", "skus"))

    m = _read(merchants, COLUMNS["merchants"], limits.catalog_merchants_max,
              "limits.catalog_merchants_max")
    merchant_id = m.ids("merchant")
    merchant_name = m.names("name")
    merchant_marketplace = m.marketplaces("marketplace")
    merchant_country = m.countries("country")

    # No limit of its own: a brand without SKUs is pointless, so the SKU limit bounds it.
    b = _read(brands, COLUMNS["brands"], limits.catalog_skus_max, "limits.catalog_skus_max")
    brand_id = b.ids("brand")
    brand_name = b.names("name")
    brand_international = b.flags("international")
    brand_origin = b.countries("origin")

    s = _read(skus, COLUMNS["skus"], limits.catalog_skus_max, "limits.catalog_skus_max",
              OPTIONAL_COLUMNS["skus"])
    sku_id = s.ids("sku")
    sku_merchant = s.integers("merchant")
    _references(s, "merchant", sku_merchant, merchant_id, m.file)
    sku_brand = s.integers("brand")
    _references(s, "brand", sku_brand, brand_id, b.file)
    sku_price_fen = s.integers("price_fen")
    s.check("price_fen", sku_price_fen >= 1, lambda v: f"price {v} is not a positive number of fen",
            sku_price_fen)
    s.check("price_fen", sku_price_fen <= limits.sku_price_fen_max,
            lambda v: f"price {v} is over the limit of {limits.sku_price_fen_max} fen", sku_price_fen)
    sku_stock = s.integers("stock")
    s.check("stock", sku_stock >= 0, lambda v: f"stock {v} is negative", sku_stock)
    sku_name = s.names("name") if "name" in s.table.column_names else None

    returning = np.zeros(0, dtype=np.int64)
    if found["buyers"] is not None:
        u = _read(found["buyers"], COLUMNS["buyers"], returning_buyers_max,
                  "double11.catalog.files.returning_buyers_max")
        returning = u.ids("buyer")

    return Catalog(
        merchant_id=merchant_id,
        merchant_name=merchant_name,
        merchant_marketplace=merchant_marketplace,
        merchant_country=merchant_country,
        brand_id=brand_id,
        brand_name=brand_name,
        brand_international=brand_international,
        brand_origin=brand_origin,
        sku_id=sku_id,
        sku_merchant=sku_merchant,
        sku_brand=sku_brand,
        sku_price_fen=sku_price_fen,
        sku_stock=sku_stock,
        returning_buyers=returning,
        sku_name=sku_name,
    )


def _tables(c: Catalog) -> dict[str, pa.Table]:
    market = np.array(MARKETPLACES, dtype=object)
    i64 = pa.int64()
    names = {} if c.sku_name is None else {"name": pa.array(c.sku_name, pa.string())}
    return {
        "merchants": pa.table({
            "merchant": pa.array(c.merchant_id, i64),
            "name": pa.array(c.merchant_name, pa.string()),
            "marketplace": pa.array(market[c.merchant_marketplace], pa.string()),
            "country": pa.array(_COUNTRY_NAME[c.merchant_country], pa.string()),
        }),
        "brands": pa.table({
            "brand": pa.array(c.brand_id, i64),
            "name": pa.array(c.brand_name, pa.string()),
            "international": pa.array(c.brand_international, pa.bool_()),
            "origin": pa.array(_COUNTRY_NAME[c.brand_origin], pa.string()),
        }),
        "skus": pa.table({
            "sku": pa.array(c.sku_id, i64),
            "merchant": pa.array(c.sku_merchant, i64),
            "brand": pa.array(c.sku_brand, i64),
            "price_fen": pa.array(c.sku_price_fen, i64),
            "stock": pa.array(c.sku_stock, i64),
            **names,
        }),
        "buyers": pa.table({"buyer": pa.array(c.returning_buyers, i64)}),
    }


def save_catalog(catalog: Catalog, path: str | os.PathLike, fmt: str = "csv") -> None:
    """Write catalog as a folder that load_catalog reads back to an equal Catalog.

    Files of the same tables in the other format are removed: they would shadow (Parquet)
    or be shadowed by the new ones, and the folder must hold exactly this catalog.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    other = FORMATS[1 - FORMATS.index(fmt)]
    for base, table in _tables(catalog).items():
        target = folder / f"{base}.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(table, target)
        else:
            pq.write_table(table, target)
        (folder / f"{base}.{other}").unlink(missing_ok=True)
