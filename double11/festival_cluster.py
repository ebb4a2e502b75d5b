"""`double11 festival --cluster`: the festival's day on a local cluster.

The cluster (cluster/local_cluster.py: 3 NATS nodes, each unit's primary and
standby, the quota rebalancer and the HTTP front on the festival's port) runs in this process, so
its processes end with the command however it ends.  Its units' clocks run
at the festival's speedup and read the same instant at the same real moment:
midnight comes `start_allowance_s` plus festival_cmd's preroll after the
command starts, since a cluster takes far longer than one server to start
(and the day must not begin before it serves).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx

from double11.cluster.cli import front_spec, rebalancer_spec
from double11.cluster.local_cluster import LocalCluster
from double11.lifecycle import CommandFailed

NATS_NODES = 3
# the front answers /v1/stats at once; the units' figures reach it within a publication or two
FIGURES_WAIT_S = 30.0


class FestivalCluster:
    """The local cluster a festival replays its day against."""

    def __init__(self, folder: Path, units: int, port: int, speedup: float) -> None:
        self.folder, self.units, self.port, self.speedup = folder, units, port, speedup
        self.url = f"http://127.0.0.1:{port}"
        self.cluster = LocalCluster(extra=[front_spec(port, open_access=False), rebalancer_spec()], speedup=speedup)

    def start(self, catalog_dir: str, clock_start_ms: int, midnight_real_ms: int, expected_checkouts: int,
              scale: float) -> None:
        """Starts the cluster, its units' clocks reading clock_start_ms at the
        real instant midnight_real_ms less the preroll, and returns once the
        front answers with the units' figures."""
        from double11.config import FestivalConfig

        preroll_ms = FestivalConfig().festival_start_ms - clock_start_ms  # in festival time
        self.cluster.new_unit_args = ["--expected-checkouts", str(expected_checkouts), "--scale", repr(scale)]
        self.cluster.start(self.folder, nodes=NATS_NODES, units=self.units, catalog=catalog_dir,
                           clock_start_ms=clock_start_ms,
                           clock_real_start_ms=midnight_real_ms - int(preroll_ms / self.speedup))
        self._wait_figures()

    def _wait_figures(self) -> None:
        """Until /v1/stats holds the units' clock (before any unit's figures
        arrive it says the festival's start, which would pace the replay wrong)."""
        deadline = time.monotonic() + FIGURES_WAIT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                stats = httpx.get(self.url + "/v1/stats", timeout=2.0).json()
                if stats.get("speedup") == self.speedup and stats.get("at") != stats.get("festival_start"):
                    return
            time.sleep(0.2)
        raise CommandFailed(f"the cluster's front at {self.url} had no figures from its units within "
                            f"{FIGURES_WAIT_S:g} s (the units' logs: {self.folder / 'units'})", 1)

    def settled_stats(self, stats: dict, summary: dict) -> dict:
        """/v1/stats once the units' figures hold every checkout and payment the
        replay saw acknowledged (they are published every limits.figures_publish_s);
        `stats` as they were if that does not come within FIGURES_WAIT_S."""
        deadline = time.monotonic() + FIGURES_WAIT_S
        while not all(stats.get(k, 0) >= summary[k] for k in ("checkouts", "payments")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            with contextlib.suppress(httpx.HTTPError, ValueError):
                stats = httpx.get(self.url + "/v1/stats", timeout=2.0).json()
        return stats

    def stop(self) -> str:
        """Stops every process of the cluster; one line saying so."""
        stopped = self.cluster.stop()
        killed = sum("killed after" in phrase for phrase in stopped)
        return f"cluster stopped ({len(stopped)} processes" + (f", {killed} killed" if killed else "") + ")"
