"""Fixtures for the festival tests: a real server in a subprocess and Debian's Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from festival_live import LiveServer  # tests/festival/festival_live.py

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt when missing (never a downloaded browser)."""
    if not os.path.exists(CHROMIUM):
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.skip("no /usr/bin/chromium, and apt-get as root is not available to install it")
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return CHROMIUM


# module scope: the sync Playwright API keeps an event loop running in this thread until it
# stops, and tests elsewhere call asyncio.run()
@pytest.fixture(scope="module")
def browser(chromium):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def serve_help_works() -> None:
    """The end-to-end tests need the real server; skip them plainly while it is not there."""
    r = subprocess.run([sys.executable, "-m", "double11", "serve", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"`double11 serve` is not available yet: {r.stderr[-300:]}")


@pytest.fixture(scope="session")
def kernels_compiled() -> None:
    """Every engine kernel in the Numba cache before a test starts engine processes whose
    start it waits a fixed time for: each loads them then instead of compiling them (on a
    fresh clone), so a start's allowance covers starting processes, not compiling."""
    from double11.engine.warm_up import compile_kernels
    from double11.link.engine import warm_up_link

    compile_kernels()
    warm_up_link()


@pytest.fixture
def live_server(tmp_path, serve_help_works):
    from double11.catalog.files import save_catalog
    from double11.catalog.generate import generate_catalog

    catalog = tmp_path / "catalog"
    save_catalog(generate_catalog(merchants=500, skus=5000, seed=3, returning_buyers=2000), catalog)
    # the preroll holds a simulator's start (imports, the plan, the promotions made and the
    # coupons won before the day granted) on a busy two-core machine, which 3 s did not always
    server = LiveServer(tmp_path, catalog, speedup=600.0, preroll_real_s=6.0)
    yield server
    assert server.stop() == 0, (tmp_path / "server.log").read_text()[-2000:]
