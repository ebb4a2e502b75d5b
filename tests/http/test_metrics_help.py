"""/metrics: every sample's family has a # HELP and a # TYPE line, before
its samples, and every figure the festival gives is described."""

from __future__ import annotations

import re

from double11.http.metrics import FALLBACK_HELP, FESTIVAL_HELP, HttpMetrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})? \S+$")
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def families(text: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(HELP by family, TYPE by family, each sample's family), checking that a
    family's HELP and TYPE come before its first sample."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    sampled: list[str] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            _, _, name, help_text = line.split(" ", 3)
            assert name not in helps, f"two HELP lines for {name}"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            name = m.group(1)
            family = name
            for part in _HISTOGRAM_PARTS:
                base = name.removesuffix(part)
                if base != name and types.get(base) == "histogram":
                    family = base
            assert family in helps and family in types, f"{name}: no HELP or TYPE before its samples"
            sampled.append(family)
    return helps, types, sampled


def test_every_metric_has_help_and_type(client):
    client.post("/v1/checkouts", json={"buyer": 7, "country": "CN", "channel": "mobile",
                                       "lines": [{"sku": 101, "qty": 1}], "idempotency_key": "m1"})
    client.get("/v1/nowhere")
    client.get("/v1/ledger")
    text = client.get("/metrics").text
    helps, types, sampled = families(text)
    assert set(sampled) == set(helps) == set(types)
    # the HTTP front's families and the festival's own figures are all there
    assert {"double11_http_requests_total", "double11_http_request_duration_seconds"} <= set(sampled)
    assert set(FESTIVAL_HELP) <= set(sampled)
    assert all(text.strip() for text in helps.values())


def test_every_figure_of_the_festival_is_described(festival):
    figures = festival.metrics()
    assert figures, "the festival gives figures"
    assert set(figures) <= set(FESTIVAL_HELP), set(figures) - set(FESTIVAL_HELP)


def test_an_undescribed_figure_still_gets_help_and_type():
    helps, types, sampled = families(HttpMetrics().render({"double11_something_new": 3, "odd name": 1.5}))
    assert helps["double11_something_new"] == FALLBACK_HELP and types["double11_something_new"] == "gauge"
    assert helps["double11_odd_name"] == FALLBACK_HELP
    assert sorted(sampled) == ["double11_odd_name", "double11_something_new"]
