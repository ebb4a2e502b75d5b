"""Every route of the HTTP API answers, over a real server."""

from __future__ import annotations

import re

import httpx
import msgspec
import pytest

from double11.http.app import ROUTES

CO = {"buyer": 7, "country": "CN", "channel": "mobile", "lines": [{"sku": 101, "qty": 1}, {"sku": 102, "qty": 2}]}


def checkout(client, key="co-1", **over):
    r = client.post("/v1/checkouts", json={**CO, **over, "idempotency_key": key})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def test_checkout_created(client):
    body = checkout(client)
    assert body["checkout"] == 1
    assert body["status"] == "reserved"
    assert body["amount_fen"] == 1999 + 2 * 100
    # one order per merchant, ascending merchant id
    assert [(o["order"], o["merchant"]) for o in body["orders"]] == [(1, 10), (2, 30)]
    assert body["expires_at"] > 0


def test_pay_confirm_refund_cancel_restock(client):
    c = checkout(client)
    r = client.post(f"/v1/checkouts/{c['checkout']}/pay",
                    json={"amount_fen": c["amount_fen"], "idempotency_key": "pay-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"checkout": 1, "status": "paid", "amount_fen": c["amount_fen"]}

    r = client.post("/v1/orders/1/confirm", json={"idempotency_key": "conf-1"})
    assert r.status_code == 200, r.text
    assert r.json()["order"] == 1 and r.json()["status"] == "settled"
    assert r.json()["merchant_fen"] + r.json()["commission_fen"] == 200

    r = client.post("/v1/orders/2/refund", json={"idempotency_key": "ref-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"order": 2, "status": "refunded", "amount_fen": 1999}

    c2 = checkout(client, key="co-2")
    r = client.post(f"/v1/checkouts/{c2['checkout']}/cancel", json={"idempotency_key": "can-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"checkout": 2, "status": "cancelled"}

    r = client.post("/v1/skus/106/restock", json={"qty": 5, "idempotency_key": "rs-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {"sku": 106, "qty": 5}
    assert client.get("/v1/skus/106").json()["stocked"] == 5


def test_state_errors_come_from_the_engine(client):
    c = checkout(client)
    r = client.post("/v1/checkouts/1/pay", json={"amount_fen": c["amount_fen"] + 1, "idempotency_key": "p"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "amount_mismatch"
    r = client.post("/v1/checkouts", json={**CO, "lines": [{"sku": 101, "qty": 0}], "idempotency_key": "q"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_quantity"
    r = client.post("/v1/checkouts/77/pay", json={"amount_fen": 1, "idempotency_key": "u"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_checkout"


def test_path_id_wins_over_body_field(client):
    checkout(client)
    r = client.post("/v1/checkouts/1/cancel", json={"checkout": 999, "op": "pay", "idempotency_key": "c"})
    assert r.status_code == 200, r.text
    assert r.json() == {"checkout": 1, "status": "cancelled"}


def test_idempotent_retry_returns_first_result(client):
    first = checkout(client, key="same")
    again = client.post("/v1/checkouts", json={**CO, "idempotency_key": "same"})
    assert again.status_code == 201 and again.json() == first
    other = client.post("/v1/checkouts", json={**CO, "buyer": 8, "idempotency_key": "same"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert client.get("/v1/stats").json()["checkouts"] == 1


def test_views(client):
    c = checkout(client)
    v = client.get("/v1/checkouts/1")
    assert v.status_code == 200
    v = v.json()
    assert v["checkout"] == 1 and v["status"] == "reserved" and v["amount_fen"] == c["amount_fen"]
    assert v["buyer"] == 7 and v["country"] == "CN" and v["channel"] == "mobile"
    assert len(v["lines"]) == 2 and len(v["orders"]) == 2
    o = client.get("/v1/orders/2").json()
    assert o["order"] == 2 and o["checkout"] == 1 and o["merchant"] == 30 and o["status"] == "reserved"
    s = client.get("/v1/skus/101").json()
    assert s == {"sku": 101, "name": "SKU 101", "merchant": 30, "merchant_name": "Thirty Store", "brand": 1,
                 "brand_name": "Apple", "price_fen": 1999, "stock": 2, "reserved": 1, "sold": 0, "stocked": 3}
    led = client.get("/v1/ledger").json()
    assert led["sum"] == 0
    assert set(led["accounts"]) == {"buyers", "escrow", "merchants", "platform", "marketing"}
    st = client.get("/v1/stats").json()
    assert st["checkouts"] == 1 and st["orders"] == 2 and st["gmv_fen"] == 0


def test_views_of_absent_things_are_404(client):
    for path, code in (("/v1/checkouts/5", "unknown_checkout"), ("/v1/orders/5", "unknown_order"),
                       ("/v1/skus/5", "unknown_sku")):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == code


def test_batch_answers_each_command_on_its_own(client):
    cmds = [
        {"op": "checkout", **CO, "idempotency_key": "b1"},
        {"op": "checkout", **CO, "lines": [{"sku": 999, "qty": 1}], "idempotency_key": "b2"},
        {"op": "pay", "checkout": 1, "amount_fen": 2199, "idempotency_key": "b3"},
        {"op": "pay", "checkout": 1, "amount_fen": 2199, "idempotency_key": "b4"},
        {"op": "restock", "sku": 106, "qty": 0, "idempotency_key": "b5"},  # a value out of its bounds
        {"op": "cancel", "checkout": 0, "idempotency_key": "b6"},
        {"op": "restock", "sku": 106, "qty": 1, "idempotency_key": "b7"},
    ]
    r = client.post("/v1/batch", json={"commands": cmds})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["status"] for x in res] == [201, 404, 200, 409, 400, 400, 200]
    assert res[0]["body"]["checkout"] == 1
    assert res[1]["body"]["error"]["code"] == "unknown_sku"
    assert res[2]["body"] == {"checkout": 1, "status": "paid", "amount_fen": 2199}
    assert res[3]["body"]["error"]["code"] == "already_paid"
    assert res[4]["body"]["error"]["code"] == "invalid_quantity"
    assert res[5]["body"]["error"]["code"] == "invalid_request"
    assert res[6]["body"] == {"sku": 106, "qty": 1}
    assert client.post("/v1/batch", json={"commands": []}).json() == {"results": []}


@pytest.mark.parametrize("bad, code, words", [
    ("not an object", "invalid_request", "commands[1]: a command must be a JSON object, got 'not an object'"),
    ({"op": "frobnicate", "idempotency_key": "b"}, "unknown_op", "commands[1]: op must be one of checkout"),
    ({"op": "restock", "sku": 106, "qty": "1", "idempotency_key": "b"}, "invalid_quantity",
     "commands[1]: qty must be a whole number"),
    ({"op": "cancel", "idempotency_key": "b"}, "invalid_request", "commands[1]: checkout is missing"),
    ({"op": "checkout", **CO, "lines": [{"sku": 101, "qty": 1}, {"sku": [], "qty": 1}], "idempotency_key": "b"},
     "invalid_request", "commands[1]: lines[1].sku must be a positive integer"),
])
def test_a_batch_with_a_command_not_of_its_shape_is_refused_whole(client, bad, code, words):
    """A field missing or of another JSON type (what the OpenAPI document's
    types say) refuses the batch: 400 naming the command and the field, and
    the good command beside it is not applied either."""
    good = {"op": "restock", "sku": 106, "qty": 1, "idempotency_key": "g"}
    before = client.get("/v1/skus/106").json()
    r = client.post("/v1/batch", json={"commands": [good, bad]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"].startswith(words), r.text
    assert client.get("/v1/skus/106").json() == before
    # the same good command alone is applied
    assert client.post("/v1/batch", json={"commands": [good]}).json()["results"][0]["status"] == 200


def test_openapi_lists_every_route(shared_client):
    client = shared_client
    r = client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == set(ROUTES)
    methods = {p: set(v) for p, v in doc["paths"].items()}
    for p in ("/v1/checkouts", "/v1/batch", "/v1/checkouts/{checkout}/pay", "/v1/skus/{sku}/restock"):
        assert methods[p] == {"post"}
    for p in ("/v1/checkouts/{checkout}", "/v1/ledger", "/v1/stats", "/metrics", "/v1/stats/stream"):
        assert methods[p] == {"get"}
    schemas = doc["components"]["schemas"]
    assert schemas["CheckoutRequest"]["required"] == ["buyer", "country", "channel", "lines", "idempotency_key"]
    # every $ref resolves
    for ref in re.findall(r'"\$ref":"#/components/schemas/([^"]+)"', r.text):
        assert ref in schemas


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$')


def parse_prometheus(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            if line.startswith("# TYPE"):
                assert line.split()[3] in ("counter", "gauge", "histogram", "summary", "untyped")
            continue
        m = _SAMPLE.match(line)
        assert m, f"bad metric line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_metrics_text_parses(client):
    checkout(client)
    client.get("/nope")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    s = parse_prometheus(r.text)
    assert s['double11_http_requests_total{route="/v1/checkouts",status="201"}'] == 1
    assert s['double11_http_requests_total{route="unmatched",status="404"}'] == 1
    assert s['double11_http_request_duration_seconds_count{route="/v1/checkouts"}'] == 1
    assert s['double11_http_request_duration_seconds_bucket{route="/v1/checkouts",le="+Inf"}'] == 1
    # the festival's own counters and gauges are there too
    assert any(k.startswith("double11_") and "http_" not in k for k in s)


def test_stats_stream_yields_events(client):
    checkout(client)
    events = []
    with client.stream("GET", "/v1/stats/stream") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(msgspec.json.decode(line[6:]))
                if len(events) == 2:
                    break
    assert len(events) == 2
    assert all(e["checkouts"] == 1 for e in events)


def test_dashboard_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and "double11" in r.text
    assert r.headers["content-type"].startswith("text/html")
    r = client.get("/static/app.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/missing.css").json()["error"]["code"] == "not_found"
    assert client.get("/static/missing.css").status_code == 404


def test_static_no_directory_traversal(shared_server):
    server = shared_server
    # raw paths, so no client normalises the dots away
    for raw in (b"/static/../secret.txt", b"/static/%2e%2e/secret.txt", b"/static/..%2fsecret.txt",
                b"/static/%2E%2E%2Fsecret.txt", b"/static//etc/passwd", b"/static/.hidden"):
        with httpx.Client(base_url=server.url) as c:
            req = c.build_request("GET", server.url)
            req.url = req.url.copy_with(raw_path=raw)
            r = c.send(req)
        assert r.status_code == 404, raw
        assert "top secret" not in r.text


def test_stop_ends_open_streams_and_closes_festival(festival, static_dir):
    from conftest import ThreadServer

    closed = []
    orig_close = festival.close

    def spy_close(snapshot=False):
        closed.append(snapshot)
        orig_close(snapshot=snapshot)

    festival.close = spy_close
    srv = ThreadServer(festival, static_dir=static_dir)
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c, c.stream("GET", "/v1/stats/stream") as r:
            it = r.iter_lines()
            assert next(it).startswith("data: ")
            srv.server.stop()  # graceful: the open stream ends, the server stops
            rest = list(it)
            assert all(line == "" or line.startswith("data: ") for line in rest)
    finally:
        srv.stop()
    assert closed == [True]  # closed once, with a snapshot


def test_empty_mode_answers_201_empty_object(festival):
    from conftest import ThreadServer

    srv = ThreadServer(festival, empty=True)
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            r = c.post("/v1/checkouts", json={**CO, "idempotency_key": "e"})
            assert r.status_code == 201 and r.json() == {}
            assert c.get("/anything").status_code == 201
    finally:
        srv.stop()
    assert festival.stats()["checkouts"] == 0


def test_binary_batch(client):
    from double11.engine.encode import encode_commands
    from double11.engine.wire import decode_results

    cmds = [{"op": "checkout", **CO, "idempotency_key": "bin-1"},
            {"op": "pay", "checkout": 1, "amount_fen": 2199, "idempotency_key": "bin-2"},
            {"op": "checkout", **CO, "lines": [{"sku": 106, "qty": 1}], "idempotency_key": "bin-3"}]
    body = encode_commands(cmds).to_bytes()
    r = client.post("/v1/batch", content=body, headers={"content-type": "application/x-double11-batch"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-double11-batch"
    res = decode_results(r.content)
    assert [int(c) for c in res["code"]] == [0, 0, 30]  # ok, ok, out_of_stock
    assert int(res["ref"][0]) == 1 and int(res["amount_fen"][0]) == 2199
    assert client.get("/v1/checkouts/1").json()["status"] == "paid"
