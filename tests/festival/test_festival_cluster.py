"""End to end: `double11 festival --cluster` replays the first hour of the day on a
local cluster (NATS, two units, the rebalancer, the HTTP front), promotions
included: the report is written from the front's figures, the day had GMV, and
no process of the cluster outlives the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from festival_live import free_port  # tests/festival/festival_live.py

FESTIVAL = "import sys; from double11.festival_cmd import festival_main; sys.exit(festival_main(sys.argv[1:]))"
# the cluster's start on a loaded 2-core machine, its kernels already in the cache
# (kernels_compiled): the festival's midnight comes this long after the command starts
# however soon the cluster serves, so anything beyond the start is waited out
CLUSTER_START_S = 30


def processes_naming(folder: Path) -> list[str]:
    """The command lines of the processes whose arguments name `folder` (the
    cluster's NATS nodes, unit nodes and front all do), zombies left out."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if str(folder) in cmdline and state not in ("Z", "X"):
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.mark.slow
def test_festival_on_a_cluster_writes_its_report_and_leaves_no_process(tmp_path, serve_help_works,
                                                                      kernels_compiled):
    port = free_port()
    data = tmp_path / "festival"
    proc = subprocess.run(
        [sys.executable, "-c", FESTIVAL, "--cluster", "--units", "2", "--port", str(port), "--data", str(data),
         "--speedup", "600", "--scale", "1e-5", "--seed", "2", "--hours", "1",
         "--cluster-start-s", str(CLUSTER_START_S)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=CLUSTER_START_S + 240)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    assert f"big screen: http://127.0.0.1:{port}/?scale=1e-05&year=2017" in out
    assert "cluster stopped (9 processes)" in out  # 3 NATS nodes, 2 primaries, 2 standbys, the rebalancer, the front
    report = (data / "report.html").read_text()
    assert "11.11" in report
    acked = json.loads((data / "simulator.json").read_text())
    assert acked["gmv_fen"] > 0 and acked["payments"] > 0
    answers = acked["answers"]  # the promotions made on every unit, coupons granted by the buyers' units
    assert all(answers.get(f"{op} 201 ok", 0) > 0 for op in ("coupon_template", "deal", "threshold_discount", "grant"))
    assert answers.get("grant 409 budget_exhausted", 0) < 0.05 * answers["grant 201 ok"], answers  # the rebalancer
    # the report's figures are the units' (through the front), every acknowledged payment in them
    assert f"11.11 Global Shopping Festival: RMB {acked['gmv_fen'] / 100:,.0f} of GMV by" in out
    assert processes_naming(data) == []
