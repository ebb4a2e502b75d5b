"""Shared test helpers: keep this small (other suites add fixtures in their own folders),
and the rule that splits the fast `unit` tests from the `slow` ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# make `model` (tests/model: the reference model and the small catalog) importable
# however pytest is started
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from model import small_catalog as _small_catalog  # noqa: E402

# `./run test -m unit` runs the tests that stay inside the pytest process: no server, no other
# process, no browser, no compiling every kernel from an empty cache. The rule lives here, not in
# each file, so a new test is a unit test unless it is one of these (or says `slow` itself).
_SLOW_FOLDERS = {"http"}
_SLOW_MODULES = {"test_crash.py", "test_crash_promotions.py", "test_warm_up.py", "test_festival_command.py",
                 "test_screen_browser.py"}
_SLOW_FIXTURES = {"server", "client", "shared_server", "shared_client", "live_server", "browser", "chromium",
                  "serve_help_works"}


def _is_slow(item: pytest.Item) -> bool:
    path = Path(str(item.fspath))
    if item.get_closest_marker("slow") or path.name in _SLOW_MODULES:
        return True
    if path.parent.name in _SLOW_FOLDERS and path.parent.parent.name == "tests":
        return True
    return bool(_SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.slow if _is_slow(item) else pytest.mark.unit)


@pytest.fixture
def small_catalog():
    """A six-SKU catalog built by hand with NumPy (see tests/model/__init__.py)."""
    return _small_catalog()


@pytest.fixture(scope="session", autouse=True)
def _no_server_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory):
    """Servers are started in sessions of their own (so a test can signal a
    front and its engine together), so a test that fails before it stops
    one would leave it running: at the end, any process still working in
    this run's temporary folders is killed."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    import contextlib
    import os
    import signal

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if base in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture
def small_tmpfs(tmp_path_factory: pytest.TempPathFactory):
    """A factory of small RAM disks, for storage faults that are real: `small_tmpfs(8)`
    mounts an 8 MB tmpfs and gives its folder, which a test fills (a ballast file) to
    make a write, an fsync or a rename meet ENOSPC.  Each is unmounted at teardown,
    passed or failed (these tests run as root, here and in CI)."""
    import subprocess

    mounted: list[Path] = []

    def mount(size_mb: int) -> Path:
        where = tmp_path_factory.mktemp("tmpfs")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}M", "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        # lazily: a file a failed test left open must not keep the mount (and its memory) around
        subprocess.run(["umount", "--lazy", str(where)], check=True)
