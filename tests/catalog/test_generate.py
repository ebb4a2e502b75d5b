"""The synthetic catalog: deterministic, the right sizes, and shaped like the 2017 festival."""

from __future__ import annotations

import numpy as np
import pytest

from double11 import geo
from double11.catalog import MARKETPLACES, Catalog, generate_catalog, popularity_weights
from double11.catalog.generate import FAMOUS_BRANDS, default_brands

TMALL, TAOBAO, TMALL_GLOBAL = (MARKETPLACES.index(m) for m in ("tmall", "taobao", "tmall_global"))
CN = geo.encode("CN")


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return generate_catalog(merchants=2000, skus=40_000, seed=7, returning_buyers=500)


def fields(c: Catalog) -> dict:
    return {name: getattr(c, name) for name in Catalog.__dataclass_fields__}


def test_same_seed_same_catalog_other_seed_other_catalog(cat):
    again = generate_catalog(merchants=2000, skus=40_000, seed=7, returning_buyers=500)
    for name, value in fields(cat).items():
        other = getattr(again, name)
        assert (value == other) if isinstance(value, list) else np.array_equal(value, other), name
    different = generate_catalog(merchants=2000, skus=40_000, seed=8, returning_buyers=500)
    assert not np.array_equal(cat.sku_price_fen, different.sku_price_fen)
    assert not np.array_equal(cat.sku_merchant, different.sku_merchant)


def test_counts_ids_and_types(cat):
    assert (cat.merchants, cat.skus, cat.brands) == (2000, 40_000, default_brands(40_000))
    assert default_brands(40_000) == 4000 and default_brands(100) == 50
    for ids in (cat.merchant_id, cat.brand_id, cat.sku_id, cat.returning_buyers):
        assert ids.dtype == np.int64 and ids.min() >= 1 and len(np.unique(ids)) == len(ids)
    assert cat.returning_buyers.tolist() == list(range(1, 501))
    assert np.isin(cat.sku_merchant, cat.merchant_id).all()
    assert np.isin(cat.sku_brand, cat.brand_id).all()
    assert cat.merchant_marketplace.dtype == np.uint8 and cat.merchant_marketplace.max() < len(MARKETPLACES)
    assert cat.merchant_country.dtype == np.uint16 and cat.brand_origin.dtype == np.uint16
    assert all(geo.encode(geo.decode(x)) == x
               for x in np.unique(np.concatenate([cat.merchant_country, cat.brand_origin])))
    assert cat.brand_international.dtype == bool
    assert cat.sku_price_fen.dtype == np.int64 and cat.sku_stock.dtype == np.int64
    assert len(cat.merchant_name) == 2000 and all(cat.merchant_name)
    assert len(cat.brand_name) == cat.brands and all(cat.brand_name)
    assert generate_catalog(10, 100, seed=0, brands=7).brands == 7


