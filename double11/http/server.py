"""The HTTP server: granian's embedded server (RSGI, uvloop, one worker, no
access log) over the double11 app, with graceful shutdown on SIGINT, SIGTERM
or SIGHUP that ends event streams, lets in-flight requests finish, then closes
the festival.  Everything acknowledged was durable before it was acknowledged.
It serves on a socket of its own making that no other server can share
(lifecycle.listen_exclusively), bound before the engine starts.

`double11 serve` (serve_main) runs this server as the front process and the
festival in an engine process beside it (double11.link); the server also
runs over a festival in its own process (tests, embedding).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from granian._granian import SocketHolder
from granian.constants import HTTPModes, Interfaces
from granian.log import LogLevels
from granian.server.embed import Server

from double11 import limits
from double11.gc_tuning import freeze_what_exists
from double11.http.app import build_app
from double11.http.flow_control import BuyerRates
from double11.lifecycle import CommandFailed, data_dir_user, listen_exclusively, on_stop_signals, stop_signals

log = logging.getLogger("double11.http")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1111
LISTEN_BACKLOG = 4096
WORKERS_KILL_TIMEOUT_S = 10  # in-flight requests get this long to finish on shutdown


class _OnOurSocket(Server):
    """granian's embedded server on a listening socket we made.  On Linux
    granian binds its own with SO_REUSEPORT, which would let a second server
    bind the same port and take half of the connections."""

    def __init__(self, *args: Any, listener: socket.socket, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener = listener

    def _init_shared_socket(self) -> None:
        # granian closes the descriptor it served on when it stops: it gets a copy of ours
        fd = os.dup(self._listener.fileno())
        self._ssp = None
        self._shd = SocketHolder(fd, False, self.backlog)  # type: ignore[call-arg,assignment]  # untyped in granian
        self._sfd = fd  # type: ignore[assignment]


class HttpServer:
    """One embedded granian server over one festival.  `await serve()` runs it
    in the current event loop; `stop()` may be called from any thread."""

    def __init__(self, festival: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 empty: bool = False, static_dir: str | Path | None = None,
                 listener: socket.socket | None = None, verifier: Any = None, buyer_rates: Any = None) -> None:
        """`festival`: a link.local.LocalFestival or link.remote.RemoteFestival
        (None for the empty handler).  `listener`: the socket to serve on, from
        lifecycle.listen_exclusively (default: one made by `serve`; a port in
        use raises lifecycle.CommandFailed)."""
        self.festival = festival
        self.host = host
        self.port = port
        self.listener = listener
        self.app = build_app(festival, empty=empty, static_dir=static_dir, verifier=verifier, buyer_rates=buyer_rates)
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False

    async def serve(self, install_signals: bool = True, close_festival: bool = True) -> None:
        loop = self._loop = asyncio.get_running_loop()
        if self.listener is None:
            self.listener = listen_exclusively(self.host, self.port, LISTEN_BACKLOG)
        self._server = _OnOurSocket(
            self.app,
            address=self.host,
            port=self.port,
            interface=Interfaces.RSGI,
            http=HTTPModes.http1,
            websockets=False,
            backlog=LISTEN_BACKLOG,
            log_enabled=True,
            log_level=LogLevels.error,
            log_access=False,
            listener=self.listener,
        )
        self._server.workers_kill_timeout = WORKERS_KILL_TIMEOUT_S
        installed = []
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in stop_signals():
                loop.add_signal_handler(sig, self._stop)
                installed.append(sig)
        if self._stop_requested:
            loop.call_soon(self._stop)
        try:
            await self._server.serve()
        finally:
            self.listener.close()
            for sig in installed:
                loop.remove_signal_handler(sig)
            if close_festival and self.festival is not None:
                await self.festival.close()

    def _stop(self) -> None:
        self._stop_requested = True
        self.app.shutdown()
        if self._server is not None:
            self._server.stop()

    def stop(self) -> None:
        """Graceful stop, from any thread."""
        self._stop_requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._stop()
        else:
            loop.call_soon_threadsafe(self._stop)


def run_event_loop(coro) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - granian[uvloop] brings it
        return asyncio.run(coro)
    return uvloop.run(coro)


def serve_main(catalog_dir: str | None, data_dir: str | None, port: int, speedup: float,
               clock_start_ms: int | None, host: str = DEFAULT_HOST, empty: bool = False,
               expected_checkouts: int | None = None, scale: str | None = None,
               config_path: str | None = None, expected_discounted_checkouts: int | None = None,
               open_access: bool = False, token_key: str | None = None,
               buyer_commands_per_s: float = limits.buyer_commands_per_s_default,
               buyer_burst: int = limits.buyer_burst_commands_default) -> int:
    """Starts the engine process, which opens (or recovers) the festival, and
    serves it over HTTP until SIGINT/SIGTERM/SIGHUP, or until the engine stops
    (then with exit status 1).  With empty=True: the empty handler, no engine.
    A data folder another server holds, or a port in use, is refused
    (lifecycle.CommandFailed) before the engine starts.  Every route but the
    public ones needs a token signed by the festival's key (double11/access),
    made in the data folder on the first start; open_access: none does.
    A buyer token's commands are held to `buyer_commands_per_s` with a burst
    of `buyer_burst` (http/flow_control.py); without tokens there is no buyer
    to hold."""
    options: dict[str, Any] = {"catalog_dir": catalog_dir, "data_dir": data_dir if data_dir is not None else "./data",
               "speedup": speedup, "clock_start_ms": clock_start_ms, "expected_checkouts": expected_checkouts,
               "expected_discounted_checkouts": expected_discounted_checkouts, "scale": scale,
               "config_path": config_path}
    listener = listen_exclusively(host, port, LISTEN_BACKLOG)
    try:
        verifier = None
        if not empty:
            check_data_dir(Path(options["data_dir"]))
            if not open_access:
                verifier = token_verifier(Path(options["data_dir"]), token_key)
        buyer_rates = BuyerRates(buyer_commands_per_s, buyer_burst) if verifier is not None else None
        return run_event_loop(_serve(options, host, port, empty, listener, verifier, buyer_rates))
    finally:
        listener.close()


def token_verifier(data_dir: Path, token_key: str | None) -> Any:
    """The verifier of the tokens signed by the key in data_dir (or the file
    token_key), made there on a first start."""
    from double11.access.tokens import Verifier, key_path, keys_at

    path = key_path(data_dir, token_key)
    try:
        return Verifier(keys_at(path))
    except (OSError, ValueError) as e:
        raise CommandFailed(f"cannot use the token key {path}: {getattr(e, 'strerror', None) or e}") from None


def check_data_dir(directory: Path) -> None:
    """A folder this server can take: not a file, not held by a running server."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CommandFailed(f"the data folder {directory} is a file") from None
    except OSError as e:
        raise CommandFailed(f"cannot use {directory} as the data folder: {e.strerror or e}") from None
    user = data_dir_user(directory)
    if user is not None:
        raise CommandFailed(f"the data folder {directory} is in use by a running server ({user}): "
                            f"stop it or pass another --data")


