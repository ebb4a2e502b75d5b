"""LocalCluster in the test's own process (as the benchmark uses it): the
slot map and the stock split among the units, a process of the caller's
started beside the units, and everything stopped in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from cluster_processes import gone  # tests/cluster/cluster_processes.py
from model import T0, small_catalog
from nats.aio.client import Client

from double11.bench.cluster_load import load
from double11.cluster.local_cluster import LocalCluster, ProcessSpec
from double11.cluster.quotas import StockReport
from double11.cluster.slots import load_slot_map
from double11.cluster.stream_log import ask_cluster
from double11.cluster.unit_requests import ask_state, ask_stock

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

        # the benchmark's load, offered at a rate: 50 checkouts a batch, 500 a second for 1 s
        # (unpaced, its two clients send a batch every few milliseconds)
        figures, _ = asyncio.run(load(urls, small_catalog().sku_id, 1.0, 50, 2, hot_rows=1, offered_per_s=500))
        assert 2 <= len(figures.latencies_ms) <= 2 * 10  # ten batches of checkouts, each with its payments
        assert figures.checkouts > 0 and figures.payments == figures.checkouts
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


def test_a_unit_node_that_dies_comes_back_as_its_units_standby(tmp_path: Path):
    """SIGKILL of u0's primary: its standby serves, and the dead node is
    started again as the new standby, so a second SIGKILL is survived too."""
    cluster = LocalCluster()
    try:
        urls, slot_map = cluster.start(tmp_path / "cluster", nodes=3, units=1, catalog=small_catalog(),
                                       clock_start_ms=T0)
        for round_ in range(2):
            primary = next(p for p in cluster.processes if p.role_now() == "primary" and p.running())
            assert primary.pid is not None
            os.kill(primary.pid, signal.SIGKILL)
            assert primary.process is not None
            primary.process.wait(timeout=30)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                # the standby, or the dead one started again, leads (whichever took the lease
                # first), and the other follows: a primary and a standby again
                alive = [p for p in cluster.processes if p.running()]
                roles = sorted(p.role_now() for p in alive)
                if roles == ["primary", "standby"] and all(p.events for p in alive):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"round {round_}: {[p.describe() for p in cluster.processes]}")
            leader = next(p for p in alive if p.role_now() == "primary")
            assert leader is not primary
            state = ask_cluster(urls, "test-revive", lambda nc: ask_state(nc, "u0"))
            assert state["role"] == "primary" and state["pid"] == leader.pid
        assert any("started again as the unit's standby" in line for line in cluster.exited())
    finally:
        cluster.stop()
    assert all(gone(p.pid) for p in cluster.processes if p.pid is not None)
