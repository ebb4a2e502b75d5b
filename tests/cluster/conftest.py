"""A local NATS cluster per test (double11/cluster/nats_local.py), and the
unit nodes a test starts (unit_nodes.py), stopped afterwards, passed or
failed, and checked gone: no process outlives its test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_processes import gone  # tests/cluster/cluster_processes.py
from unit_nodes import UnitNode  # tests/cluster/unit_nodes.py

from double11.cluster.nats_local import LocalNats


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LocalNats]:
    cluster = LocalNats(tmp_path / "nats", nodes=3).start()
    pids = cluster.pids()
    assert len(pids) == 3
    try:
        yield cluster
    finally:
        pids += cluster.pids()  # nodes restarted by the test run under new pids
        cluster.stop()
    assert all(gone(pid) for pid in pids), f"nats-server processes left: {[p for p in pids if not gone(p)]}"


@pytest.fixture
def nodes() -> Iterator[list[UnitNode]]:
    """The unit nodes a test starts; each stopped and checked gone afterwards."""
    started: list[UnitNode] = []
    yield started
    for node in started:
        node.stop()
    assert all(gone(node.pid) for node in started)