async def _open_engine(options: dict[str, Any]) -> tuple[Any, int]:
    """(the RemoteFestival, 0) once its festival is open; (None, exit status)
    when the engine stopped first, or a stop signal came (then the engine is
    stopped too: it must not go on opening with nobody to serve)."""
    from double11.link.remote import EngineLost, RemoteFestival

    loop = asyncio.get_running_loop()
    start = loop.create_task(RemoteFestival.start(options))
    with on_stop_signals(loop, start.cancel):
        try:
            return await start, 0
        except asyncio.CancelledError:
            print("double11 serve: stopped before the festival opened", file=sys.stderr, flush=True)
            return None, 0
        except EngineLost as e:
            if e.returncode != 2:  # 2: it said why, in one line
                print(f"double11 serve: the engine process stopped before it was ready ({e.how()})",
                      file=sys.stderr, flush=True)
            return None, 1


def try_lines(opened: dict[str, Any], host: str, port: int, token_data_dir: str | None = None) -> list[str]:
    """What `serve` says once open: its catalog folder, and a few SKUs to try
    with curl (with tokens made by `double11 tokens issue` where the server
    takes tokens from `token_data_dir`'s key)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a wildcard is not an address to call
    url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    lines = []
    if opened.get("catalog_dir"):
        lines.append(f"catalog: {opened['catalog_dir']} ({opened['merchants']:,} merchants, {opened['skus']:,} skus; "
                     f"pass it to `double11 simulate --catalog`)")
    skus = opened.get("skus_to_try") or []
    if skus:
        lines.append("skus to try: " + ", ".join(f"{s['sku']} (merchant {s['merchant']}, price_fen {s['price_fen']})"
                                                 for s in skus))
        body = json.dumps({"buyer": 1, "country": "CN", "channel": "mobile",
                           "lines": [{"sku": skus[0]["sku"], "qty": 1}], "idempotency_key": "try-1"},
                          separators=(",", ":"))
        as_operator = as_buyer = ""
        if token_data_dir is not None:
            issue = f"double11 tokens issue --data {shlex.quote(str(token_data_dir))}"
            as_operator = f' -H "Authorization: Bearer $({issue} --role operator)"'
            as_buyer = f' -H "Authorization: Bearer $({issue} --role buyer --id 1)"'
        lines.append(f"  curl -s{as_operator} {url}/v1/skus/{skus[0]['sku']}")
        lines.append(f"  curl -s -X POST{as_buyer} {url}/v1/checkouts -H 'Content-Type: application/json' -d '{body}'")
    return lines


async def _serve(options: dict[str, Any], host: str, port: int, empty: bool, listener: socket.socket,
                 verifier: Any = None, buyer_rates: Any = None) -> int:
    festival = None
    if not empty:
        print("double11: opening the festival (the first start on a machine also compiles the engine: "
              "about half a minute)", file=sys.stderr, flush=True)
        festival, status = await _open_engine(options)
        if festival is None:
            return status
    server = HttpServer(festival, host=host, port=port, empty=empty, listener=listener, verifier=verifier,
                        buyer_rates=buyer_rates)
    freeze_what_exists()
    lost = []
    if festival is not None:
        def engine_lost() -> None:
            log.error("the engine process stopped: stopping the server (a restart recovers from the log)")
            lost.append(True)
            server.stop()
        festival.on_lost = engine_lost
    print(f"double11 listening on http://{host}:{port}/ (data: {options['data_dir']})", file=sys.stderr, flush=True)
    if festival is not None:
        for line in try_lines(festival.opened, host, port, options["data_dir"] if verifier is not None else None):
            print(line, file=sys.stderr, flush=True)
    await server.serve()
    # the engine's own status too: 1 when it closed without its last snapshot or in a storage fault
    engine_failed = festival is not None and festival.process is not None and festival.process.returncode != 0
    return 1 if lost or engine_failed else 0