def test_a_few_giant_stores_and_a_long_tail(cat):
    sizes = np.bincount(cat.sku_merchant - 1, minlength=cat.merchants)
    assert sizes.min() >= 1  # enough SKUs: every merchant sells something
    top = np.sort(sizes)[::-1]
    assert top[: cat.merchants // 100].sum() >= 0.25 * cat.skus  # top 1% of merchants
    assert np.median(sizes) <= 0.5 * sizes.mean()  # the typical shop is small


def test_hottest_skus_belong_to_big_tmall_stores(cat):
    sizes = np.bincount(cat.sku_merchant - 1, minlength=cat.merchants)
    hottest = cat.sku_merchant[: cat.skus // 1000] - 1  # top 0.1% of SKU rows
    assert (cat.merchant_marketplace[hottest] == TMALL).mean() >= 0.9
    assert (sizes[hottest] >= np.percentile(sizes, 90)).mean() >= 0.6
    hot = cat.sku_merchant[: cat.skus // 100] - 1  # top 1%
    assert (cat.merchant_marketplace[hot] == TMALL).mean() >= 0.7
    assert len(np.unique(hot)) >= 20  # many stores have hits, not just the biggest
    assert cat.merchant_name[cat.sku_merchant[0] - 1].endswith("Store")


def test_marketplace_mix_and_countries():
    c = generate_catalog(merchants=20_000, skus=20_000, seed=1)
    share = np.bincount(c.merchant_marketplace, minlength=5) / c.merchants
    assert np.allclose(share, [0.15, 0.65, 0.05, 0.07, 0.08], atol=0.015)
    glob = c.merchant_marketplace == TMALL_GLOBAL
    assert (c.merchant_country[glob] != CN).all()
    assert (c.merchant_country[~glob] == CN).mean() >= 0.95
    abroad = {geo.decode(x) for x in c.merchant_country[glob]}
    assert {"US", "JP", "KR", "DE", "FR", "AU", "GB", "IT"} <= abroad


def test_flagship_stores_and_names(cat):
    assert cat.merchant_name[0] == "Apple Flagship Store"
    assert cat.merchant_marketplace[0] == TMALL
    apple = cat.sku_merchant == 1
    assert (cat.sku_brand[apple] == 1).all()  # a flagship sells only its own brand
    taobao = np.flatnonzero(cat.merchant_marketplace == TAOBAO)
    assert not any("Flagship" in cat.merchant_name[i] for i in taobao)


def test_famous_brands_first_and_international_origins(cat):
    assert cat.brand_name[:8] == ["Apple", "Estee Lauder", "Gap", "L'Oreal", "Nike", "Samsung", "Uniqlo", "Zara"]
    assert cat.brand_international[:8].all()
    assert {"Xiaomi", "Huawei", "Haier", "Li-Ning"} <= set(cat.brand_name[: len(FAMOUS_BRANDS)])
    assert not cat.brand_international[cat.brand_name.index("Xiaomi")]
    assert (cat.brand_origin[cat.brand_international] != CN).all()
    assert (cat.brand_origin[~cat.brand_international] == CN).all()
    assert cat.brand_international.mean() >= 0.6
    assert len(np.unique(cat.sku_brand)) == cat.brands  # every brand is on offer


def test_full_scale_brand_formula_gives_60000_international_brands():
    brands = default_brands(1_000_000)
    assert brands == 100_000
    c = generate_catalog(merchants=100, skus=1000, seed=2, brands=brands)  # the brands, not the SKUs
    assert c.brand_international.sum() >= 60_000
    assert len(set(c.brand_name)) >= 0.99 * brands  # generated names are (nearly) distinct


def test_prices(cat):
    p = cat.sku_price_fen
    assert p.min() >= 1 and p.max() <= 3_000_000  # at most RMB 30,000
    assert ((p >= 2_000) & (p <= 200_000)).mean() >= 0.9  # mostly RMB 20 .. 2,000
    assert (p > 1_000_000).any()  # a few luxury items
    assert (p % 1000 == 900).mean() >= 0.4  # festival endings: 99.00, 199.00, 29.90 ...
    assert (p == 9900).any()


def test_flash_deals_sell_out_long_tail_does_not(cat):
    s = cat.sku_stock
    assert s.min() >= 0
    hot = max(10, cat.skus // 1000)
    assert s[:hot].max() <= 2000 and np.median(s[hot:]) > 3 * np.median(s[:hot])
    # a benchmark of ten lines per SKU, drawn by popularity row
    demand = popularity_weights(cat.skus) * 10 * cat.skus
    assert (demand[:10] > s[:10]).all()
    assert (demand[1000:] < s[1000:]).all()


def test_popularity_weights():
    w = popularity_weights(1000)
    assert w.dtype == np.float64 and len(w) == 1000
    assert w.sum() == pytest.approx(1.0)
    assert (np.diff(w) < 0).all()
    assert w[0] / w[1] == pytest.approx(2**1.1)
    assert popularity_weights(10, exponent=0.0) == pytest.approx(np.full(10, 0.1))
    assert len(popularity_weights(0)) == 0


@pytest.mark.parametrize("merchants, skus, brands",
                         [(1, 1, None), (3, 1, None), (5, 0, None), (50, 200, 1), (40, 100, 3)])
def test_tiny_catalogs(merchants, skus, brands):
    c = generate_catalog(merchants, skus, seed=0, brands=brands)
    assert (c.merchants, c.skus) == (merchants, skus)
    assert np.isin(c.sku_merchant, c.merchant_id).all() and np.isin(c.sku_brand, c.brand_id).all()
    assert (c.sku_price_fen > 0).all()


@pytest.mark.parametrize("kwargs", [
    dict(merchants=0, skus=10), dict(merchants=5, skus=-1), dict(merchants=5, skus=10, brands=0),
    dict(merchants=5, skus=10, returning_buyers=-1),
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_catalog(seed=0, **kwargs)


def test_generated_names_stay_distinct_past_the_word_combinations():
    from double11.catalog.generate import _combine

    names = _combine(np.random.default_rng(0), 50, (("A", "B"), ("x", "y", "z")))
    assert len(set(names)) == 50 and "Ax" in names and "Ax 2" in names
