"""LocalCluster in the test's own process (as the benchmark uses it): the
slot map and the stock split among the units, a process of the caller's
started beside the units, and everything stopped in order."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cluster_processes import gone  # tests/cluster/cluster_processes.py
from model import T0, small_catalog
from nats.aio.client import Client

from double11.cluster.local_cluster import LocalCluster, ProcessSpec
from double11.cluster.quotas import StockReport
from double11.cluster.slots import load_slot_map
from double11.cluster.stream_log import ask_cluster
from double11.cluster.unit_requests import ask_stock

pytestmark = pytest.mark.slow  # starts NATS servers and engine processes

_SKU_ROW = 1  # SKU 102's row in the small catalog
# a stand-in for the front: it says it serves, with what it was given, and waits to be stopped
_FRONT = ("import json, sys, time; print(json.dumps({'event': 'serving', 'urls': sys.argv[1], 'data': sys.argv[2]}),"
          " flush=True); time.sleep(3600)")


def test_a_cluster_in_process_with_a_process_of_the_callers(tmp_path: Path):
    front = ProcessSpec("front", "front", [sys.executable, "-c", _FRONT, "{urls}", "{data}"])
    cluster = LocalCluster(extra=[front])
    data = tmp_path / "cluster"
    try:
        urls, slot_map = cluster.start(data, nodes=3, units=2, catalog=small_catalog(stock={102: 1001}),
                                       clock_start_ms=T0)
        assert slot_map.units == ("u0", "u1") and load_slot_map(urls) == slot_map
        said = cluster.processes[-1].events[0]
        assert (said["urls"], said["data"]) == (",".join(urls), str(data))

        async def stock(nc: Client) -> list[StockReport]:
            return [await ask_stock(nc, unit) for unit in slot_map.units]

        reports = ask_cluster(urls, "test-local-cluster", stock)
        assert [int(r.stocked[_SKU_ROW]) for r in reports] == [501, 500]  # the quotas sum to the stock
        written = json.loads((data / "cluster.json").read_text())
        assert written["state"] == "serving" and written["units"] == ["u0", "u1"]
        pids = [proc.pid for proc in cluster.processes] + [node.process.pid for node in cluster.nats.nodes
                                                           if node.process is not None]
    finally:
        stopped = cluster.stop()
    assert [phrase.split(" (")[0] for phrase in stopped] == [
        "front", "u0 standby", "u1 standby", "u0 primary", "u1 primary", "NATS node n1", "NATS node n2",
        "NATS node n3"]
    assert all(gone(pid) for pid in pids)
    assert json.loads((data / "cluster.json").read_text())["state"] == "stopped"
