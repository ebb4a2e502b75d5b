"""The local NATS cluster for trials and tests: its nodes never outlive their starter."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cluster_processes import gone  # tests/cluster/cluster_processes.py

from double11 import limits
from double11.cluster.nats_local import LocalNats, NatsUnavailable

pytestmark = pytest.mark.slow  # starts NATS servers

_STARTER = """
import sys, time
from pathlib import Path
from double11.cluster.nats_local import LocalNats
cluster = LocalNats(Path(sys.argv[1]), nodes=3).start()
print(" ".join(str(pid) for pid in cluster.pids()), flush=True)
time.sleep(600)
"""


def _wait_gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + limits.nats_stop_s_max
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if not gone(pid)]


def test_the_nodes_die_with_the_process_that_started_them(tmp_path: Path):
    starter = subprocess.Popen([sys.executable, "-c", _STARTER, str(tmp_path / "nats")], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert starter.stdout is not None
        pids = [int(p) for p in starter.stdout.readline().split()]
        assert len(pids) == 3 and not any(gone(pid) for pid in pids)
    finally:
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        assert starter.stdout is not None
        starter.stdout.close()
    assert _wait_gone(pids) == []


def test_a_node_that_cannot_start_is_said_in_one_line_and_stops_the_others(tmp_path: Path):
    cluster = LocalNats(tmp_path / "nats", nodes=3)
    cluster.ports_chosen_here = False  # ports the caller placed (cluster up --nats-port): not moved
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", cluster.nodes[1].client_port))
        taken.listen(1)
        with pytest.raises(NatsUnavailable, match=r"nats-server n2 exited with status \d+: see .*n2/output.log"):
            cluster.start()
    pids = [node.process.pid for node in cluster.nodes if node.process is not None]
    assert len(pids) >= 2
    assert _wait_gone(pids) == []
    assert "address already in use" in (tmp_path / "nats" / "n2" / "output.log").read_text()


def test_a_killed_node_comes_back_and_the_cluster_agrees_on_a_leader(nats_cluster: LocalNats):
    before = nats_cluster.pids()
    nats_cluster.kill(0)
    assert gone(before[0]) and not nats_cluster.nodes[0].running()
    nats_cluster.restart(0)
    assert nats_cluster.nodes[0].running() and nats_cluster.pids()[0] != before[0]
    leader = nats_cluster.wait_ready()
    assert leader in {node.name for node in nats_cluster.nodes}
    assert nats_cluster.node_named(leader) in range(3)
    assert os.path.exists(nats_cluster.nodes[0].config_path)
    assert 'sync_interval: "always"' in nats_cluster.nodes[0].config_path.read_text()


def test_a_node_restarted_from_a_thread_outlives_that_thread(nats_cluster: LocalNats):
    """A node dies with the thread that started it (PR_SET_PDEATHSIG): the
    bench restarts one from asyncio.to_thread, whose worker ends soon after."""
    nats_cluster.kill(1)
    restarting = threading.Thread(target=nats_cluster.restart, args=(1,))
    restarting.start()
    restarting.join()
    time.sleep(1.0)  # a node killed with its thread is gone within this
    assert nats_cluster.nodes[1].running()
    nats_cluster.wait_ready()


def test_a_port_taken_before_a_node_binds_it_is_chosen_again(tmp_path: Path):
    """The ports are chosen free, then bound by the nodes a moment later: one
    taken meanwhile by another process gets the cluster new ones."""
    cluster = LocalNats(tmp_path / "nats", nodes=3)
    taken = cluster.nodes[1].http_port
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", taken))
    squatter.listen()
    try:
        cluster.start()
        assert cluster.nodes[1].http_port != taken and len(cluster.pids()) == 3
    finally:
        pids = cluster.pids()
        cluster.stop()
        squatter.close()
    assert all(gone(pid) for pid in pids)


def test_a_monitor_port_that_is_another_nodes_client_port_gets_new_ports(tmp_path: Path):
    """Two listeners of one cluster on one port (ports chosen one at a time
    could repeat): the node that cannot bind its monitor port exits, and a
    NATS greeting where the monitor's HTTP belongs is not a crash of the
    start (it failed a CI run: BadStatusLine) but a start again on new ports."""
    cluster = LocalNats(tmp_path / "nats", nodes=3)
    ports = [p for node in cluster.nodes for p in (node.client_port, node.cluster_port, node.http_port)]
    assert len(set(ports)) == len(ports)  # chosen together: all different
    cluster.nodes[2].http_port = cluster.nodes[0].client_port
    try:
        cluster.start()
        assert cluster.nodes[2].http_port != cluster.nodes[0].client_port and len(cluster.pids()) == 3
    finally:
        pids = cluster.pids()
        cluster.stop()
    assert all(gone(pid) for pid in pids)
