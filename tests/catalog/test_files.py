"""Catalog files: exact CSV / Parquet round trips, and a precise refusal for each kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from double11 import geo, limits
from double11.catalog import Catalog, generate_catalog, load_catalog, save_catalog
from double11.errors import Double11Error, Result

VALID = {
    "merchants.csv": (
        "merchant,name,marketplace,country\n"
        "1,Apple Flagship Store,tmall,CN\n"
        '2,"Tea, Biscuits & ""More""",taobao,CN\n'
        "3,Kiwi Direct,tmall_global,NZ\n"
    ),
    "brands.csv": (
        "brand,name,international,origin\n"
        "10,Apple,true,US\n"
        "11,Xiaomi,0,CN\n"
        "12,Swisse,1,AU\n"
        "13,Haier,FALSE,CN\n"
    ),
    "skus.csv": (
        "sku,merchant,brand,price_fen,stock\n"
        "100,1,10,699900,50\n"
        "101,2,11,9900,0\n"
        "102,3,12,12900,300\n"
    ),
}


def write(folder: Path, files: dict[str, str | None]) -> Path:
    for name, text in files.items():
        if text is not None:
            (folder / name).write_text(text, encoding="utf-8")
    return folder


def assert_same(a: Catalog, b: Catalog) -> None:
    for name in Catalog.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, list) or x is None:
            assert x == y, name
        else:
            assert x.dtype == y.dtype, name
            assert np.array_equal(x, y), name


def test_load_csv_reads_every_column(tmp_path):
    c = load_catalog(write(tmp_path, VALID))
    assert c.merchant_id.tolist() == [1, 2, 3] and c.merchant_id.dtype == np.int64
    assert c.merchant_name[1] == 'Tea, Biscuits & "More"'
    assert c.merchant_marketplace.tolist() == [0, 1, 4] and c.merchant_marketplace.dtype == np.uint8
    assert [geo.decode(x) for x in c.merchant_country] == ["CN", "CN", "NZ"]
    assert c.merchant_country.dtype == np.uint16
    assert c.brand_international.tolist() == [True, False, True, False]
    assert [geo.decode(x) for x in c.brand_origin] == ["US", "CN", "AU", "CN"]
    # SKU rows keep file order (it is the popularity rank)
    assert c.sku_id.tolist() == [100, 101, 102]
    assert c.sku_merchant.tolist() == [1, 2, 3] and c.sku_brand.tolist() == [10, 11, 12]
    assert c.sku_price_fen.tolist() == [699900, 9900, 12900]
    assert c.sku_stock.tolist() == [50, 0, 300]
    assert c.returning_buyers.dtype == np.int64 and len(c.returning_buyers) == 0


def test_load_optional_buyers(tmp_path):
    c = load_catalog(write(tmp_path, VALID | {"buyers.csv": "buyer\n7\n3\n9223372036854775807\n"}))
    assert c.returning_buyers.tolist() == [7, 3, 2**63 - 1]


def tricky(c: Catalog) -> Catalog:
    """Names that CSV quoting, type guessing or trimming would get wrong."""
    names = ['a, b', 'say "hi"', "two\nlines", " padded ", "123", "true", "", "天猫旗舰店", "L'Oreal"]
    c.merchant_name[: len(names)] = names
    c.brand_name[: len(names)] = names
    assert c.sku_name is not None
    c.sku_name[: len(names)] = names
    return c


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip_is_exact(tmp_path, fmt):
    c = tricky(generate_catalog(40, 400, seed=3, returning_buyers=25))
    save_catalog(c, tmp_path / "cat", fmt=fmt)
    assert sorted(p.name for p in (tmp_path / "cat").iterdir()) == sorted(
        f"{b}.{fmt}" for b in ("merchants", "brands", "skus", "buyers"))
    assert_same(load_catalog(tmp_path / "cat"), c)


