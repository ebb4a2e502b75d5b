"""HTTP request metrics and the Prometheus text exposition (format 0.0.4).

Recording is a couple of dict operations and a bisect per request; all the
formatting happens when /metrics is scraped.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from typing import Any

# request latency histogram bucket upper bounds, seconds
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")

# What each of the festival's own figures (`Festival.metrics`) means, for its
# # HELP line.  A figure missing here still gets a HELP line (FALLBACK_HELP),
# and a test checks that every figure the festival gives is described.
FESTIVAL_HELP: dict[str, str] = {
    "double11_batches_total": "Batches applied by the engine (a group commit or a batch request is one).",
    "double11_commands_total": "Commands applied by the engine, refused ones included.",
    "double11_checkouts_total": "Checkouts accepted (stock reserved).",
    "double11_orders_total": "Per-merchant orders created by accepted checkouts.",
    "double11_payments_total": "Checkouts paid.",
    "double11_gmv_fen": "Gross merchandise value of paid checkouts, in fen.",
    "double11_pending_commands": "Commands waiting for the group commit.",
    "double11_log_bytes_total": "Bytes written to the command log.",
    "double11_fsyncs_total": "Syncs of the command log to disk.",
    "double11_table_grows_total": "Times an engine table outgrew its size and was grown.",
    "double11_batch_ms_p50": "Median time of a batch from taken to durable (apply, fsync), ms, recent batches.",
    "double11_batch_ms_p99": "99th percentile time of a batch from taken to durable, ms, recent batches.",
    "double11_state_bytes": "Memory held by the engine's growing tables, in bytes.",
    "double11_storage_fault": "1 while the command log cannot be written: commands and reads answer 503.",
    "double11_storage_faults_total": "Storage faults met (a log write or sync that failed).",
}
FALLBACK_HELP = "A figure of the festival's engine (see double11/service/festival.py, Festival.metrics)."


def metric_name(name: str) -> str:
    name = _NAME_BAD.sub("_", name)
    if not name.startswith("double11_"):
        name = "double11_" + name
    return name


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


class HttpMetrics:
    __slots__ = ("requests", "hist", "sums")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        # route -> per-bucket counts (not cumulative; last slot is +Inf)
        self.hist: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        req = self.requests
        req[key] = req.get(key, 0) + 1
        h = self.hist.get(route)
        if h is None:
            h = self.hist[route] = [0] * (len(LATENCY_BUCKETS_S) + 1)
            self.sums[route] = 0.0
        h[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sums[route] += seconds

    def render(self, festival_metrics: dict[str, Any] | None) -> str:
        out: list[str] = []
        for name, value in sorted((festival_metrics or {}).items()):
            if not isinstance(value, (int, float)):
                continue
            n = metric_name(name)
            kind = "counter" if n.endswith("_total") else "gauge"
            out.append(f"# HELP {n} {FESTIVAL_HELP.get(n, FALLBACK_HELP)}")
            out.append(f"# TYPE {n} {kind}")
            out.append(f"{n} {_num(value)}")
        n = "double11_http_requests_total"
        out.append(f"# HELP {n} HTTP requests answered, by route and status.")
        out.append(f"# TYPE {n} counter")
        for (route, status), count in sorted(self.requests.items()):
            out.append(f'{n}{{route="{_label(route)}",status="{status}"}} {count}')
        n = "double11_http_request_duration_seconds"
        out.append(f"# HELP {n} HTTP request latency, from the request's arrival "
                   "to the last byte handed to the server.")
        out.append(f"# TYPE {n} histogram")
        for route in sorted(self.hist):
            h = self.hist[route]
            lab = _label(route)
            acc = 0
            for le, c in zip(LATENCY_BUCKETS_S, h):
                acc += c
                out.append(f'{n}_bucket{{route="{lab}",le="{le!r}"}} {acc}')
            acc += h[-1]
            out.append(f'{n}_bucket{{route="{lab}",le="+Inf"}} {acc}')
            out.append(f'{n}_sum{{route="{lab}"}} {self.sums[route]!r}')
            out.append(f'{n}_count{{route="{lab}"}} {acc}')
        out.append("")
        return "\n".join(out)
