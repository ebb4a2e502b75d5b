"""Ordinary mistakes on the command line: each gets one clear line on stderr
and a non-zero exit status, never a Python traceback.

Usage mistakes are argparse's (its usage, then one `error:` line naming the
option and its bound, status 2); a file that cannot be used, a port or data
folder in use, or a server that is not there get one `double11 CMD: ...` line.
Each runs the real command line in a subprocess (the usage mistakes share one).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from model import small_catalog

from double11 import cli
from double11.catalog.files import save_catalog
from double11.lifecycle import SERVING, CommandFailed, lock_data_dir, mark_data_dir

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # real subprocesses (tests/conftest.py: the unit/slow split)


def double11(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "double11", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": str(ROOT)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def said(r: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip().splitlines()


@contextlib.contextmanager
def a_port_in_use() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def port_in_use(command: str, port: int) -> str:
    return (f"double11 {command}: port {port} is in use on 127.0.0.1 (another server, perhaps double11 serve): "
            "stop it or pick another --port")


USAGE = [  # (arguments, what argparse's one line says)
    (["catalog", "generate", "OUT", "--merchants", "-5"], "argument --merchants: must be 1 to 10,000,000, got -5"),
    (["catalog", "generate", "OUT", "--skus", "0"], "argument --skus: must be 1 to 50,000,000, got 0"),
    (["catalog", "generate", "OUT", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["catalog", "generate", "OUT", "--returning-buyers", "x"],
     "argument --returning-buyers: 'x' is not a whole number"),
    (["serve", "--port", "0"], "argument --port: must be 1 to 65,535, got 0"),
    (["serve", "--port", "70000"], "argument --port: must be 1 to 65,535, got 70000"),
    (["serve", "--speedup", "-1"], "argument --speedup: must be at least 0, got -1"),
    (["serve", "--expected-checkouts", "0"], "argument --expected-checkouts: must be at least 1, got 0"),
    (["serve", "--scale", "0"], "argument --scale: must be more than 0, got 0"),
    (["serve", "--scale", "a lot"], "argument --scale: 'a lot' is not a number or a fraction like 1/1000"),
    (["serve", "--clock-start", "yesterday"], "argument --clock-start: 'yesterday' is neither epoch milliseconds"),
    (["serve", "--catalog", "/nonexistent/catalog"], "argument --catalog: /nonexistent/catalog does not exist"),
    (["bench", "--seconds", "-3"], "argument --seconds: must be more than 0, got -3"),
    (["bench", "--batch", "0"], "argument --batch: must be 1 to 65,536, got 0"),
    (["bench", "--single-connections", "0"], "argument --single-connections: must be at least 1, got 0"),
    (["festival", "--speedup", "0"], "argument --speedup: must be more than 0, got 0"),
    (["festival", "--hours", "25"], "argument --hours: must be more than 0 and at most 24, got 25"),
    (["festival", "--port", "-1"], "argument --port: must be 1 to 65,535, got -1"),
    (["festival", "--units", "3"], "--units is for a day on a cluster: add --cluster"),
    (["festival", "--cluster-start-s", "30"], "--cluster-start-s is for a day on a cluster: add --cluster"),
    (["simulate", "--scale", "-1"], "argument --scale: must be more than 0 and at most 1, got -1"),
    (["simulate", "--hours", "0"], "argument --hours: must be more than 0 and at most 24, got 0"),
    (["simulate", "--speedup", "0"], "argument --speedup: must be more than 0, got 0"),
    (["simulate", "--seed", "-2"], "argument --seed: must be at least 0, got -2"),
]


# The usage mistakes are said by one process between them (starting one is most of each
# case's time): each through cli.main as `python -m double11` calls it, its status and stderr kept
USAGE_RUNNER = r"""
import contextlib, io, json, sys
from double11.cli import main
said = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
    said.append([status, err.getvalue()])
