"""docs/api.md's quickstart works as written: its tokens made with
`./run tokens issue`, then its curl commands, run in order by bash against a
real `double11 serve` (its demo catalog, a fresh data folder, another port
as the doc says to), are each answered 2xx."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
DOC_URL = "http://127.0.0.1:1111"
START_S = 180.0  # the demo catalog, and the first start on a machine compiles the engine


def quickstart_blocks() -> list[list[str]]:
    """The command lines of each ```sh block of the doc's Quickstart section."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [[line for line in block.splitlines() if line.strip() and not line.startswith("#")] for block in blocks]


TOKEN_LINE = re.compile(r"^([A-Z]+)=\$\((\./run tokens issue [^)]*)\)$")


def test_the_quickstart_names_serve_then_tokens_then_curls():
    serve, lines = quickstart_blocks()
    assert serve == ["./run serve"]
    tokens = [line for line in lines if TOKEN_LINE.match(line)]
    curls = lines[len(tokens):]
    assert tokens == lines[:len(tokens)] and len(tokens) == 2
    assert curls and all(line.startswith("curl ") and DOC_URL in line for line in curls)
    paths = " ".join(curls)
    for step in ("/v1/skus", "/v1/checkouts ", "/pay", "/confirm", "/refund", "/v1/ledger", "/v1/stats"):
        assert step in paths, step


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command the doc runs")
def test_the_quickstart_runs_against_a_real_server(tmp_path):
    _, lines = quickstart_blocks()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    # `./run serve` is `double11 serve` once the venv is there; the doc's other port and
    # fresh data folder: `--port`, `--data`
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "double11", "serve", "--port", str(port),
                                 "--data", str(tmp_path / "data")],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        answers = []
        env = dict(os.environ)
        for line in lines:
            token = TOKEN_LINE.match(line)
            if token:  # the doc's ./data is this server's folder here
                made = subprocess.run(["bash", "-c", f"{token.group(2)} --data {shlex.quote(str(tmp_path / 'data'))}"],
                                      cwd=ROOT, capture_output=True, text=True, timeout=120)
                assert made.returncode == 0, made.stderr
                env[token.group(1)] = made.stdout.strip().splitlines()[-1]
                continue
            done = subprocess.run(["bash", "-c", line.replace(DOC_URL, url) + " -w '\n%{http_code}'"], env=env,
                                  capture_output=True, text=True, timeout=30)
            body, _, status = done.stdout.rpartition("\n")
            assert done.returncode == 0 and status.startswith("2"), (line, status, body, done.stderr)
            answers.append(body)
        # the ids and the total the doc pays are the ones the server gave
        assert '"checkout":1' in answers[1] and '"amount_fen":275980' in answers[1], answers[1]
        assert '"status":"settled"' in answers[3] and '"status":"refunded"' in answers[4]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
