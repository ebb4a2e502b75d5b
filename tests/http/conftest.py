"""Fixtures for the HTTP tests: a festival over the small catalog, and a real
granian server on a free loopback port (in a thread with its own uvloop)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from model import T0, small_catalog

from double11.http.server import HttpServer
from double11.link.local import LocalFestival
from double11.service import Festival

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 10.0, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(f"nothing listening on port {port}")


def open_festival():
    """The real engine over the small catalog, in memory (durability is
    tests/test_crash.py's business; this keeps each test's setup fast)."""
    return Festival.open(small_catalog(), clock_start_ms=T0)


class ThreadServer:
    """HttpServer running in a background thread (signals are the main thread's)."""

    def __init__(self, festival, static_dir=None, empty=False, verifier=None):
        """`verifier`: the tokens it takes (access.tokens.Verifier); None: none, every route open."""
        import uvloop

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = HttpServer(LocalFestival(festival) if festival is not None else None, port=self.port,
                                 static_dir=static_dir, empty=empty, verifier=verifier)
        self.error: BaseException | None = None

        def run():
            try:
                uvloop.run(self.server.serve(install_signals=False))
            except BaseException as e:  # pragma: no cover - surfaced in stop()
                self.error = e

        self.thread = threading.Thread(target=run, name=f"http-{self.port}", daemon=True)
        self.thread.start()
        try:
            wait_listening(self.port, alive=self.thread.is_alive)
        finally:
            if self.error is not None:
                raise self.error

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "server did not stop"
        if self.error is not None:
            raise self.error


class SplitServer:
    """`double11 serve` (`launch`, then serve's flags) in a session of its own
    (front and engine), on a free port, ready when it answers /healthz."""

    def __init__(self, catalog_dir: Path, data_dir: Path, flags: tuple[str, ...] = ("--open",),
                 launch: tuple[str, ...] = (sys.executable, "-m", "double11"), start_s: float = 60.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*launch, "serve", "--catalog", str(catalog_dir), "--data", str(data_dir),
                 "--port", str(self.port), "--clock-start", str(T0), "--speedup", "0", *flags],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + start_s
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def engine_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def signal_all(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> int:
        self.signal_all(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.signal_all(signal.SIGKILL)


@pytest.fixture
def festival():
    return open_festival()


def _make_static(root):
    d = root / "static"
    d.mkdir()
    (d / "index.html").write_text("<!doctype html><title>double11</title>")
    (d / "app.js").write_text("console.log('hi')")
    (root / "secret.txt").write_text("top secret")
    return d


@pytest.fixture
def static_dir(tmp_path):
    return _make_static(tmp_path)


@pytest.fixture
def server(festival, static_dir):
    srv = ThreadServer(festival, static_dir=static_dir)
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server per test module, for tests that change nothing."""
    srv = ThreadServer(open_festival(), static_dir=_make_static(tmp_path_factory.mktemp("shared")))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_client(shared_server):
    with httpx.Client(base_url=shared_server.url, timeout=10) as c:
        yield c
