"""The HTTP server: granian's embedded server (RSGI, uvloop, one worker, no
access log) over the double11 app, with graceful shutdown on SIGINT/SIGTERM
that ends event streams, lets in-flight requests finish, then closes the
festival.  Everything acknowledged was durable before it was acknowledged.
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
            if close_festival:
                self.festival.close(snapshot=True)

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


def _run(coro) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - granian[uvloop] brings it
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def run_server(festival: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
               empty: bool = False, static_dir: str | Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then close the festival."""
    _run(HttpServer(festival, host, port, empty=empty, static_dir=static_dir).serve())


def serve_main(catalog_dir: str | None, data_dir: str | None, port: int, speedup: float,
               clock_start_ms: int | None, host: str = DEFAULT_HOST, empty: bool = False,
               expected_checkouts: int | None = None, scale: str | None = None,
               config_path: str | None = None) -> None:
    """Open (or recover) the festival and serve it over HTTP."""
    from double11.service import Festival

    if catalog_dir:
        from double11.catalog.files import load_catalog

        catalog = load_catalog(catalog_dir)
    else:
        from double11.catalog.generate import generate_catalog

        catalog = generate_catalog(merchants=2000, skus=20000, seed=11)
    data_dir = data_dir if data_dir is not None else "./data"
    from fractions import Fraction

    from double11.config import load_config

    scaled = {}
    if scale:
        fraction = Fraction(scale).limit_denominator(10**12)
        scaled = {"scale_num": fraction.numerator, "scale_den": fraction.denominator}
    # a server writes its tables' pages at start: first touches mid-festival cost more than the work.
    # The configuration is the festival's from its first start on (it lives in the snapshot).
    config = load_config(config_path, prefault_memory=True, expected_checkouts=expected_checkouts, **scaled)
    festival = Festival.open(catalog, data_dir=data_dir, config=config, speedup=speedup, clock_start_ms=clock_start_ms)
    print(f"double11 listening on http://{host}:{port}/ (data: {data_dir})", file=sys.stderr, flush=True)
    run_server(festival, host=host, port=port, empty=empty)
