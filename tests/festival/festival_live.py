"""Helpers for the festival's end-to-end tests: a free port and a real server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVER_READY_S = 180  # the first server of a fresh clone compiles the engine first (25-30 s here)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`python -m double11 serve` on a free port, its festival clock just before midnight."""

    def __init__(self, data: Path, catalog: Path, speedup: float, preroll_real_s: float):
        from double11.config import FestivalConfig

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.speedup = speedup
        self.catalog = catalog
        start = FestivalConfig().festival_start_ms - int(preroll_real_s * speedup * 1000)
        with open(data / "server.log", "wb") as log:  # the server holds its own copy of the file
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "double11", "serve", "--open",
                 "--port", str(self.port), "--data", str(data / "log"),
                 "--speedup", f"{speedup:g}", "--clock-start", str(start), "--catalog", str(catalog)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + SERVER_READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(data / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/stats", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stats(self) -> dict:
        return httpx.get(self.url + "/v1/stats", timeout=10).raise_for_status().json()

    def stop(self) -> int:
        from double11.festival_cmd import stop_server

        return stop_server(self.proc)


def start_plain_server(port: int, data: Path, catalog: Path, log: Path, speedup: float) -> subprocess.Popen:
    """A plain `double11 serve`: no --clock-start, no config, so it runs its own day."""
    with open(log, "ab") as out:  # the server holds its own copy of the file
        proc = subprocess.Popen(
            [sys.executable, "-m", "double11", "serve", "--open", "--port", str(port), "--data", str(data),
             "--catalog", str(catalog), "--speedup", f"{speedup:g}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + SERVER_READY_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/stats", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start: " + log.read_text()[-2000:])
