"""Product names: generated from the seed (brand + category + model), carried
by the CSV / Parquet files, derived for a file without them, bounded."""

from __future__ import annotations

import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from double11 import limits
from double11.catalog import generate_catalog, load_catalog, save_catalog
from double11.catalog.generate import _CATEGORY
from double11.errors import Double11Error

FILES = {
    "merchants.csv": "merchant,name,marketplace,country\n1,Apple Flagship Store,tmall,CN\n",
    "brands.csv": "brand,name,international,origin\n10,Apple,true,US\n",
}


def write(folder: Path, skus: str) -> Path:
    for name, text in (FILES | {"skus.csv": skus}).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_generated_names_are_brand_category_model_and_follow_the_seed():
    c = generate_catalog(merchants=50, skus=3000, seed=5)
    assert c.sku_name is not None and len(c.sku_name) == c.skus
    brand_name = dict(zip(c.brand_id.tolist(), c.brand_name))
    categories = set(_CATEGORY)
    for row in range(c.skus):
        name = c.sku_name[row]
        brand = brand_name[int(c.sku_brand[row])]
        assert name.startswith(brand + " "), (name, brand)
        *category, model = name[len(brand) + 1:].split(" ")
        assert " ".join(category) in categories and model[0].isupper() and model[1:].isdigit(), name
        assert len(name) <= limits.catalog_name_chars_max
    assert len(set(c.sku_name)) > c.skus // 2  # mostly distinct
    assert generate_catalog(merchants=50, skus=3000, seed=5).sku_name == c.sku_name
    assert generate_catalog(merchants=50, skus=3000, seed=6).sku_name != c.sku_name


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_carry_the_names(tmp_path, fmt):
    c = generate_catalog(merchants=10, skus=200, seed=2)
    save_catalog(c, tmp_path, fmt=fmt)
    loaded = load_catalog(tmp_path)
    assert loaded.sku_name == c.sku_name
    assert loaded.sku_name_at(7) == c.sku_name[7]


def test_a_file_without_names_loads_with_derived_names(tmp_path):
    c = load_catalog(write(tmp_path, "sku,merchant,brand,price_fen,stock\n12,1,10,100,5\n7,1,10,200,5\n"))
    assert c.sku_name is None
    assert [c.sku_name_at(0), c.sku_name_at(1)] == ["SKU 12", "SKU 7"]
    save_catalog(c, tmp_path / "again")  # and saved again, still without the column
    assert "name" not in (tmp_path / "again" / "skus.csv").read_text().splitlines()[0]
    assert load_catalog(tmp_path / "again").sku_name is None


def test_names_that_look_like_other_types_stay_text(tmp_path):
    c = load_catalog(write(tmp_path, 'sku,merchant,brand,price_fen,stock,name\n1,1,10,100,5,123\n'
                                     '2,1,10,100,5,"Tea, ""green"""\n'))
    assert c.sku_name == ["123", 'Tea, "green"']


def test_a_catalog_pickled_before_names_still_names_its_skus():
    c = generate_catalog(merchants=5, skus=20, seed=1)
    del c.__dict__["sku_name"]  # as a snapshot written before the field existed unpickles
    old = pickle.loads(pickle.dumps(c))
    assert old.sku_name_at(3) == "SKU 4"


def test_a_name_over_the_limit_is_refused_with_file_row_and_column(tmp_path):
    too_long = "x" * (limits.catalog_name_chars_max + 1)
    just_fits = "y" * limits.catalog_name_chars_max
    write(tmp_path, f"sku,merchant,brand,price_fen,stock,name\n1,1,10,100,5,{just_fits}\n2,1,10,100,5,{too_long}\n")
    with pytest.raises(Double11Error) as e:
        load_catalog(tmp_path)
    message = str(e.value)
    assert "skus.csv" in message and "column 'name'" in message and "row 2" in message
    assert str(limits.catalog_name_chars_max) in message and "catalog_name_chars_max" in message


def test_a_parquet_name_over_the_limit_or_missing_is_refused(tmp_path):
    write(tmp_path, "sku,merchant,brand,price_fen,stock\n1,1,10,100,5\n")
    (tmp_path / "skus.csv").unlink()
    base = {"sku": [1, 2], "merchant": [1, 1], "brand": [10, 10], "price_fen": [100, 100], "stock": [5, 5]}
    pq.write_table(pa.table(base | {"name": ["ok", "z" * 1000]}), tmp_path / "skus.parquet")
    with pytest.raises(Double11Error, match=r"skus.parquet: column 'name', row 2: name of 1000 characters"):
        load_catalog(tmp_path)
    pq.write_table(pa.table(base | {"name": ["ok", None]}), tmp_path / "skus.parquet")
    with pytest.raises(Double11Error, match=r"skus.parquet: column 'name', row 2: missing value"):
        load_catalog(tmp_path)
