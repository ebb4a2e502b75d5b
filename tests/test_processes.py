"""Processes: no two festivals on one port, and no server or engine process
outlives the command that started it, however that command ends.

Real subprocesses: `python -m double11 serve` (a front and an engine process)
and `python -m double11 festival` (itself, its server, the server's engine),
on small catalogs and free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from child_signals import default_stop_signals  # tests/child_signals.py

from double11.catalog.files import load_catalog, save_catalog
from double11.catalog.generate import generate_catalog
from double11.lifecycle import CommandFailed, data_dir_user, listen_exclusively
from double11.storage import snapshot as snapshots

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # real subprocesses (tests/conftest.py: the unit/slow split)
START_S = 120.0  # the first start after a compiled module changed compiles the engine first
GONE_S = 30.0  # an engine whose front died makes what it was sent durable, snapshots, exits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet has stopped: it holds nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], timeout_s: float = GONE_S) -> list[int]:
    """The pids still running after timeout_s (none, normally)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def wait_for(condition, timeout_s: float = START_S, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def double11(*args: str, log: Path, **kwargs) -> subprocess.Popen:
    """`python -m double11 ARGS` in a session of its own, its output in `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "double11", *args], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/v1/stats", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def kill_session(proc: subprocess.Popen, others: Sequence[int] = ()) -> None:
    """Whatever a failed test left of it (and of processes in sessions of their own)."""
    for pid in others:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def stop_cleanly(server: subprocess.Popen) -> None:
    """SIGTERM, as a supervisor stops a server: it must exit 0; whatever
    happens, nothing of it is left running."""
    server.send_signal(signal.SIGTERM)
    try:
        assert server.wait(60) == 0
    finally:
        kill_session(server)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("catalog")
    save_catalog(generate_catalog(merchants=200, skus=2000, seed=3, returning_buyers=500), folder)
    return folder


@pytest.mark.parametrize(("first", "second"), [("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "0.0.0.0"),
                                               ("0.0.0.0", "127.0.0.1")])
def test_a_listening_port_is_never_shared(first, second):
    held = listen_exclusively(first, 0, 16)
    port = held.getsockname()[1]
    try:
        with pytest.raises(CommandFailed, match=f"port {port} is in use on {second}"):
            listen_exclusively(second, port, 16)
        # nor can a socket that asks to share it, as granian's own listener does
        with socket.socket() as sharing:
            sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError):
                sharing.bind((second, port))
    finally:
        held.close()
    listen_exclusively(second, port, 16).close()  # free once let go


def test_a_second_server_on_a_port_in_use_is_refused_and_the_first_keeps_serving(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "first"
    first = double11("serve", "--open", "--port", str(port), "--data", str(data), log=tmp_path / "first.log")
    try:
        wait_for(lambda: answers(url) or first.poll() is not None, what="the first server")
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        for host in ("127.0.0.1", "0.0.0.0"):  # another spelling of the same port is the same port
            second = subprocess.run([sys.executable, "-m", "double11", "serve", "--open", "--port", str(port),
                                     "--host", host,
                                     "--data", str(tmp_path / f"second-{host}")], cwd=ROOT, capture_output=True,
                                    text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert second.returncode == 2
            # refused before its engine started: one line, nothing else
            assert second.stderr.splitlines() == [
                f"double11 serve: port {port} is in use on {host} (another server, perhaps double11 serve): "
                f"stop it or pick another --port"]
            assert not (tmp_path / f"second-{host}").exists()
        # every connection still reaches the one festival: a checkout takes the stock it sees
        sku = httpx.get(url + "/v1/skus/1", timeout=10).json()
        for i in range(20):
            r = httpx.post(url + "/v1/checkouts", timeout=10, json={
                "buyer": 100 + i, "country": "CN", "channel": "mobile", "lines": [{"sku": 1, "qty": 1}],
                "idempotency_key": f"k{i}"})
            assert r.status_code == 201, r.text
        assert httpx.get(url + "/v1/skus/1", timeout=10).json()["stock"] == sku["stock"] - 20

        # the demo catalog it said it serves is a folder `simulate --catalog` can read
        said = (tmp_path / "first.log").read_text()
        assert f"catalog: {data / 'catalog'} (2,000 merchants, 20,000 skus" in said
        assert load_catalog(data / "catalog").skus == 20_000
        tried = [line for line in said.splitlines() if line.startswith("skus to try: ")]
        assert len(tried) == 1
        named = re.findall(r"(\d+) \(merchant (\d+), price_fen (\d+)\)", tried[0])
        assert len(named) == 3 and len({merchant for _, merchant, _ in named}) == 3
        for sku_id, merchant, price in named:  # what the server says of each
            view = httpx.get(f"{url}/v1/skus/{sku_id}", timeout=10).json()
            assert (view["merchant"], view["price_fen"]) == (int(merchant), int(price))
        assert f"curl -s {url}/v1/skus/{named[0][0]}" in said
    finally:
        stop_cleanly(first)


def test_a_server_is_refused_a_data_folder_another_server_holds(tmp_path, catalog_dir):
    data = tmp_path / "data"
    port = free_port()
    first = double11("serve", "--open", "--port", str(port), "--data", str(data), "--catalog", str(catalog_dir),
                     log=tmp_path / "first.log")
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}") or first.poll() is not None, what="the first server")
        engine = children(first.pid)
        assert len(engine) == 1
        # within 60 s: a restart would wait limits.data_dir_lock_wait_s (120 s) for a closing engine
        second = subprocess.run([sys.executable, "-m", "double11", "serve", "--open", "--port", str(free_port()),
                                 "--data", str(data), "--catalog", str(catalog_dir)], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert second.returncode == 2
        assert second.stderr.splitlines() == [
            f"double11 serve: the data folder {data} is in use by a running server (engine process {engine[0]}): "
            f"stop it or pass another --data"]
    finally:
        stop_cleanly(first)
    assert data_dir_user(data) is None


@pytest.mark.parametrize("when", ["opening", "serving"])
def test_the_engine_stops_by_itself_when_its_front_is_killed(tmp_path, catalog_dir, when):
    port = free_port()
    data = tmp_path / "data"
    front = double11("serve", "--open", "--port", str(port), "--data", str(data), "--catalog", str(catalog_dir),
                     log=tmp_path / "serve.log")
    try:
        engine = wait_for(lambda: children(front.pid), what="the engine process")
        if when == "serving":
            wait_for(lambda: answers(f"http://127.0.0.1:{port}"), what="the server")
            r = httpx.post(f"http://127.0.0.1:{port}/v1/checkouts", timeout=10, json={
                "buyer": 7, "country": "CN", "channel": "mobile", "lines": [{"sku": 1, "qty": 1}],
                "idempotency_key": "before-the-kill"})
            assert r.status_code == 201
        os.kill(front.pid, signal.SIGKILL)
        front.wait(10)
        assert wait_gone(engine) == [], (tmp_path / "serve.log").read_text()[-2000:]
    finally:
        kill_session(front)
    assert data_dir_user(data) is None  # let go: a restart need not wait
    if when == "serving":  # it made durable what it had acknowledged, and closed with a snapshot
        found = snapshots.latest(data)
        assert found is not None and found[0] > 0


def test_serve_stopped_while_its_engine_opens_stops_the_engine(tmp_path, catalog_dir):
    front = double11("serve", "--open", "--port", str(free_port()), "--data", str(tmp_path / "data"),
                     "--catalog", str(catalog_dir), log=tmp_path / "serve.log")
    try:
        engine = wait_for(lambda: children(front.pid), what="the engine process")
        front.send_signal(signal.SIGTERM)
        assert front.wait(60) == 0
        assert wait_gone(engine) == []
        said = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in said
    finally:
        kill_session(front)


def _festival(tmp_path: Path, catalog_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = double11("festival", "--port", str(port), "--data", str(tmp_path / "festival"),
                    "--catalog", str(catalog_dir), "--speedup", "600", "--scale", "1e-5", "--seed", "2",
                    log=tmp_path / "festival.log", preexec_fn=default_stop_signals)
    return proc, f"http://127.0.0.1:{port}"


def _processes(festival: subprocess.Popen) -> list[int]:
    """Its server's front and engine, once both run."""
    def both():
        for server in children(festival.pid):
            engine = children(server)
            if engine:
                return [server, *engine]
        return None
    return wait_for(both, what="the festival's server and engine")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_festival_stopped_by_sigterm_or_sighup_stops_cleanly(tmp_path, catalog_dir, sig):
    festival, url = _festival(tmp_path, catalog_dir)
    processes: list[int] = []
    try:
        processes = _processes(festival)

        def replaying():
            try:
                return httpx.get(url + "/v1/stats", timeout=1).json()["checkouts"] > 0
            except (httpx.HTTPError, ValueError):
                return festival.poll() is not None
        wait_for(replaying, what="the replay")
        festival.send_signal(sig)
        assert festival.wait(120) == 0, (tmp_path / "festival.log").read_text()[-3000:]
        said = (tmp_path / "festival.log").read_text()
        assert "server stopped (0)" in said and "Traceback" not in said
        assert (tmp_path / "festival" / "report.html").exists()  # it wrote what it could
        assert wait_gone(processes, 1.0) == []  # gone before the command ended
    finally:
        kill_session(festival, processes)


def test_festival_killed_outright_leaves_no_server_or_engine(tmp_path, catalog_dir):
    festival, url = _festival(tmp_path, catalog_dir)
    processes: list[int] = []
    try:
        processes = _processes(festival)
        os.kill(festival.pid, signal.SIGKILL)
        festival.wait(10)
        assert wait_gone(processes) == [], (tmp_path / "festival" / "server.log").read_text()[-3000:]
    finally:
        kill_session(festival, processes)
    assert data_dir_user(tmp_path / "festival" / "log") is None


def test_simulate_stopped_by_sigterm_keeps_what_was_acknowledged(tmp_path, catalog_dir):
    from double11.config import FestivalConfig

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # midnight ten real seconds after its start: a replay must begin within a festival minute of
    # midnight (0.1 s at 600x), so the server's start and the replay's own must both fit before it
    start = FestivalConfig().festival_start_ms - 10 * 600 * 1000
    server = double11("serve", "--open", "--port", str(port), "--data", str(tmp_path / "data"),
                      "--catalog", str(catalog_dir),
                      "--speedup", "600", "--clock-start", str(start), log=tmp_path / "serve.log")
    try:
        wait_for(lambda: answers(url) or server.poll() is not None, what="the server")
        summary = tmp_path / "summary.json"
        sim = subprocess.Popen([sys.executable, "-m", "double11", "simulate", "--url", url, "--catalog",
                                str(catalog_dir), "--scale", "1e-5", "--seed", "4", "--summary", str(summary)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            wait_for(lambda: sim.poll() is not None or httpx.get(url + "/v1/stats", timeout=5).json()["checkouts"],
                     what="the replay")
            sim.send_signal(signal.SIGTERM)
            out, err = sim.communicate(timeout=120)
        finally:
            if sim.poll() is None:
                sim.kill()
        assert sim.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        acked = json.loads(summary.read_text())
        stats = httpx.get(url + "/v1/stats", timeout=10).json()
        # stopped early, and every answer in flight came back before it ended
        assert 0 < acked["checkouts"] == stats["checkouts"] < 0.5 * 18_800  # the day: about 18,800
        assert acked["payments"] == stats["payments"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(60) == 0
        finally:
            kill_session(server)
