"""Transport errors: every one is {"error": {"code", "message"}} with a 4xx,
and a refused request changes nothing."""

from __future__ import annotations

import socket

import httpx
import msgspec
import pytest

from double11 import limits

CO = {"op": "checkout", "buyer": 7, "country": "CN", "channel": "pc", "lines": [{"sku": 102, "qty": 1}]}


def error_code(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return body["error"]["code"]


def nothing_changed(client) -> None:
    st = client.get("/v1/stats").json()
    assert st["checkouts"] == 0 and st["payments"] == 0
    assert client.get("/v1/skus/102").json()["stock"] == 5


@pytest.mark.parametrize("path", ["/v1/checkouts", "/v1/checkouts/1/pay", "/v1/orders/1/confirm",
                                  "/v1/skus/101/restock", "/v1/batch"])
@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"[1, 2]", b'"str"', b"12", b"null",
                                  b"\xff\xfe{}", b'{"a": 1} trailing'])
def test_body_not_a_json_object(shared_client, path, body):
    r = shared_client.post(path, content=body, headers={"content-type": "application/json"})
    assert error_code(r, 400) == "invalid_request"


def test_batch_body_without_a_command_list(shared_client):
    for body in ({}, {"commands": {}}, {"commands": "x"}, {"cmds": []}):
        assert error_code(shared_client.post("/v1/batch", json=body), 400) == "invalid_request"
    nothing_changed(shared_client)


def test_body_too_large_by_content_length(shared_server):
    # only the headers are sent: the answer comes before any of the body is read
    with socket.create_connection(("127.0.0.1", shared_server.port)) as s:
        s.sendall(b"POST /v1/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: %d\r\n\r\n" % (limits.http_body_bytes_max + 1))
        s.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert msgspec.json.decode(body)["error"]["code"] == "body_too_large"


def test_body_too_large_streamed(shared_client):
    # a JSON object just past the limit, sent chunked (no Content-Length)
    pad = limits.http_body_bytes_max
    cmd = msgspec.json.encode({"commands": [{**CO, "idempotency_key": "big"}], "pad": "x" * pad})

    def chunks():
        for i in range(0, len(cmd), 1 << 20):
            yield cmd[i:i + (1 << 20)]

    r = shared_client.post("/v1/batch", content=chunks(), headers={"content-type": "application/json"})
    assert error_code(r, 413) == "body_too_large"
    # also with a Content-Length that is exact
    r = shared_client.post("/v1/batch", content=cmd, headers={"content-type": "application/json"})
    assert error_code(r, 413) == "body_too_large"
    nothing_changed(shared_client)


def test_batch_too_large_changes_nothing(shared_client):
    n = limits.batch_commands_max + 1
    one = [msgspec.json.encode({**CO, "idempotency_key": f"k{i}"}) for i in range(n)]
    body = b'{"commands":[' + b",".join(one) + b"]}"
    r = shared_client.post("/v1/batch", content=body, headers={"content-type": "application/json"})
    assert error_code(r, 413) == "batch_too_large"
    nothing_changed(shared_client)


@pytest.mark.parametrize("id_", ["0", "-1", "abc", "1.5", "1e3", "%C2%B2", "99999999999999999999",
                                 str(limits.id_max + 1), "0x10", "+1", "%201"])
def test_path_id_not_a_positive_integer(shared_client, id_):
    assert error_code(shared_client.get(f"/v1/checkouts/{id_}"), 400) == "invalid_request"
    assert error_code(shared_client.post(f"/v1/checkouts/{id_}/pay", json={"amount_fen": 1, "idempotency_key": "k"}),
                      400) == "invalid_request"
    assert error_code(shared_client.get(f"/v1/skus/{id_}"), 400) == "invalid_request"
    assert error_code(shared_client.post(f"/v1/orders/{id_}/refund", json={"idempotency_key": "k"}),
                      400) == "invalid_request"


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/", "/v1/checkout", "/v1/checkouts/1/fly",
                                  "/v1/orders/1/pay", "/v1/checkouts/1/pay/now", "/v2/checkouts",
                                  "/v1/ledger/1", "/static", "/static/", "/metrics/x", "/v1/skus/"])
def test_unknown_path(shared_client, path):
    assert error_code(shared_client.get(path), 404) == "not_found"
    assert error_code(shared_client.post(path, json={}), 404) == "not_found"


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/checkouts"), ("PUT", "/v1/checkouts"), ("GET", "/v1/batch"), ("DELETE", "/v1/checkouts/1"),
    ("GET", "/v1/checkouts/1/pay"), ("POST", "/v1/checkouts/1"), ("POST", "/v1/ledger"),
    ("POST", "/v1/stats"), ("POST", "/metrics"), ("PATCH", "/openapi.json"), ("POST", "/"),
    ("POST", "/v1/stats/stream"), ("GET", "/v1/skus/1/restock"), ("POST", "/static/app.js"),
])
def test_wrong_method(shared_client, method, path):
    r = shared_client.request(method, path)
    assert error_code(r, 405) == "method_not_allowed"
    assert r.headers["allow"] in ("GET", "POST")


def test_binary_batch_decode_error_is_json_4xx(shared_client):
    r = shared_client.post("/v1/batch", content=b"\x00garbage",
                           headers={"content-type": "application/x-double11-batch"})
    assert r.status_code in (400, 413)
    assert error_code(r, r.status_code) in ("invalid_request", "batch_too_large", "body_too_large")
    nothing_changed(shared_client)


def test_a_bug_of_ours_is_a_500_with_the_error_shape_and_is_logged(festival, caplog, request):
    """Never the answer to bad input: only an exception inside the platform gets here."""
    async def broken(op, target, body):
        raise RuntimeError("a bug")

    festival.submit_single = broken
    client = request.getfixturevalue("client")  # the server starts over the broken festival
    r = client.post("/v1/checkouts", json={**CO, "idempotency_key": "a"})
    assert error_code(r, 500) == "internal"
    assert any("unhandled error" in rec.message for rec in caplog.records)
