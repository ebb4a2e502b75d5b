"""GET /v1/skus: every SKU once, in id order, a bounded page at a time (all
of them or one merchant's), each with its names; a bad query parameter is a
400 that names it and its bounds, and changes nothing."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from conftest import ThreadServer
from model import T0

from double11 import limits
from double11.catalog import generate_catalog
from double11.service import Festival

SKUS = 300


@pytest.fixture(scope="module")
def catalog():
    c = generate_catalog(merchants=12, skus=SKUS, seed=4)
    # ids out of row order (rows are popularity ranks), with gaps
    c.sku_id = np.random.default_rng(1).choice(10 * SKUS, SKUS, replace=False).astype(np.int64) + 1
    return c


@pytest.fixture(scope="module")
def sku_client(catalog):
    srv = ThreadServer(Festival.open(catalog, clock_start_ms=T0))
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        yield c
    srv.stop()


def walk(client: httpx.Client, limit: int, merchant: int | None = None) -> list[dict]:
    out: list[dict] = []
    after = 0
    while True:
        params = {"limit": limit, "after": after} | ({"merchant": merchant} if merchant else {})
        r = client.get("/v1/skus", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["skus"]) <= limit
        out += page["skus"]
        if page["next_after"] is None:
            return out
        assert page["next_after"] == page["skus"][-1]["sku"] and len(page["skus"]) == limit
        after = page["next_after"]


def test_pages_list_every_sku_once_in_id_order_with_names(sku_client, catalog):
    listed = walk(sku_client, limit=7)
    assert [s["sku"] for s in listed] == sorted(catalog.sku_id.tolist())
    row_of = {int(i): r for r, i in enumerate(catalog.sku_id)}
    brand_name = dict(zip(catalog.brand_id.tolist(), catalog.brand_name))
    merchant_name = dict(zip(catalog.merchant_id.tolist(), catalog.merchant_name))
    for s in listed:
        row = row_of[s["sku"]]
        assert s["name"] == catalog.sku_name[row] and s["name"].startswith(s["brand_name"] + " ")
        assert s["merchant"] == catalog.sku_merchant[row] and s["merchant_name"] == merchant_name[s["merchant"]]
        assert s["brand_name"] == brand_name[s["brand"]]
        assert s["price_fen"] == catalog.sku_price_fen[row] and s["stock"] == catalog.sku_stock[row]
    # a page's SKU reads as GET /v1/skus/{sku} does
    assert sku_client.get(f"/v1/skus/{listed[5]['sku']}").json() == listed[5]


def test_one_merchants_skus(sku_client, catalog):
    for merchant in (int(catalog.merchant_id[0]), int(catalog.merchant_id[-1])):
        listed = walk(sku_client, limit=3, merchant=merchant)
        want = sorted(catalog.sku_id[catalog.sku_merchant == merchant].tolist())
        assert want and [s["sku"] for s in listed] == want
    assert sku_client.get("/v1/skus", params={"merchant": 10**9}).json() == {"skus": [], "next_after": None}


def test_default_and_largest_page(sku_client, catalog):
    page = sku_client.get("/v1/skus").json()
    assert len(page["skus"]) == limits.sku_list_limit_default
    page = sku_client.get("/v1/skus", params={"limit": limits.sku_list_limit_max}).json()
    assert len(page["skus"]) == min(SKUS, limits.sku_list_limit_max)
    last = max(catalog.sku_id.tolist())
    assert sku_client.get("/v1/skus", params={"after": last}).json() == {"skus": [], "next_after": None}


@pytest.mark.parametrize("query, names", [
    ("limit=0", ["limit", "1", str(limits.sku_list_limit_max), "'0'"]),
    (f"limit={limits.sku_list_limit_max + 1}", ["limit", str(limits.sku_list_limit_max)]),
    ("limit=ten", ["limit", "'ten'"]),
    ("after=-1", ["after", "0", str(limits.id_max)]),
    (f"after={limits.id_max + 1}", ["after", str(limits.id_max)]),
    ("merchant=0", ["merchant", "1", str(limits.id_max)]),
    ("merchant=", ["merchant", "''"]),
    ("limit=2&limit=3", ["limit", "twice"]),
    ("sort=price", ["unknown query parameter 'sort'", "merchant, after, limit"]),
])
def test_a_bad_parameter_is_refused_naming_it_and_its_bounds(sku_client, query, names):
    r = sku_client.get("/v1/skus?" + query)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    for name in names:
        assert name in error["message"], (query, error["message"])


def test_other_methods_are_refused(sku_client):
    r = sku_client.post("/v1/skus", json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_openapi_describes_the_listing_and_the_names(sku_client):
    doc = sku_client.get("/openapi.json").json()
    op = doc["paths"]["/v1/skus"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"merchant", "after", "limit"} and all(p["in"] == "query" for p in params.values())
    assert params["limit"]["schema"]["maximum"] == limits.sku_list_limit_max
    assert params["limit"]["schema"]["default"] == limits.sku_list_limit_default
    schemas = doc["components"]["schemas"]
    assert {"name", "merchant_name", "brand_name"} <= set(schemas["SkuView"]["required"])
    assert {"skus", "next_after"} <= set(schemas["SkuPage"]["properties"])