def test_parquet_preferred_and_save_removes_other_format(tmp_path):
    a = generate_catalog(20, 100, seed=1)
    b = generate_catalog(20, 100, seed=2)
    save_catalog(a, tmp_path / "a", fmt="csv")
    save_catalog(b, tmp_path / "b", fmt="parquet")
    for p in (tmp_path / "b").iterdir():
        shutil.copy(p, tmp_path / "a")
    assert_same(load_catalog(tmp_path / "a"), b)  # both formats there: Parquet wins
    save_catalog(a, tmp_path / "a", fmt="csv")  # stale Parquet would shadow the new CSV
    assert not list((tmp_path / "a").glob("*.parquet"))
    assert_same(load_catalog(tmp_path / "a"), a)


def test_save_refuses_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        save_catalog(generate_catalog(5, 10, seed=0), tmp_path, fmt="json")


def refused(folder: Path) -> str:
    with pytest.raises(Double11Error) as e:
        load_catalog(folder)
    assert e.value.code == Result.invalid_request
    return e.value.detail


# (file, text to replace, replacement, fragments the detail must contain)
BAD = [
    ("merchants.csv", "2,\"Tea", "x2,\"Tea", ["merchants.csv", "'merchant'", "row 2", "'x2'", "not an integer"]),
    ("merchants.csv", "3,Kiwi", "0,Kiwi", ["merchants.csv", "'merchant'", "row 3", "out of range"]),
    ("merchants.csv", "3,Kiwi", "-3,Kiwi", ["merchants.csv", "'merchant'", "row 3", "out of range"]),
    ("merchants.csv", "3,Kiwi", "9223372036854775808,Kiwi", ["merchants.csv", "'merchant'", "row 3", "out of range"]),
    ("merchants.csv", "3,Kiwi", "1,Kiwi", ["merchants.csv", "'merchant'", "row 3", "duplicate id 1", "first at row 1"]),
    ("merchants.csv", "3,Kiwi", ",Kiwi", ["merchants.csv", "'merchant'", "row 3"]),
    ("merchants.csv", "taobao", "tmal", ["merchants.csv", "'marketplace'", "row 2", "'tmal'"]),
    ("merchants.csv", "NZ", "XX", ["merchants.csv", "'country'", "row 3", "'XX'"]),
    ("merchants.csv", "NZ", "nz", ["merchants.csv", "'country'", "row 3"]),
    ("merchants.csv", "NZ", "NZL", ["merchants.csv", "'country'", "row 3"]),
    ("brands.csv", "12,Swisse,1,AU", "12,Swisse,yes,AU", ["brands.csv", "'international'", "row 3", "'yes'"]),
    ("brands.csv", "US", "ZZ", ["brands.csv", "'origin'", "row 1"]),
    ("brands.csv", "13,Haier", "1.5,Haier", ["brands.csv", "'brand'", "row 4"]),
    ("skus.csv", "102,3,12", "102,4,12", ["skus.csv", "'merchant'", "row 3", "merchant 4 is not in merchants.csv"]),
    ("skus.csv", "101,2,11", "101,2,99", ["skus.csv", "'brand'", "row 2", "brand 99 is not in brands.csv"]),
    ("skus.csv", "102,3,12", "100,3,12", ["skus.csv", "'sku'", "row 3", "duplicate id 100"]),
    ("skus.csv", "9900,0", "0,0", ["skus.csv", "'price_fen'", "row 2", "positive"]),
    ("skus.csv", "9900,0", "-9900,0", ["skus.csv", "'price_fen'", "row 2", "positive"]),
    ("skus.csv", "9900,0", "1000000000001,0", ["skus.csv", "'price_fen'", "row 2", "over the limit"]),
    ("skus.csv", "9900,0", "99.00,0", ["skus.csv", "'price_fen'", "row 2", "'99.00'"]),
    ("skus.csv", "12900,300", "12900,-1", ["skus.csv", "'stock'", "row 3", "negative"]),
    ("skus.csv", "12900,300", "12900,2.5", ["skus.csv", "'stock'", "row 3", "not an integer"]),
    ("skus.csv", "12900,300", "12900,300,7", ["skus.csv", "cannot be read"]),
    ("skus.csv", "sku,merchant,brand,price_fen,stock", "sku,merchant,brand,price,stock",
     ["skus.csv", "'price_fen'", "missing column"]),
    ("brands.csv", "brand,name,international,origin", "brand,name,international,country",
     ["brands.csv", "'origin'", "missing column"]),
]


