"""Hosts on one machine, each in a network namespace of its own, for partition tests.

`HostNetwork(n)` makes n namespaces, `d11-<token>-h<k>`, each with one end of
a veth pair (named `eth0` inside, address 10.211.<net>.<k + 1>/24) whose other
end is attached to a bridge, `d11b-<token>`, in the namespace of the process
that made them; the bridge has the address 10.211.<net>.254, so that process
reaches every host and the hosts reach each other through the bridge, as
machines on one switch do.  `cut(k)` sets host k's link down: nobody reaches
it and it reaches nobody, while what runs inside its namespace (a server and
its clients there) still reaches itself: a network partition, with a minority
of one.  `heal(k)` sets the link up again.

`remove` deletes the veth pairs (first: a deleted namespace's devices go
only some time later), the namespaces and the bridge; the context manager
calls it on every path, and so does `create` when it fails half way.  End
the processes started inside a namespace before (a namespace lives on while
a process is in it).  A process killed before its `remove` leaves them: their
names start with `d11`.

`enter(name)` moves the calling thread (only that thread: a network namespace
is a thread's own on Linux) into a namespace; threads it starts afterwards
are in it too.  `run_in(k, fn)` runs fn on such a thread: a client made there
(its event-loop thread and sockets) belongs to host k's side of a partition.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`;
`why_unavailable()` says in one line why not, for a test to skip with.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_CLONE_NEWNET = 0x40000000  # linux/sched.h
_PREFIX = "10.211"  # the hosts' /24 is 10.211.<net>.0, <net> one the machine has no route to yet
_BRIDGE_HOST = 254
_IP_COMMAND_S_MAX = 10  # one `ip` command (it answers at once; a hang is a broken machine)
_T = TypeVar("_T")


class NetworkUnavailable(RuntimeError):
    """A namespace, veth or bridge could not be made or changed: the `ip` command and what it said."""


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_COMMAND_S_MAX)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkUnavailable(f"ip {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise NetworkUnavailable(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout


def why_unavailable() -> str | None:
    """Why network namespaces cannot be made here (not root, no `ip`, refused), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"d11-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except NetworkUnavailable as exc:
        return f"network namespaces cannot be made here: {exc}"
    with contextlib.suppress(NetworkUnavailable):
        _ip("netns", "delete", probe)
    return None


def enter(namespace: str) -> None:
    """Moves the calling thread into the named network namespace (`ip netns` names)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns into the network namespace {namespace}: {os.strerror(code)}")
    finally:
        os.close(fd)


def _free_net() -> int:
    """A third octet for 10.211.<net>.0/24 that no route of this machine's covers yet."""
    routes = _ip("-4", "route", "show", "table", "all")
    taken = {int(word.split(".")[2]) for word in routes.split() if word.startswith(f"{_PREFIX}.")}
    free = [net for net in range(256) if net not in taken]
    if not free:
        raise NetworkUnavailable(f"every {_PREFIX}.<net>.0/24 is in use on this machine")
    return free[secrets.randbelow(len(free))]


class HostNetwork:
    """`hosts` network namespaces on one bridge (see the module's docstring)."""

    def __init__(self, hosts: int) -> None:
        if hosts < 1:
            raise ValueError(f"hosts must be at least 1, got {hosts}")
        token = secrets.token_hex(3)
        self.bridge = f"d11b-{token}"
        self.namespaces = [f"d11-{token}-h{k + 1}" for k in range(hosts)]
        self.links = [f"d11-{token}-{k + 1}" for k in range(hosts)]  # the bridge's ends (15 characters at most)
        self.addresses: list[str] = []
        self.gateway = ""
        self._made: list[tuple[str, ...]] = []  # what remove deletes, newest first

    def create(self) -> HostNetwork:
        try:
            net = f"{_PREFIX}.{_free_net()}"
            self.gateway = f"{net}.{_BRIDGE_HOST}"
            self._make("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for k, (namespace, link) in enumerate(zip(self.namespaces, self.links, strict=True)):
                address = f"{net}.{k + 1}"
                self._make("netns", "add", namespace)
                self._make("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
                _ip("link", "set", link, "master", self.bridge, "up")
                _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", namespace, "link", "set", "eth0", "up")
                _ip("-n", namespace, "link", "set", "lo", "up")
                self.addresses.append(address)
        except BaseException:
            self.remove()
            raise
        return self

    def _make(self, kind: str, verb: str, name: str, *rest: str) -> None:
        _ip(kind, verb, name, *rest)
        self._made.insert(0, (kind, "delete", name))

    def remove(self) -> None:
        """Deletes what was made, newest first (each attempted even if one fails)."""
        failures = []
        while self._made:
            command = self._made.pop(0)
            try:
                _ip(*command)
            except NetworkUnavailable as exc:
                failures.append(str(exc))
        if failures:
            raise NetworkUnavailable("; ".join(failures))

    def cut(self, k: int) -> None:
        """Host k reaches nobody and nobody reaches it (its link down)."""
        _ip("link", "set", self.links[k], "down")

    def heal(self, k: int) -> None:
        _ip("link", "set", self.links[k], "up")

    def run_in(self, k: int, fn: Callable[[], _T]) -> _T:
        """fn() on a thread inside host k's namespace (threads it starts stay there); its result or exception."""
        outcome: dict[str, Any] = {}

        def inside() -> None:
            try:
                enter(self.namespaces[k])
                outcome["result"] = fn()
            except BaseException as exc:  # noqa: BLE001 (raised again on the caller's thread)
                outcome["error"] = exc

        thread = threading.Thread(target=inside, name=f"double11-in-{self.namespaces[k]}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def __enter__(self) -> HostNetwork:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()
