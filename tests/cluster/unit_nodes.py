"""A unit's engine as a process (python -m double11.cluster.node), driven by
JSON lines: the failover tests start a primary and a standby, kill or pause
one, and talk to the other.  Every node is killed and reaped by `stop`."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]


class NodeGone(RuntimeError):
    """The node's output ended (it exited) before the line waited for."""


class UnitNode:
    def __init__(self, urls: list[str], unit: str, data: Path, role: str, *extra: str) -> None:
        self.role = role
        self.process = subprocess.Popen(
            [sys.executable, "-m", "double11.cluster.node", "--urls", ",".join(urls), "--unit", unit,
             "--data", str(data), "--role", role, *extra],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: list[str] = []
        self.passed: list[dict[str, Any]] = []  # lines a request passed over: events said meanwhile
        self._next_id = 0
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True),
                         threading.Thread(target=self._read_errors, args=(self.process.stderr,), daemon=True)]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def _read_errors(self, stream: IO[str]) -> None:
        self.stderr.extend(stream)

    def next_line(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"the {self.role} node said nothing within {timeout_s:g} s; "
                               f"stderr: {''.join(self.stderr)[-2000:]}") from None
        if line is None:
            self.lines.put(None)  # stays at the end for the next reader
            raise NodeGone(f"the {self.role} node ended (status {self.process.poll()}); "
                           f"stderr: {''.join(self.stderr)[-2000:]}")
        return line

    def wait_event(self, event: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.next_line(max(0.01, deadline - time.monotonic()))
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                return line

    def request(self, message: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
        """Sends one request and returns its answer (requests are answered in order)."""
        self._next_id += 1
        ident = self._next_id
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": ident, **message}) + "\n")
        self.process.stdin.flush()
        while True:
            line = self.next_line(timeout_s)
            if line.get("id") == ident:
                return line
            self.passed.append(line)  # an event said meanwhile (stepped_down, say): kept for the test

    def execute(self, commands: list[dict[str, Any]], timeout_s: float = 60) -> dict[str, Any]:
        return self.request({"commands": commands}, timeout_s)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)

    def end_input(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        """Ends the node however it stands: SIGCONT (it may be paused), SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        for reader in self._readers:  # the node is gone: its output ends
            reader.join(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
