"""End to end: a plain `double11 serve` (no --clock-start, no festival start in a
config) runs its own festival day, starting a few real seconds after its first start;
`double11 simulate` replays that day against it, refuses with one line once the day
is too far on to replay, and a restart of the server continues the same day."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from festival_live import free_port, start_plain_server  # tests/festival/festival_live.py

from double11.config import OWN_DAY_LEAD_REAL_S

SPEEDUP = 600  # a festival minute in 0.1 s: the day is well on a few seconds after midnight
DAY_MS, UTC8_MS = 86_400_000, 8 * 3_600_000


def stop(proc: subprocess.Popen) -> int:
    from double11.festival_cmd import stop_server

    return stop_server(proc)


def simulate(url: str, catalog: Path, summary: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "double11", "simulate", "--url", url, "--catalog", str(catalog),
         "--scale", "1e-5", "--seed", "4", "--hours", "0.05", "--summary", str(summary)],
        capture_output=True, text=True, timeout=180)


def test_a_plain_server_runs_its_own_day_which_simulate_replays_or_refuses(tmp_path, serve_help_works):
    from double11.catalog.files import save_catalog
    from double11.catalog.generate import generate_catalog

    catalog = tmp_path / "catalog"
    save_catalog(generate_catalog(merchants=200, skus=2000, seed=3, returning_buyers=500), catalog)
    port, data, log = free_port(), tmp_path / "data", tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    first_start_ms = time.time_ns() // 1_000_000
    server = start_plain_server(port, data, catalog, log, SPEEDUP)
    try:
        stats = httpx.get(url + "/v1/stats", timeout=10).json()
        start = stats["festival_start"]
        # its own day: the midnight (UTC+8) of the day it first started, not 2017-11-11
        assert (start + UTC8_MS) % DAY_MS == 0 and 0 <= first_start_ms - start < DAY_MS + 60_000
        assert stats["speedup"] == SPEEDUP and stats["scale"] == 1.0
        assert stats["at"] - start < 60_000  # at most a festival minute in: the lead has not run out

        # a fresh server: the replay of its first three festival minutes goes through
        done = simulate(url, catalog, tmp_path / "summary.json")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "replaying the first 3 min of 2017" in done.stderr and f"{SPEEDUP}x" in done.stderr
        summary = json.loads((tmp_path / "summary.json").read_text())
        after = httpx.get(url + "/v1/stats", timeout=10).json()
        assert summary["skipped"] == 0 and summary["payments"] > 50
        assert after["gmv_fen"] == summary["gmv_fen"] > 0 and after["payments"] == summary["payments"]

        # the same server a while later: its day is too far on, so nothing is sent and one line says why
        while httpx.get(url + "/v1/stats", timeout=10).json()["at"] - start < 10 * 60_000:
            time.sleep(0.2)
        refused = simulate(url, catalog, tmp_path / "refused.json")
        assert refused.returncode == 2, refused.stderr[-3000:]
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert lines[0].startswith("double11 simulate: the server's festival day is at ")
        assert "double11 festival" in lines[0] and "double11 serve --data NEWDIR --speedup 60" in lines[0]
        assert not (tmp_path / "refused.json").exists()
        assert httpx.get(url + "/v1/stats", timeout=10).json()["gmv_fen"] == after["gmv_fen"]
    finally:
        assert stop(server) == 0, log.read_text()[-2000:]
    at_stop = after["at"]

    # a restart continues the same day, on the clock it had
    again = start_plain_server(port, data, catalog, log, SPEEDUP)
    try:
        stats = httpx.get(url + "/v1/stats", timeout=10).json()
        assert stats["festival_start"] == start
        assert stats["at"] > at_stop + OWN_DAY_LEAD_REAL_S * 1000  # not a new lead before a new midnight
        assert stats["gmv_fen"] == after["gmv_fen"]
    finally:
        assert stop(again) == 0, log.read_text()[-2000:]
