"""The HTTP server: granian's embedded server (RSGI, uvloop, one worker, no
access log) over the double11 app, with graceful shutdown on SIGINT/SIGTERM
that ends event streams, lets in-flight requests finish, then closes the
festival.  Everything acknowledged was durable before it was acknowledged.

`double11 serve` (serve_main) runs this server as the front process and the
festival in an engine process beside it (double11.link); the server also
runs over a festival in its own process (tests, embedding).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.log import LogLevels
from granian.server.embed import Server

from double11.gc_tuning import freeze_what_exists
from double11.http.app import build_app

log = logging.getLogger("double11.http")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1111
LISTEN_BACKLOG = 4096
WORKERS_KILL_TIMEOUT_S = 10  # in-flight requests get this long to finish on shutdown


class HttpServer:
    """One embedded granian server over one festival.  `await serve()` runs it
    in the current event loop; `stop()` may be called from any thread."""

    def __init__(self, festival: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 empty: bool = False, static_dir: str | Path | None = None) -> None:
        """`festival`: a link.local.LocalFestival or link.remote.RemoteFestival
        (None for the empty handler)."""
        self.festival = festival
        self.host = host
        self.port = port
        self.app = build_app(festival, empty=empty, static_dir=static_dir)
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False

    async def serve(self, install_signals: bool = True, close_festival: bool = True) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._server = Server(
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
        )
        self._server.workers_kill_timeout = WORKERS_KILL_TIMEOUT_S
        installed = []
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop)
                installed.append(sig)
        if self._stop_requested:
            loop.call_soon(self._stop)
        try:
            await self._server.serve()
        finally:
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


def _run(coro) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - granian[uvloop] brings it
        return asyncio.run(coro)
    return uvloop.run(coro)


def serve_main(catalog_dir: str | None, data_dir: str | None, port: int, speedup: float,
               clock_start_ms: int | None, host: str = DEFAULT_HOST, empty: bool = False,
               expected_checkouts: int | None = None, scale: str | None = None,
               config_path: str | None = None) -> int:
    """Starts the engine process, which opens (or recovers) the festival, and
    serves it over HTTP until SIGINT/SIGTERM, or until the engine stops (then
    with exit status 1).  With empty=True: the empty handler, no engine."""
    options = {"catalog_dir": catalog_dir, "data_dir": data_dir if data_dir is not None else "./data",
               "speedup": speedup, "clock_start_ms": clock_start_ms, "expected_checkouts": expected_checkouts,
               "scale": scale, "config_path": config_path}
    return _run(_serve(options, host, port, empty))


async def _serve(options: dict[str, Any], host: str, port: int, empty: bool) -> int:
    from double11.link.remote import EngineLost, RemoteFestival

    if not empty:
        print("double11: opening the festival (the first start on a machine also compiles the engine: "
              "about half a minute)", file=sys.stderr, flush=True)
    try:
        festival = None if empty else await RemoteFestival.start(options)
    except EngineLost:  # it said why on stderr
        print("double11: the engine process stopped before it was ready", file=sys.stderr, flush=True)
        return 1
    server = HttpServer(festival, host=host, port=port, empty=empty)
    freeze_what_exists()
    lost = []
    if festival is not None:
        def engine_lost() -> None:
            log.error("the engine process stopped: stopping the server (a restart recovers from the log)")
            lost.append(True)
            server.stop()
        festival.on_lost = engine_lost
    print(f"double11 listening on http://{host}:{port}/ (data: {options['data_dir']})", file=sys.stderr, flush=True)
    await server.serve()
    return 1 if lost else 0
