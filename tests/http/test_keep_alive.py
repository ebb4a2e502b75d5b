"""A client that reuses one connection never loses a request to an answer
given before its body was read (a refused path, id or method): the body is
read first, so the connection stays usable; where it cannot be (a body over
the limit), the answer says Connection: close and the server closes."""

from __future__ import annotations

import socket

import msgspec
import pytest

from double11 import limits

CHECKOUT = {"buyer": 7, "country": "CN", "channel": "mobile", "lines": [{"sku": 101, "qty": 1}]}


class Connection:
    """One HTTP/1.1 connection over a raw socket: requests written as given
    (headers and body in separate writes, when asked), answers read whole."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reconnects = 0
        self._open()

    def _open(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.file = self.sock.makefile("rb")

    def reopen(self) -> None:
        self.close()
        self.reconnects += 1
        self._open()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, method: str, path: str, body: bytes | None = None, split: bool = False,
             chunked: bool = False, headers: dict[str, str] | None = None) -> None:
        head = f"{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if chunked and body is not None:
            head += "transfer-encoding: chunked\r\n"
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        elif body is not None:
            head += f"content-length: {len(body)}\r\n"
        raw = head.encode() + b"\r\n"
        if split and body:  # the body in a write of its own, as a client may send it
            self.sock.sendall(raw)
            self.sock.sendall(body)
        else:
            self.sock.sendall(raw + (body or b""))

    def answer(self) -> tuple[int, dict[str, str], bytes] | None:
        """The next answer, or None if the server closed the connection instead."""
        status_line = self.file.readline()
        if not status_line:
            return None
        headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, value = line.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body


def _requests(rounds: int):
    """(method, path, body, how it is sent, status expected): refusals with
    bodies of every size and kind, between good requests."""
    small = msgspec.json.encode({"amount_fen": 1, "idempotency_key": "k"})
    big = small + b" " * (256 * 1024)  # more than one read of the server's: not there when it answers
    for i in range(rounds):
        restock = msgspec.json.encode({"qty": 1, "idempotency_key": f"restock-{i}"})
        yield "POST", "/v1/checkouts/abc/pay", small, {}, 400
        yield "GET", "/v1/ledger", None, {}, 200
        yield "POST", "/v1/checkouts/abc/pay", big, {"split": True}, 400
        yield "POST", "/v1/skus/101/restock", restock, {}, 200
        yield "POST", "/v1/checkouts/0/cancel", big, {}, 400
        yield "POST", "/v1/nowhere", big, {"split": True}, 404
        yield "GET", "/v1/stats", None, {}, 200
        yield "DELETE", "/v1/ledger", big, {}, 405
        yield "POST", "/v2/checkouts", small, {"chunked": True}, 404
        yield "GET", "/v1/ledger", small, {"split": True}, 200  # a view reads no body: it is dropped
        yield "POST", "/v1/skus/101/restock", restock, {"split": True}, 200  # its retry: the first answer


def test_refused_requests_with_bodies_keep_the_connection_in_step(server):
    conn = Connection(server.port)
    sent = answered = closed = 0
    try:
        for method, path, body, how, expected in _requests(rounds=30):
            conn.send(method, path, body, **how)
            sent += 1
            answer = conn.answer()
            assert answer is not None, f"{method} {path}: the connection was dropped without an answer"
            status, headers, _ = answer
            assert status == expected, (method, path, status)
            answered += 1
            if headers.get("connection", "").lower() == "close":  # allowed, but never expected here
                closed += 1
                conn.reopen()
    finally:
        conn.close()
    assert answered == sent == 330
    # every body here fits the limit: it is read, and the connection is kept
    assert closed == 0 and conn.reconnects == 0


@pytest.mark.parametrize("how", [{}, {"chunked": True}])
def test_a_body_over_the_limit_is_answered_with_connection_close(server, monkeypatch, how):
    monkeypatch.setattr("double11.http.app._BODY_MAX", 1024)
    conn = Connection(server.port)
    try:
        body = msgspec.json.encode({**CHECKOUT, "idempotency_key": "x" * 2000})
        if how:
            conn.send("POST", "/v1/checkouts", body, **how)
        else:  # the headers only: the server answers from Content-Length, before any body comes
            conn.send("POST", "/v1/checkouts", None, headers={"content-length": str(limits.http_body_bytes_max + 1)})
        answer = conn.answer()
        assert answer is not None
        status, headers, payload = answer
        assert status == 413 and b"body_too_large" in payload
        assert headers.get("connection", "").lower() == "close"
        assert conn.answer() is None  # and the server does close it: the client knows to reconnect
        conn.reopen()
        conn.send("GET", "/v1/ledger")
        again = conn.answer()
        assert again is not None and again[0] == 200
    finally:
        conn.close()


def test_a_bad_content_length_is_answered_with_connection_close(server):
    conn = Connection(server.port)
    try:
        conn.send("POST", "/v1/checkouts/abc/pay", None, headers={"content-length": "12x"})
        answer = conn.answer()
        assert answer is not None and answer[0] == 400
        assert answer[1].get("connection", "").lower() == "close"
        assert conn.answer() is None
    finally:
        conn.close()
