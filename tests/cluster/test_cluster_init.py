"""`double11 cluster init`: a cluster on several machines made once: its
slot map in NATS and each unit's catalog, the units' shares summing to the
stock; a second init of another shape, or a folder in use, refused in one line."""

from __future__ import annotations

from pathlib import Path

import nats.js.errors
import numpy as np
import pytest
from model import small_catalog
from test_cluster_cmd import double11, one_line  # tests/cluster/test_cluster_cmd.py

from double11.catalog.files import load_catalog, save_catalog
from double11.cluster import slots
from double11.cluster.nats_local import LocalNats
from double11.cluster.slots import SlotMap, load_slot_map

pytestmark = pytest.mark.slow  # starts NATS servers


def test_init_writes_the_slot_map_and_each_units_catalog(nats_cluster: LocalNats, tmp_path: Path):
    catalog = small_catalog(stock={102: 1001})
    save_catalog(catalog, tmp_path / "catalog")
    urls = ",".join(nats_cluster.urls)
    made = double11("cluster", "init", "--urls", urls, "--units", "3", "--catalog", str(tmp_path / "catalog"),
                    "--out", str(tmp_path / "units"))
    assert made.returncode == 0, made.stderr
    assert "u0, u1, u2" in made.stdout
    assert load_slot_map(nats_cluster.urls) == SlotMap.even(["u0", "u1", "u2"])
    shares = [load_catalog(tmp_path / "units" / f"u{k}") for k in range(3)]
    assert np.array_equal(sum(s.sku_stock for s in shares), catalog.sku_stock)
    assert all(np.array_equal(s.sku_id, catalog.sku_id) for s in shares)

    again = double11("cluster", "init", "--urls", urls, "--units", "2", "--catalog", str(tmp_path / "catalog"),
                     "--out", str(tmp_path / "other"))
    assert again.returncode == 1 and "already has a slot map, for units ['u0', 'u1', 'u2']" in one_line(again)
    used = double11("cluster", "init", "--urls", urls, "--units", "3", "--catalog", str(tmp_path / "catalog"),
                    "--out", str(tmp_path / "units"))
    assert used.returncode == 2 and "is not empty" in one_line(used)


def test_the_slot_map_is_written_through_a_new_buckets_first_no_responders(nats_cluster: LocalNats,
                                                                             monkeypatch: pytest.MonkeyPatch):
    """A bucket just made can answer its first put with no responders while
    its stream is placed (seen on a busy machine at `cluster up`): the write
    is tried again, not reported as a failed start."""
    real_open = slots.open_bucket
    refused: list[str] = []

    async def open_flaky(nc, bucket, *args, **kwargs):  # type: ignore[no-untyped-def]
        kv = await real_open(nc, bucket, *args, **kwargs)
        real_create, real_get = kv.create, kv.get

        async def create(key, value):  # type: ignore[no-untyped-def]
            if "create" not in refused:
                refused.append("create")
                raise nats.js.errors.NoStreamResponseError
            return await real_create(key, value)

        async def get(key):  # type: ignore[no-untyped-def]
            if "get" not in refused:
                refused.append("get")
                raise nats.js.errors.NoStreamResponseError
            return await real_get(key)

        kv.create, kv.get = create, get  # type: ignore[method-assign]
        return kv

    monkeypatch.setattr(slots, "open_bucket", open_flaky)
    wanted = SlotMap.even(["east", "west"])
    slots.save_slot_map(nats_cluster.urls, wanted)
    assert load_slot_map(nats_cluster.urls) == wanted
    assert refused == ["create", "get"]
    with pytest.raises(ValueError, match=r"already has a slot map, for units \['east', 'west'\]"):
        slots.save_slot_map(nats_cluster.urls, SlotMap.even(["north"]))
