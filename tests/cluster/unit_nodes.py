"""A unit's engine as a process (python -m double11.cluster.node), driven by
JSON lines on stdin or over NATS: the failover tests start a primary and a
standby, kill or pause one, and talk to the other.  Every node is killed and
reaped by `stop`."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from model import T0, co, small_catalog

from double11.catalog.files import save_catalog
from double11.cluster.standby import state_hash
from double11.cluster.unit import replay_stream
from double11.service.durability import latest_snapshot

REPO = Path(__file__).resolve().parents[2]
START_S = 120  # a node's start: imports, and compiled kernels loaded (compiled first after an engine edit)
CHECKOUTS_PER_BATCH = 200


def checkouts_batch(b: int) -> list[dict[str, Any]]:
    """Batch b of the tests' load: checkouts of SKU 102, keys of their own."""
    return [co(f"b{b}-{k}", [(102, 1)], buyer=1 + k) for k in range(CHECKOUTS_PER_BATCH)]


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
            self.passed.append(line)  # answers and other events: kept for the test

    def request(self, message: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
        """Sends one request and returns its answer (requests are answered in order)."""
        self._next_id += 1
        ident = self._next_id
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"id": ident, **message}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it exited: what it said before is kept, as when it ends while asked
            while True:
                self.passed.append(self.next_line(timeout_s))
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


def primary_and_standby(urls: list[str], folder: Path, nodes: list[UnitNode], unit: str,
                        *extra: str) -> tuple[UnitNode, UnitNode]:
    """A unit's primary, new (a small catalog, SKU 102 with plenty of stock),
    and its standby from a copy of the primary's folder, both serving; each
    appended to `nodes` as it starts (the caller stops them)."""
    catalog = folder / "catalog"
    save_catalog(small_catalog(stock={102: 10**8}), catalog)
    primary = UnitNode(urls, unit, folder / "primary", "primary", "--catalog", str(catalog),
                       "--clock-start-ms", str(T0), *extra)
    nodes.append(primary)
    assert primary.wait_event("serving", START_S)["role"] == "primary"
    # the standby's folder is a copy of the primary's: its first snapshot (catalog, config) and its clock
    shutil.copytree(folder / "primary", folder / "standby")
    standby = UnitNode(urls, unit, folder / "standby", "standby", *extra)
    nodes.append(standby)
    assert standby.wait_event("serving", START_S)["role"] == "standby"
    return primary, standby


def replayed_hash(urls: list[str], unit: str, folder: Path) -> tuple[int, str, int]:
    """The stream replayed from scratch: its last record, the state's hash, its checkouts."""
    found = latest_snapshot(folder)
    assert found is not None and found[0] == 0
    _, engine = found
    last = replay_stream(engine, urls, unit, 0)
    return last, state_hash(engine), engine.stats.checkouts
