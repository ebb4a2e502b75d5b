"""End to end: `double11 festival` replays the day, and Ctrl-C stops it cleanly:
sending stops, in-flight answers come back, the server stops on SIGTERM, and every
payment the simulator saw acknowledged is still there when the server starts again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
from child_signals import default_stop_signals  # tests/child_signals.py
from festival_live import LiveServer, free_port  # tests/festival/festival_live.py

FESTIVAL = "import sys; from double11.festival_cmd import festival_main; sys.exit(festival_main(sys.argv[1:]))"


def test_ctrl_c_stops_cleanly_and_loses_nothing_acknowledged(tmp_path, serve_help_works):
    port = free_port()
    data = tmp_path / "festival"
    proc = subprocess.Popen(
        [sys.executable, "-c", FESTIVAL, "--port", str(port), "--data", str(data), "--speedup", "600",
         "--scale", "1e-5", "--seed", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_stop_signals)
    # wait for the midnight rush to be under way, then press Ctrl-C
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/stats", timeout=1).json()["payments"] > 200:
                break
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert f"big screen: http://127.0.0.1:{port}/?scale=1e-05&year=2017" in out
    assert "server stopped (0)" in out
    assert (data / "report.html").exists()
    acked = json.loads((data / "simulator.json").read_text())
    assert acked["payments"] > 200
    assert acked["checkouts"] < 0.5 * 18_800  # stopped well before the end of the day

    # the server, started again on the same data, has every acknowledged payment
    again = LiveServer(data, data / "catalog", speedup=1.0, preroll_real_s=0.0)
    try:
        stats = again.stats()
        assert stats["payments"] == acked["payments"]
        assert stats["checkouts"] == acked["checkouts"]
        assert stats["gmv_fen"] == acked["gmv_fen"]
    finally:
        assert again.stop() == 0