print(json.dumps(said))
"""


@pytest.fixture(scope="module")
def usage_said() -> dict[str, tuple[int, str]]:
    """Each usage mistake's (exit status, stderr), by its arguments."""
    r = subprocess.run([sys.executable, "-c", USAGE_RUNNER, json.dumps([args for args, _ in USAGE])], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr  # a traceback, had one case raised
    return {" ".join(args): (status, err) for (args, _), (status, err) in zip(USAGE, json.loads(r.stdout), strict=True)}


@pytest.mark.parametrize(("args", "error"), USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_a_bad_option_is_argparses_one_line(usage_said, args, error):
    status, stderr = usage_said[" ".join(args)]
    assert status == 2
    assert "Traceback" not in stderr, stderr
    command = "double11 " + " ".join(args[:2] if args[0] == "catalog" else args[:1])
    assert stderr.strip().splitlines()[-1].startswith(f"{command}: error: {error}")


def test_catalog_generate_into_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    r = double11("catalog", "generate", str(tmp_path / "file"), "--merchants", "5", "--skus", "10")
    assert r.returncode == 1
    assert said(r) == [f"double11 catalog generate: {tmp_path / 'file'}: File exists"]


def test_serve_with_a_data_folder_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("")
    r = double11("serve", "--data", str(tmp_path / "data"), "--port", str(free_port()))
    assert r.returncode == 2
    assert said(r) == [f"double11 serve: the data folder {tmp_path / 'data'} is a file"]


def test_serve_with_a_config_file_missing_or_bad(tmp_path):
    missing = tmp_path / "missing.toml"
    r = double11("serve", "--config", str(missing), "--data", str(tmp_path / "data"), "--port", str(free_port()))
    assert r.returncode == 1
    assert said(r) == [f"double11 serve: {missing}: No such file or directory"]
    bad = tmp_path / "bad.toml"
    bad.write_text("payment_timeout_ms = = 3\n")
    r = double11("serve", "--config", str(bad), "--data", str(tmp_path / "data"), "--port", str(free_port()))
    assert r.returncode == 2
    assert len(said(r)) == 1 and said(r)[0].startswith(f"double11 serve: {bad}: not valid TOML or JSON")


def test_serve_on_a_port_in_use(tmp_path):
    with a_port_in_use() as port:
        r = double11("serve", "--port", str(port), "--data", str(tmp_path / "data"))
    assert r.returncode == 2
    assert said(r) == [port_in_use("serve", port)]


def test_serve_on_a_data_folder_a_running_server_holds(tmp_path):
    data = tmp_path / "data"
    held = lock_data_dir(data)  # held as a running server's engine holds it
    try:
        mark_data_dir(held, SERVING)
        r = double11("serve", "--port", str(free_port()), "--data", str(data))
    finally:
        os.close(held)
    assert r.returncode == 2
    assert said(r) == [f"double11 serve: the data folder {data} is in use by a running server (engine process "
                       f"{os.getpid()}): stop it or pass another --data"]


def test_serve_with_a_bad_catalog_file_names_the_file_row_and_column(tmp_path):
    catalog = tmp_path / "catalog"
    save_catalog(small_catalog(), catalog)
    skus = (catalog / "skus.csv").read_text().splitlines()
    header = skus[0].split(",")
    row = skus[1].split(",")
    row[header.index('"price_fen"') if '"price_fen"' in header else header.index("price_fen")] = "-5"
    (catalog / "skus.csv").write_text("\n".join([skus[0], ",".join(row), *skus[2:]]) + "\n")
    r = double11("serve", "--catalog", str(catalog), "--data", str(tmp_path / "data"), "--port", str(free_port()))
    assert r.returncode == 1
    lines = said(r)
    assert lines[-1].startswith("double11 serve: cannot open the festival: skus.csv: column 'price_fen', row 1: ")
    assert "malformed" not in r.stderr  # a file is not a request
    assert len([line for line in lines if "cannot open" in line or "stopped" in line]) == 1


def test_festival_on_a_port_in_use_says_so_before_making_anything(tmp_path):
    with a_port_in_use() as port:
        r = double11("festival", "--port", str(port), "--data", str(tmp_path / "festival"))
    assert r.returncode == 2
    assert said(r) == [port_in_use("festival", port)]
    assert not (tmp_path / "festival").exists()


def test_festival_with_a_data_folder_that_is_a_file(tmp_path):
    (tmp_path / "festival").write_text("")
    r = double11("festival", "--port", str(free_port()), "--data", str(tmp_path / "festival"))
    assert r.returncode == 2
    assert said(r) == [f"double11 festival: --data {tmp_path / 'festival'} is a file, not a folder"]


def test_festival_on_a_data_folder_a_running_festival_holds(tmp_path):
    held = lock_data_dir(tmp_path / "festival" / "log")  # as its server's engine holds it
    try:
        mark_data_dir(held, SERVING)
        r = double11("festival", "--port", str(free_port()), "--data", str(tmp_path / "festival"))
    finally:
        os.close(held)
    assert r.returncode == 2
    assert said(r) == [f"double11 festival: --data {tmp_path / 'festival'} is in use by a running festival "
                       f"(engine process {os.getpid()}): stop it or pass another --data"]
    assert not (tmp_path / "festival" / "catalog").exists()


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_bench_on_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        # its servers take the port given and the two after it: hold the third,
        # where the two before it are free (another process may hold any port)
        for _ in range(50):
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            if _is_free(port - 2) and _is_free(port - 1):
                break
            taken.close()
            taken = socket.socket()
        taken.listen()
        r = double11("bench", "--port", str(port - 2), "--seconds", "1", "--batch-orders-per-s", "1000",
                     "--single-connections", "1")
        taken.close()
    assert r.returncode == 2
    assert said(r)[-1] == port_in_use("bench", port)


def test_simulate_with_no_server_there():
    port = free_port()
    r = double11("simulate", "--url", f"http://127.0.0.1:{port}", "--scale", "1e-6")
    assert r.returncode == 1
    lines = said(r)
    assert lines[-1].startswith(f"double11 simulate: cannot reach http://127.0.0.1:{port} (")
    assert lines[-1].endswith("is the server running there?")
    assert len(lines) == 1


def test_simulate_with_a_catalog_folder_that_is_not_one(tmp_path):
    r = double11("simulate", "--catalog", str(tmp_path), "--scale", "1e-6")
    assert r.returncode == 2
    assert said(r) == [f"double11 simulate: merchants.csv (or merchants.parquet) not found in {tmp_path}"]


def test_report_with_no_server_there(tmp_path):
    port = free_port()
    r = double11("report", "--url", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "report.html"))
    assert r.returncode == 1
    lines = said(r)
    assert len(lines) == 1 and lines[0].startswith(f"double11 report: cannot read http://127.0.0.1:{port}")


@pytest.mark.parametrize("content, why", [("not json", "is not the simulator's JSON summary (Expecting value"),
                                          ("[1, 2]", "is not the simulator's JSON summary (not an object)")])
def test_report_with_a_summary_that_is_not_one(tmp_path, content, why):
    bad = tmp_path / "summary.json"
    bad.write_text(content)
    r = double11("report", "--summary", str(bad), "--url", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 2
    lines = said(r)  # said before the server is asked: no "cannot reach" line after it
    assert len(lines) == 1 and lines[0].startswith(f"double11 report: --summary {bad} {why}")


# ------------------------------------------------------------- the edge itself, in this process
@pytest.fixture
def edge(monkeypatch):
    """cli.main with this process's signal handlers and environment left alone."""
    monkeypatch.setattr(cli, "follow_parent", lambda signum: None)
    monkeypatch.setattr(cli, "interrupt_on_stop_signals", lambda: None)
    return monkeypatch


def test_a_bug_still_shows_its_traceback(edge):
    def buggy(argv):
        return 1 // 0
    edge.setattr(cli, "_run", buggy)
    with pytest.raises(ZeroDivisionError):
        cli.main(["serve"])


@pytest.mark.parametrize(("raised", "status", "line"), [
    (CommandFailed("the port is taken"), 2, "double11 serve: the port is taken"),
    (CommandFailed("nobody there", 1), 1, "double11 serve: nobody there"),
    (PermissionError(13, "Permission denied", "/data/LOCK"), 1, "double11 serve: /data/LOCK: Permission denied"),
    (KeyboardInterrupt(), 130, "double11 serve: stopped"),
])
def test_an_expected_failure_is_one_line_and_a_status(edge, capsys, raised, status, line):
    def failing(argv):
        raise raised
    edge.setattr(cli, "_run", failing)
    assert cli.main(["serve", "--port", "1"]) == status
    assert capsys.readouterr().err.splitlines() == [line]
