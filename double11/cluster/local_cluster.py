"""A whole cluster on this machine, for trials, tests and the benchmark: a
local NATS cluster (nats_local.py), and each unit's primary and standby
(node.py processes serving over NATS: unit_service.py).  `double11 cluster
up` runs one in a supervisor process (cluster/cli.py); a test or the
benchmark runs one in its own process:

    cluster = LocalCluster()
    urls, slot_map = cluster.start(folder, nodes=3, units=2, catalog=catalog)
    ...                                   # ask the units (unit_requests.py)
    cluster.stop()

The process calling `start` is the cluster's supervisor: every process it
starts dies with it (NATS nodes and unit nodes ask the kernel to be killed
when it dies: lifecycle.follow_parent, nats_local), so call `start` from a
thread that lives as long as the cluster.  `stop` stops the standbys first
(a primary stopped first would hand its unit to its standby), then the
primaries (each answers what it holds, publishes its last figures and gives
its lease up), then NATS.

The folder (DATA):
    cluster.json               what runs: the supervisor, NATS nodes (ports,
                               pids), unit nodes (role started as, pid, log);
                               kept after a stop: the cluster's shape and clock
    supervisor.lock            locked by the supervisor while it lives
    catalog/                   the demo catalog, when none was given
    nats/n1 .. nats/nN         each NATS node's config, JetStream store, output.log
    units/<unit>/catalog       the unit's catalog: its share of the stock (quotas.unit_catalogs)
    units/<unit>/primary       the primary's folder: snapshots, clock
    units/<unit>/standby       the standby's: a copy of the primary's first snapshot and clock
    units/<unit>/primary.log   each node's output (events, errors); standby.log too
A second `start` on the folder (after a stop) starts the same cluster again:
the NATS nodes from their stores, each unit from its snapshot and stream.

Other processes (the rebalancer, the HTTP front) are `ProcessSpec`s given to
LocalCluster: started, in order, once every unit serves; stopped first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from double11 import limits
from double11.catalog import Catalog
from double11.catalog.files import load_catalog, save_catalog
from double11.cluster.nats_local import LocalNats
from double11.cluster.quotas import unit_catalogs
from double11.cluster.slots import SlotMap, save_slot_map
from double11.lifecycle import CommandFailed, check_ports_free, child_env, locked_by
from double11.storage import snapshot as snapshots

CLUSTER_FILE = "cluster.json"
LOCK_FILE = "supervisor.lock"
PRIMARY, STANDBY = "primary", "standby"
LOCALHOST = "127.0.0.1"  # where LocalNats's nodes listen
REVIVED_NICENESS = 10  # a unit node started again after it died (LocalCluster.revive)


def unit_names(units: int) -> list[str]:
    """The units' names, in the slot map's order (a unit's index is in its ids)."""
    return [f"u{k}" for k in range(units)]


@dataclass
class ProcessSpec:
    """A process the cluster runs beside its units (the rebalancer, the HTTP front).

    `argv` is its command; "{urls}" (the NATS URLs, comma separated) and
    "{data}" (the cluster's folder) in it are filled in.  It counts as
    serving once it prints the JSON line {"event": ready_event, ...} (None:
    once started).  Its output goes to DATA/<name>.log; it is started with
    lifecycle.child_env, so a double11 command dies with the supervisor."""

    name: str
    role: str
    argv: list[str]
    ready_event: str | None = "serving"


@dataclass
class ClusterProcess:
    """A process the supervisor started, and what it said of itself."""

    name: str
    role: str  # the role it was started in
    unit: str | None
    argv: list[str]
    log: Path
    process: subprocess.Popen[str] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    reported: bool = False  # its exit was said (LocalCluster.exited)
    stopped: bool = False  # by LocalCluster.stop (not on its own before)
    revived: bool = False  # it died and another process took its place (LocalCluster.revive)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def role_now(self) -> str:
        """The role it last said it serves in (its start role before it said any)."""
        for event in reversed(self.events):
            if event.get("event") == "serving":
                return str(event.get("role", self.role))
            if event.get("event") == "stepped_down":
                return "stepped_down"
        return self.role

    def last_words(self) -> str:
        """The last line of its log: why it stopped, when it did."""
        with contextlib.suppress(OSError):
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return "(it said nothing)"

    def describe(self) -> dict[str, Any]:
        status = self.process.poll() if self.process is not None else None
        return {"name": self.name, "role": self.role, "unit": self.unit, "pid": self.pid, "log": str(self.log),
                "running": status is None, "exit_status": status, "stopped": self.stopped,
                "url": next((e["url"] for e in self.events if "url" in e), None)}  # where a front serves


def read_cluster_file(data_dir: Path) -> dict[str, Any] | None:
    """The folder's cluster.json (None: no cluster was ever started there)."""
    try:
        return dict(json.loads((data_dir / CLUSTER_FILE).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CommandFailed(f"{data_dir / CLUSTER_FILE} cannot be read: {exc}", 1) from None


def running_supervisor(data_dir: Path) -> int | None:
    """The pid of the supervisor running the folder's cluster (None: none runs)."""
    text = locked_by(data_dir / LOCK_FILE)
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else -1


def check_shape(data_dir: Path, nodes: int, units: int) -> None:
    """Refuses a folder holding a cluster of another shape (its streams and
    slot map are those of its units)."""
    found = read_cluster_file(data_dir)
    if found is None:
        return
    had_nodes, had_units = int(found.get("nodes", 0)), len(found.get("units", []))
    if (had_nodes, had_units) != (nodes, units):
        raise CommandFailed(f"{data_dir} holds a cluster of {had_nodes} NATS nodes and {had_units} units, not "
                            f"{nodes} and {units}: start it with --nodes {had_nodes} --units {had_units}, "
                            f"or use another folder")


def free_nats_ports(first: int, nodes: int) -> list[int]:
    """The nodes' ports from `first` on: client ports, cluster ports, then
    monitoring ports; refused (CommandFailed) if any is in use."""
    ports = list(range(first, first + 3 * nodes))
    if ports[-1] > 65_535:
        raise CommandFailed(f"--nats-port {first} leaves no room for {len(ports)} ports (the last is 65,535)")
    try:
        check_ports_free(LOCALHOST, ports)
    except CommandFailed as exc:
        raise CommandFailed(str(exc).replace("--port", "--nats-port"), exc.status) from None
    return ports


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


class LocalCluster:
    """A cluster's processes on this machine, supervised by this process."""

    def __init__(self, extra: list[ProcessSpec] | None = None, new_unit_args: list[str] | None = None,
                 speedup: float = 1.0) -> None:
        self.extra = list(extra or [])
        self.new_unit_args = list(new_unit_args or [])  # node.py flags for a new unit's primary (its tables' size)
        self.speedup = speedup  # the units' clocks: festival seconds per real second (a unit keeps its own)
        self.clock_real_start_ms: int | None = None
        self.data: Path | None = None
        self.nats: LocalNats | None = None
        self.slot_map: SlotMap | None = None
        self.units: list[str] = []
        self.processes: list[ClusterProcess] = []
        self.clock_start_ms = 0
        self._lock_fd: int | None = None
        self._recorded = False  # cluster.json says this start's cluster (once NATS runs)
        self._stopped: list[str] = []  # what stop stopped, one phrase each
        self._stopping = threading.Event()  # no node is revived once a stop began
        self._reviver: threading.Thread | None = None
        self._revived_said: list[str] = []  # said by the next exited()
        self._said = threading.Condition()  # a process said something (an event) or ended
        self._readers: list[threading.Thread] = []

    @property
    def urls(self) -> list[str]:
        return self.nats.urls if self.nats is not None else []

    # ------------------------------------------------------------ starting
    def start(self, data_dir: str | Path, nodes: int = 3, units: int = 2, catalog: Catalog | str | Path | None = None,
              clock_start_ms: int | None = None, nats_port: int | None = None,
              clock_real_start_ms: int | None = None) -> tuple[list[str], SlotMap]:
        """Starts the cluster in data_dir (again, if it ran there before) and
        returns once every process serves: the NATS URLs and the slot map.
        A new unit's stock is its share of `catalog`'s (a generated demo
        catalog when None); nats_port: the first of the nodes' 3 x nodes
        ports (default: free ones).  New units' clocks read clock_start_ms
        at the real instant clock_real_start_ms (ms since the Unix epoch;
        None: each when it opens), running at the cluster's speedup."""
        if not limits.stream_replicas <= nodes <= limits.local_cluster_nodes_max:
            raise CommandFailed(f"a local cluster has {limits.stream_replicas} to {limits.local_cluster_nodes_max} "
                                f"NATS nodes (each unit's stream has {limits.stream_replicas} replicas), got {nodes}")
        if not 1 <= units <= limits.local_cluster_units_max:
            raise CommandFailed(f"a local cluster has 1 to {limits.local_cluster_units_max} units, got {units}")
        self.data = data = Path(data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self._take_lock(data)
        try:
            check_shape(data, nodes, units)
            previous = read_cluster_file(data) or {}
            self.nats = LocalNats(data / "nats", nodes)  # NatsUnavailable when there is no nats-server
            if nats_port is not None:
                self._place_ports(nats_port)
            self.units = names = unit_names(units)
            self.clock_start_ms = int(previous.get("clock_start_ms") or clock_start_ms or time.time() * 1000)
            self.clock_real_start_ms = clock_real_start_ms
            self.nats.start()
            self._recorded = True
            self._write_state("starting")
            self.slot_map = SlotMap.even(names)
            save_slot_map(self.urls, self.slot_map)
            new = [unit for unit in names if snapshots.latest(self._folder(unit, PRIMARY)) is None]
            if new:
                self._write_unit_catalogs(names, new, catalog)
            self._start_and_wait([self._node(unit, PRIMARY, unit in new) for unit in names])
            for unit in names:
                self._standby_folder(unit)
            self._start_and_wait([self._node(unit, STANDBY, False) for unit in names])
            for spec in self.extra:
                self._start_and_wait([self._extra(spec)], spec.ready_event, role=None)
            self._write_state("serving")
            self._reviver = threading.Thread(target=self._revive_until_stopped, name="double11-cluster-revive",
                                             daemon=True)
            self._reviver.start()
        except BaseException:
            self.stop()
            raise
        return self.urls, self.slot_map

    def _take_lock(self, data: Path) -> None:
        fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = running_supervisor(data)
            raise CommandFailed(f"a cluster already runs in {data} (supervisor pid {pid}): "
                                f"double11 cluster status --data {data} says what it does") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _place_ports(self, first: int) -> None:
        assert self.nats is not None
        count = len(self.nats.nodes)
        ports = free_nats_ports(first, count)
        self.nats.ports_chosen_here = False  # the user's: a port taken is said, not moved
        for k, node in enumerate(self.nats.nodes):
            node.client_port, node.cluster_port, node.http_port = ports[k], ports[count + k], ports[2 * count + k]

    def _folder(self, unit: str, role: str) -> Path:
        assert self.data is not None
        return self.data / "units" / unit / role

    def _write_unit_catalogs(self, names: list[str], new: list[str], catalog: Catalog | str | Path | None) -> None:
        """Each new unit's catalog: the whole catalog with the unit's share of its stock."""
        assert self.data is not None
        if catalog is None:
            from double11.catalog.generate import generate_catalog
            from double11.link.engine import DEMO_CATALOG

            catalog = generate_catalog(**DEMO_CATALOG)
            if not (self.data / "catalog").exists():
                save_catalog(catalog, self.data / "catalog")
        elif not isinstance(catalog, Catalog):
            catalog = load_catalog(catalog)
        for unit, share in zip(names, unit_catalogs(catalog, len(names))):
            if unit in new:
                folder = self._folder(unit, "catalog")
                shutil.rmtree(folder, ignore_errors=True)  # a start that failed before its unit's first snapshot
                save_catalog(share, folder)

    def _standby_folder(self, unit: str) -> None:
        """A standby starts from a copy of its primary's folder (the first
        snapshot: catalog, config; the clock), made once."""
        folder = self._folder(unit, STANDBY)
        if snapshots.latest(folder) is None:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(self._folder(unit, PRIMARY), folder)

    def _node(self, unit: str, role: str, new: bool) -> ClusterProcess:
        argv = self._node_argv(unit, self._folder(unit, role), role)
        if new:
            argv += ["--catalog", str(self._folder(unit, "catalog")), "--clock-start-ms", str(self.clock_start_ms),
                     *self.new_unit_args]
            if self.clock_real_start_ms is not None:
                argv += ["--clock-real-start-ms", str(self.clock_real_start_ms)]
        return ClusterProcess(f"{unit}-{role}", role, unit, argv, self._folder(unit, role).with_suffix(".log"))

    def _node_argv(self, unit: str, folder: Path, role: str) -> list[str]:
        return [sys.executable, "-m", "double11.cluster.node", "--urls", ",".join(self.urls), "--unit", unit,
                "--data", str(folder), "--role", role, "--no-stdin", "--speedup", repr(self.speedup)]

    def _extra(self, spec: ProcessSpec) -> ClusterProcess:
        assert self.data is not None
        argv = [arg.replace("{urls}", ",".join(self.urls)).replace("{data}", str(self.data)) for arg in spec.argv]
        return ClusterProcess(spec.name, spec.role, None, argv, self.data / f"{spec.name}.log")

    def _start_and_wait(self, started: list[ClusterProcess], event: str | None = "serving",
                        role: str | None = "") -> None:
        """Starts the processes side by side, then waits until each says
        `event` (in its role, unless role is None; "": the one it started in)."""
        for proc in started:
            self._launch(proc)
        self._write_state("starting")
        deadline = time.monotonic() + limits.cluster_start_s_max
        for proc in started:
            if event is not None:
                self._wait_for(proc, event, proc.role if role == "" else role, deadline)

    def _launch(self, proc: ClusterProcess) -> None:
        proc.log.parent.mkdir(parents=True, exist_ok=True)
        with open(proc.log, "a") as errors:  # the child keeps its own copy of the descriptor
            # its own session: a Ctrl-C at the terminal reaches the supervisor, which stops it in turn
            proc.process = subprocess.Popen(proc.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=errors, text=True, env=child_env(), start_new_session=True)
        self.processes.append(proc)
        reader = threading.Thread(target=self._read, args=(proc, proc.process.stdout), daemon=True,
                                  name=f"double11-cluster-{proc.name}")
        reader.start()
        self._readers.append(reader)

    def _read(self, proc: ClusterProcess, stream: IO[str] | None) -> None:
        """Copies the process's output to its log, keeping its events."""
        assert stream is not None
        with stream, open(proc.log, "a") as log:
            for line in stream:
                log.write(line)
                log.flush()
                with contextlib.suppress(ValueError):
                    said = json.loads(line)
                    if isinstance(said, dict) and "event" in said:
                        with self._said:
                            proc.events.append(said)
                            self._said.notify_all()
        with self._said:
            self._said.notify_all()

    def _wait_for(self, proc: ClusterProcess, event: str, role: str | None, deadline: float) -> None:
        def served() -> bool:
            return any(e.get("event") == event and role in (None, e.get("role")) for e in proc.events)

        with self._said:
            while not served():
                if not proc.running():
                    raise CommandFailed(f"{proc.name} exited with status {proc.process and proc.process.poll()} "
                                        f"before it served: {proc.last_words()} (its log: {proc.log})", 1)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandFailed(f"{proc.name} did not serve within {limits.cluster_start_s_max:g} s "
                                        f"(its log: {proc.log})", 1)
                self._said.wait(min(left, limits.unit_lease_poll_s))

    # ------------------------------------------------------------ running
    def exited(self) -> list[str]:
        """Says each process that ended since the last call, once."""
        with self._said:
            lines, self._revived_said = self._revived_said, []
        for proc in self.processes:
            if not proc.reported and not proc.running():
                proc.reported = True
                status = proc.process.poll() if proc.process is not None else None
                lines.append(f"{proc.name} (pid {proc.pid}) exited with status {status}: {proc.last_words()}")
        if lines:
            self._write_state("serving")
        return lines

    def _revive_until_stopped(self) -> None:
        while not self._stopping.wait(limits.unit_revive_poll_s):
            self.revive()

    def revive(self) -> list[str]:
        """A unit node that died (SIGKILL, a crash) comes back as its unit's
        standby, in its own folder (its snapshot, or the object store's newer
        one, then the stream): a unit keeps a standby through its failovers.
        Says each one it started."""
        said = []
        for proc in list(self.processes):
            if proc.unit is None or proc.stopped or proc.revived or proc.running() or self._stopping.is_set():
                continue
            proc.revived = True
            folder = Path(proc.argv[proc.argv.index("--data") + 1])
            # at a lower priority: while it reads the stream to catch up, the unit's new
            # primary, on the same cores here, serves first
            again = ClusterProcess(proc.name, STANDBY, proc.unit,
                                   ["nice", "-n", str(REVIVED_NICENESS), *self._node_argv(proc.unit, folder, STANDBY)],
                                   proc.log)
            self._launch(again)
            said.append(f"{proc.unit}'s node in {folder.name} (pid {proc.pid}) died: started again as the "
                        f"unit's standby (pid {again.pid})")
        if said:
            self._write_state("serving")
            with self._said:
                self._revived_said += said
        return said

    def wait(self, timeout_s: float) -> None:
        """Waits at most timeout_s for a process to say something or end."""
        with self._said:
            self._said.wait(timeout_s)

    # ------------------------------------------------------------ stopping
    def stop(self) -> list[str]:
        """Stops everything it started: the other processes, the standbys,
        the primaries, then NATS.  Says what it stopped, one phrase each
        (called again, what the calls stopped together)."""
        self._stopping.set()
        if self._reviver is not None and self._reviver is not threading.current_thread():
            self._reviver.join()
        stopped = self._stopped
        units = [proc for proc in self.processes if proc.unit is not None]
        others = [proc for proc in self.processes if proc.unit is None]
        for group in (list(reversed(others)), [p for p in units if p.role_now() != PRIMARY],
                      [p for p in units if p.role_now() == PRIMARY]):
            stopped += self._stop_all(group)
        if self.nats is not None:
            running = [(node.name, node.process.pid) for node in self.nats.nodes
                       if node.process is not None and node.running()]
            self.nats.stop()
            stopped += [f"NATS node {name} (pid {pid})" for name, pid in running]
        for reader in self._readers:
            reader.join(timeout=limits.nats_stop_s_max)
        self._write_state("stopped")
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        return list(stopped)

    def _stop_all(self, group: list[ClusterProcess]) -> list[str]:
        """SIGTERM to each, side by side; SIGKILL to those not gone within limits.unit_stop_s_max."""
        running = [(proc, proc.process) for proc in group if proc.process is not None and proc.running()]
        for _, process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + limits.unit_stop_s_max
        said = []
        for proc, process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
                how = ""
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                how = f", killed after {limits.unit_stop_s_max:g} s"
            proc.reported = proc.stopped = True
            said.append(f"{proc.name.replace('-', ' ')} (pid {process.pid}{how})")
        return said

    # ------------------------------------------------------------ cluster.json
    def describe(self, state: str) -> dict[str, Any]:
        assert self.data is not None and self.nats is not None
        return {
            "state": state,
            "supervisor": {"pid": os.getpid()},
            "nodes": len(self.nats.nodes),
            "units": self.units,
            "urls": self.urls,
            "clock_start_ms": self.clock_start_ms,
            "nats": [{"name": node.name, "pid": node.process.pid if node.running() and node.process else None,
                      "client_port": node.client_port, "cluster_port": node.cluster_port,
                      "http_port": node.http_port, "folder": str(node.folder)} for node in self.nats.nodes],
            "processes": [proc.describe() for proc in self.processes],
        }

    def _write_state(self, state: str) -> None:
        if not self._recorded or self.data is None:
            return
        _write_atomically(self.data / CLUSTER_FILE, json.dumps(self.describe(state), indent=1) + "\n")
