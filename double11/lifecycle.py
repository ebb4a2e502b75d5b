"""How double11's processes start and end: the one place for it.

- A listening port is never shared.  granian's own listener sets SO_REUSEPORT,
  so a second server on a port in use would bind it too and the kernel would
  split the connections between two independent festivals (stock sold twice).
  `listen_exclusively` binds without SO_REUSEPORT, before anything slow starts,
  and the server serves on that socket; `check_ports_free` is the same test for
  commands that start a server in a subprocess (say it at once, not after it).
- Children never outlive their parent.  A parent that starts a double11
  process puts its pid in the child's environment (`child_env`); the child
  asks the kernel for a signal when its parent dies (Linux PR_SET_PDEATHSIG)
  and checks that its parent is still that pid, in case it died before the
  request (`follow_parent`).  SIGKILL of the parent included.
- SIGTERM and SIGHUP (a supervisor, `timeout`, a closed terminal) stop a
  command the way Ctrl-C does (`interrupt_on_stop_signals`, `on_stop_signals`).
- A data folder is held by one engine at a time (`lock_data_dir`); the lock
  file says what its holder is doing, so a second server is refused at once
  while the first serves, and a restart still waits for an engine that closes.
- `CommandFailed`: a mistake a command answers with one line and an exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from double11 import limits

PARENT_PID_ENV = "DOUBLE11_PARENT_PID"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARENT_POLL_S = 0.5  # where the kernel cannot signal a parent's death, how often the child looks


class CommandFailed(Exception):
    """A mistake in a command's arguments or surroundings (a port in use, a
    server not running): said in one line, with this exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ ports
def listen_exclusively(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket listening on host:port that no other socket can share.

    SO_REUSEADDR only (a restart may bind while the last run's connections
    sit in TIME_WAIT), never SO_REUSEPORT: a second bind of the port fails,
    whatever host string it names (0.0.0.0 overlaps 127.0.0.1)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise CommandFailed(f"cannot listen on host {host!r}: {e}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise _bind_failed(host, port, e) from None
    return sock


def check_ports_free(host: str, ports: Sequence[int]) -> None:
    """Refuses (CommandFailed) when any of the ports is in use on host."""
    for port in ports:
        listen_exclusively(host, port, 1).close()


def _bind_failed(host: str, port: int, e: OSError) -> CommandFailed:
    if e.errno == errno.EADDRINUSE:
        return CommandFailed(f"port {port} is in use on {host} (another server, perhaps double11 serve): "
                             f"stop it or pick another --port")
    if e.errno == errno.EACCES:
        return CommandFailed(f"port {port} needs privileges on {host}: pick a port above 1023")
    if e.errno == errno.EADDRNOTAVAIL:
        return CommandFailed(f"{host} is not an address of this machine")
    return CommandFailed(f"cannot listen on {host}:{port}: {e.strerror or e}")


# ----------------------------------------------------------- parent death
def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a double11 process this one starts: it stops when we die."""
    return {**os.environ, **(extra or {}), PARENT_PID_ENV: str(os.getpid())}


def follow_parent(signum: int) -> None:
    """If the parent that started us asked for it (child_env), `signum` comes
    to us when it dies.  The variable is consumed: our own children get ours."""
    text = os.environ.pop(PARENT_PID_ENV, None)
    if not text or not text.isdigit():
        return
    parent = int(text)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            _watch_parent(parent, signum)
    else:
        _watch_parent(parent, signum)
    if os.getppid() != parent:  # it died before the kernel was asked: nobody will send the signal
        os.kill(os.getpid(), signum)


def _watch_parent(parent: int, signum: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# ---------------------------------------------------------------- signals
def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_signals() -> list[signal.Signals]:
    """The stop signals this process takes: not one it was started ignoring
    (`nohup` ignores SIGHUP, and so do we then)."""
    return [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]


def interrupt_on_stop_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as SIGINT
    does: whatever a command does on Ctrl-C, it does on them too."""
    for sig in stop_signals():
        if sig != signal.SIGINT:
            signal.signal(sig, _interrupt)


@contextlib.contextmanager
def on_stop_signals(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> Iterator[bool]:
    """Within the block, SIGINT, SIGTERM and SIGHUP call `callback` on the event
    loop; afterwards the handlers before are back (asyncio would leave the
    default, which kills).  Yields False off the main thread (no signals there)."""
    before = {}
    if threading.current_thread() is threading.main_thread():
        for sig in stop_signals():
            before[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, callback)
    try:
        yield bool(before)
    finally:
        for sig, handler in before.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


# ------------------------------------------------------------ data folder
LOCK_FILE = "LOCK"
# what the engine holding the lock is doing; written over in place, one fixed width
OPENING, SERVING, CLOSING = "opening", "serving", "closing"


def lock_data_dir(directory: Path) -> int:
    """An exclusive lock on the data folder for this process's life: a second
    engine on it (a restart while the last one still closes) waits its turn,
    at most limits.data_dir_lock_wait_s."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + limits.data_dir_lock_wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            mark_data_dir(fd, OPENING)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise SystemExit(f"double11 serve: {directory} is in use by another engine") from None
            time.sleep(0.05)


def mark_data_dir(fd: int, state: str) -> None:
    """Says in the lock file what its holder is doing (see data_dir_user)."""
    os.pwrite(fd, f"{os.getpid():>10} {state:<8}\n".encode(), 0)


def locked_by(path: Path) -> str | None:
    """What the holder of the lock on `path` wrote at its start (None: no
    process holds it, or there is no such file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 64, 0).decode(errors="replace")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def data_dir_user(directory: Path) -> str | None:
    """Who keeps a new server off this data folder: an engine process that
    opens or serves it (one that closes lets go soon: a restart waits for it)."""
    text = locked_by(directory / LOCK_FILE)
    if text is None:
        return None
    words = text.split()
    if len(words) == 2 and words[1] == CLOSING:
        return None
    return f"engine process {words[0]}" if words and words[0].isdigit() else "another engine"