@pytest.mark.parametrize("file, old, new, fragments", BAD, ids=[f"{b[0]}:{b[2]}" for b in BAD])
def test_bad_input_is_refused_precisely(tmp_path, file, old, new, fragments):
    assert old in VALID[file]
    detail = refused(write(tmp_path, VALID | {file: VALID[file].replace(old, new, 1)}))
    for fragment in fragments:
        assert fragment in detail


@pytest.mark.parametrize("missing", ["merchants.csv", "brands.csv", "skus.csv"])
def test_missing_file(tmp_path, missing):
    detail = refused(write(tmp_path, VALID | {missing: None}))
    assert missing in detail and "not found" in detail


def test_missing_folder(tmp_path):
    assert "merchants.csv" in refused(tmp_path / "nowhere")


def test_bad_returning_buyer(tmp_path):
    detail = refused(write(tmp_path, VALID | {"buyers.csv": "buyer\n5\n5\n"}))
    assert "buyers.csv" in detail and "'buyer'" in detail and "duplicate" in detail


def test_too_many_skus(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "catalog_skus_max", 4)  # brands (4 rows) are within it
    detail = refused(write(tmp_path, VALID | {"skus.csv": VALID["skus.csv"] + "103,1,10,100,1\n104,1,10,100,1\n"}))
    assert "skus.csv" in detail and "catalog_skus_max" in detail


def test_too_many_merchants_parquet_refused_from_metadata(tmp_path, monkeypatch):
    save_catalog(generate_catalog(10, 30, seed=0), tmp_path, fmt="parquet")
    monkeypatch.setattr(limits, "catalog_merchants_max", 9)
    detail = refused(tmp_path)
    assert "merchants.parquet" in detail and "catalog_merchants_max" in detail


def replace_parquet(folder: Path, base: str, column: str, values: pa.Array) -> None:
    path = folder / f"{base}.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.column_names.index(column), column, values), path)


def test_parquet_accepts_string_and_narrow_columns(tmp_path):
    c = generate_catalog(3, 6, seed=0)
    save_catalog(c, tmp_path, fmt="parquet")
    replace_parquet(tmp_path, "merchants", "merchant", pa.array(["1", "2", "3"]))
    replace_parquet(tmp_path, "skus", "stock", pa.array(c.sku_stock.astype(np.int32)))
    replace_parquet(tmp_path, "brands", "international", pa.array(c.brand_international.astype(np.int8)))
    assert_same(load_catalog(tmp_path), c)


@pytest.mark.parametrize("base, column, values, fragments", [
    ("skus", "price_fen", pa.array([1.5] * 6), ["skus.parquet", "'price_fen'", "type double, expected integers"]),
    ("skus", "stock", pa.array([1, 2, None, 4, 5, 6], pa.int64()), ["skus.parquet", "'stock'", "row 3", "missing"]),
    ("merchants", "name", pa.array(["a", None, "c"]), ["merchants.parquet", "'name'", "row 2", "missing"]),
    ("skus", "sku", pa.array([1, 2, 3, 4, 5, 2**63], pa.uint64()), ["skus.parquet", "'sku'", "row 6", "out of range"]),
])
def test_parquet_bad_columns(tmp_path, base, column, values, fragments):
    save_catalog(generate_catalog(3, 6, seed=0), tmp_path, fmt="parquet")
    replace_parquet(tmp_path, base, column, values)
    detail = refused(tmp_path)
    for fragment in fragments:
        assert fragment in detail


def test_generated_catalog_passes_validation_unchanged(tmp_path):
    c = generate_catalog(200, 3000, seed=11, returning_buyers=10)
    save_catalog(c, tmp_path, fmt="csv")
    assert_same(load_catalog(tmp_path), c)


def test_unreadable_csv(tmp_path):
    write(tmp_path, VALID)
    (tmp_path / "merchants.csv").write_bytes(b"merchant,name,marketplace,country\n1,\xff\xfe,tmall,CN\n")
    detail = refused(tmp_path)
    assert "merchants.csv" in detail and "UTF8" in detail
