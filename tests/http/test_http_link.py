"""`double11 serve` as it runs: an HTTP front process and an engine process
(double11.link).  Over the link, every route answers byte for byte as the
same app over a festival in its own process; the engine's death stops the
front (503 meanwhile) and a restart recovers; SIGTERM to both stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import SplitServer, ThreadServer, free_port
from hypothesis import given, settings
from hypothesis import strategies as st
from model import T0, small_catalog

from double11 import limits
from double11.catalog.files import save_catalog
from double11.errors import Result
from double11.link.engine import lock_data_dir
from double11.service import Festival
from double11.storage import snapshot as snapshot_files

ROOT = Path(__file__).resolve().parents[2]
START_S = 60.0


@pytest.fixture
def catalog_dir(tmp_path):
    d = tmp_path / "catalog"
    save_catalog(small_catalog(), d)
    return d


CO = {"buyer": 7, "country": "CN", "channel": "mobile", "lines": [{"sku": 101, "qty": 1}, {"sku": 102, "qty": 2}]}


def _encode(commands: list[dict]) -> bytes:
    from double11.engine.encode import encode_commands

    return encode_commands(commands).to_bytes()


def _binary_batch() -> bytes:
    return _encode([{"op": "checkout", "idempotency_key": "bin-1", "buyer": 9, "country": "JP",
                     "channel": "pc", "lines": [{"sku": 103, "qty": 1}]},
                    {"op": "pay", "idempotency_key": "bin-2", "checkout": 99, "amount_fen": 5}])


BIG = 20_000  # commands: a batch and its answer cross the link in many reads


def _big_batch() -> list[dict]:
    return [{"op": "checkout", "idempotency_key": f"big-{i}", "buyer": i, "country": "US", "channel": "mobile",
             "lines": [{"sku": 101 + i % 6, "qty": 1}]} for i in range(BIG)]


def _script() -> list[tuple[str, str, bytes | None, str]]:
    """(method, path, body, content type): every route, and refusals of each kind."""
    j = msgspec.json.encode
    js = "application/json"
    return [
        ("POST", "/v1/checkouts", j({**CO, "idempotency_key": "a"}), js),
        ("POST", "/v1/checkouts", j({**CO, "idempotency_key": "a"}), js),  # retry
        ("POST", "/v1/checkouts", j({**CO, "buyer": 8, "idempotency_key": "a"}), js),  # key reused
        ("POST", "/v1/checkouts", b"[1]", js),
        ("POST", "/v1/checkouts", b"{", js),
        ("POST", "/v1/checkouts", j({**CO, "lines": [{"sku": 101, "qty": 999}], "idempotency_key": "b"}), js),
        ("POST", "/v1/checkouts/1/pay", j({"amount_fen": 1, "idempotency_key": "p0"}), js),
        ("POST", "/v1/checkouts/1/pay", j({"amount_fen": 1999 + 200, "idempotency_key": "p1"}), js),
        ("POST", "/v1/orders/1/confirm", j({"idempotency_key": "c1"}), js),
        ("POST", "/v1/orders/2/refund", j({"idempotency_key": "r2"}), js),
        ("POST", "/v1/checkouts/77/cancel", j({"idempotency_key": "x"}), js),
        ("POST", "/v1/skus/103/restock", j({"qty": 5, "idempotency_key": "s"}), js),
        ("POST", "/v1/skus/abc/restock", j({"qty": 5, "idempotency_key": "s2"}), js),
        ("POST", "/v1/batch", j({"commands": [{"op": "checkout", **CO, "idempotency_key": "c"}, 5, {"op": "x"}]}), js),
        ("POST", "/v1/batch", j({"commands": []}), js),
        ("POST", "/v1/batch", j({"commands": 3}), js),
        ("POST", "/v1/batch", b"nope", js),
        ("POST", "/v1/batch", _binary_batch(), "application/x-double11-batch"),
        ("POST", "/v1/batch", b"\x00\x01", "application/x-double11-batch"),
        ("POST", "/v1/batch", j({"commands": _big_batch()}), js),
        ("POST", "/v1/batch", _encode(_big_batch()), "application/x-double11-batch"),  # retries, binary
        ("GET", "/v1/checkouts/1", None, js),
        ("GET", "/v1/checkouts/999", None, js),
        ("GET", "/v1/orders/2", None, js),
        ("GET", "/v1/orders/0", None, js),
        ("GET", "/v1/skus/101", None, js),
        ("GET", "/v1/skus/5", None, js),
        ("GET", "/v1/ledger", None, js),
        ("GET", "/v1/stats", None, js),
        ("DELETE", "/v1/ledger", None, js),
        ("GET", "/v1/nothing", None, js),
    ]


def _answers(url: str) -> list[tuple[int, str, bytes]]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body, ctype in _script():
            r = client.request(method, path, content=body, headers={"content-type": ctype})
            out.append((r.status_code, r.headers.get("content-type"), r.content))
    return out


def test_over_the_link_every_route_answers_as_in_process(tmp_path, catalog_dir):
    split = SplitServer(catalog_dir, tmp_path / "data")
    try:
        over_link = _answers(split.url)
        metrics = httpx.get(split.url + "/metrics").text
    finally:
        assert split.stop() == 0
    local = ThreadServer(Festival.open(small_catalog(), clock_start_ms=T0, speedup=0.0))
    try:
        in_process = _answers(local.url)
    finally:
        local.stop()
    for request, a, b in zip(_script(), over_link, in_process):
        assert a == b, request
    statuses = [status for status, _, _ in over_link]
    assert statuses[:6] == [201, 201, 409, 400, 400, 409] and 503 not in statuses and 500 not in statuses
    assert "double11_commands_total" in metrics and 'route="/v1/checkouts"' in metrics


def test_the_engine_dying_stops_the_front_and_a_restart_recovers(tmp_path, catalog_dir):
    data = tmp_path / "data"
    split = SplitServer(catalog_dir, data)
    try:
        r = httpx.post(split.url + "/v1/checkouts", json={**CO, "idempotency_key": "kept"})
        assert r.status_code == 201
        kept = r.json()
        os.kill(split.engine_pid(), signal.SIGKILL)
        try:  # answered 503 while the front stops, or refused once it has
            r = httpx.post(split.url + "/v1/checkouts", json={**CO, "idempotency_key": "late"}, timeout=10)
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        except httpx.TransportError:
            pass
        assert split.proc.wait(30) == 1
    finally:
        split.signal_all(signal.SIGKILL)
    again = SplitServer(catalog_dir, data)
    try:
        assert httpx.post(again.url + "/v1/checkouts", json={**CO, "idempotency_key": "kept"}).json() == kept
        assert httpx.get(again.url + "/v1/skus/102").json()["reserved"] == 2
    finally:
        assert again.stop() == 0


def test_sigterm_to_both_processes_answers_what_is_in_flight_and_snapshots(tmp_path, catalog_dir):
    data = tmp_path / "data"
    split = SplitServer(catalog_dir, data)
    try:
        first = httpx.post(split.url + "/v1/checkouts", json={**CO, "idempotency_key": "k"}).json()
    finally:
        assert split.stop() == 0
    found = snapshot_files.latest(data)
    assert found is not None and found[0] > 0  # a snapshot after the checkout, not the first one
    again = SplitServer(catalog_dir, data)
    try:  # the retry finds the first answer
        assert httpx.post(again.url + "/v1/checkouts", json={**CO, "idempotency_key": "k"}).json() == first
    finally:
        assert again.stop() == 0


def test_a_second_engine_on_a_data_folder_waits_then_gives_up(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "data_dir_lock_wait_s", 0.2)
    held = lock_data_dir(tmp_path)
    try:
        with pytest.raises(SystemExit, match="in use"):
            lock_data_dir(tmp_path)
    finally:
        os.close(held)
    os.close(lock_data_dir(tmp_path))  # free again once let go


def test_serve_with_a_catalog_it_cannot_read_says_so_and_exits(tmp_path):
    (tmp_path / "empty").mkdir()  # a folder that is not a catalog (a missing one is argparse's to refuse)
    r = subprocess.run([sys.executable, "-m", "double11", "serve", "--open", "--catalog", str(tmp_path / "empty"),
                        "--data", str(tmp_path / "data"), "--port", str(free_port())],
                       cwd=ROOT, capture_output=True, text=True, timeout=START_S,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1
    assert "cannot open the festival" in r.stderr and "merchants.csv" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_front_refuses_calls_past_its_limit_while_the_engine_is_behind(monkeypatch):
    """Calls the engine has not answered are bounded: past the limit, 429
    overloaded at once (nothing is sent), and calls resume as answers come."""
    import asyncio
    import socket

    from double11.errors import Double11Error, Result
    from double11.link.frames import ANSWER
    from double11.link.remote import RemoteFestival

    monkeypatch.setattr(limits, "link_calls_in_flight_max", 3)

    async def go():
        front_end, engine_end = socket.socketpair()
        remote = RemoteFestival()
        await asyncio.get_running_loop().create_unix_connection(lambda: remote, sock=front_end)
        waiting = [remote.single(1, 0, b"{}") for _ in range(3)]
        with pytest.raises(Double11Error) as refused:
            remote.single(1, 0, b"{}")
        assert refused.value.code == Result.overloaded
        engine_end.sendall(ANSWER.pack(1, 201, 0, 2) + b"{}")  # the engine answers call 1
        assert await asyncio.wait_for(waiting[0], 5) == (201, b"{}", 0)
        later = remote.single(1, 0, b"{}")  # room again
        assert not later.done()
        remote.transport.close()
        engine_end.close()
        await asyncio.sleep(0)
        for future in waiting[1:] + [later]:  # the link went away: 503 for whoever still waits
            with pytest.raises(Double11Error) as lost:
                await future
            assert lost.value.code == Result.unavailable

    asyncio.run(go())


_FRAME = st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 255),
                   st.integers(-2**63, 2**63 - 1), st.binary(max_size=40))


@settings(max_examples=200, deadline=None)
@given(st.lists(_FRAME, max_size=20), st.binary(max_size=30), st.integers(1, 4))
def test_the_engine_scans_exactly_the_whole_call_frames_a_read_holds(frames, tail, reads):
    """scan_calls against the frame format read plainly with struct: every
    whole frame, in order, with its fields and payload; a partial frame at
    the end waits (its bytes are not consumed); reads split anywhere."""
    from double11.link.frames import CALL, scan_calls

    stream = b"".join(CALL.pack(k, c, o, t, 1, 0, len(p)) + p for k, c, o, t, p in frames)
    partial = CALL.pack(1, 1, 1, 1, 1, 0, len(tail) + 1) + tail  # one byte short of whole
    data = stream + partial[:len(tail) + CALL.size]
    buf, seen, cut_at = bytearray(), [], sorted({len(data) * i // reads for i in range(1, reads + 1)})
    last = 0
    for at in cut_at:
        buf += data[last:at]
        last = at
        found = scan_calls(buf, 1 << 20)
        for i in range(len(found)):
            seen.append((int(found.kind[i]), int(found.call[i]), int(found.op[i]), int(found.target[i]),
                         bytes(buf[found.start[i]:found.end[i]])))
        del buf[:found.consumed]
    assert seen == frames
    assert bytes(buf) == partial[:len(tail) + CALL.size]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(100, 599), st.binary(max_size=60)), max_size=30),
       st.binary(max_size=20))
def test_answers_are_framed_as_struct_frames_them(answers, padding):
    """pack_answers against ANSWER.pack, body after body; the bodies may lie
    anywhere in their buffer (here after some padding, out of order)."""
    import numpy as np

    from double11.link.frames import ANSWER, pack_answers

    bodies = [body for _, _, body in answers]
    data = padding + b"".join(reversed(bodies))
    ends = np.cumsum([len(padding)] + [len(b) for b in reversed(bodies)])[1:][::-1]
    starts = ends - np.array([len(b) for b in bodies], dtype=np.int64)
    packed = pack_answers(np.array([c for c, _, _ in answers], dtype=np.uint32),
                          np.array([s for _, s, _ in answers], dtype=np.int64), data, starts, ends)
    assert packed == b"".join(ANSWER.pack(c, s, 0, len(b)) + b for c, s, b in answers)


def test_a_call_frame_past_the_limit_is_refused():
    from double11.link.frames import CALL, FrameTooLarge, scan_calls

    with pytest.raises(FrameTooLarge):
        scan_calls(bytearray(CALL.pack(1, 1, 1, 0, 1, 0, 101) + b"x" * 101), 100)
    assert len(scan_calls(bytearray(CALL.pack(1, 1, 1, 0, 1, 0, 100) + b"x" * 100), 100)) == 1


@pytest.mark.parametrize("cut", [None, 7, 40, 151])
def test_one_read_of_singles_views_and_batches_answers_every_call_once(tmp_path, cut):
    """The engine's end of the link, fed what the front sends: single
    requests with a view and a batch among them, in one read or cut
    anywhere.  Every call gets exactly one answer, the right one."""
    import asyncio

    import uvloop
    from model import SMALL_SKUS

    from double11.engine.batch import Op
    from double11.link.engine import EngineLink
    from double11.link.frames import ANSWER, CALL, Kind, View
    from double11.link.local import LocalFestival

    sku = sorted(SMALL_SKUS)[0]

    def checkout(key: str) -> bytes:
        return msgspec.json.encode({"buyer": 7, "country": "CN", "channel": "mobile",
                                    "lines": [{"sku": sku, "qty": 1}], "idempotency_key": key})

    calls = [(Kind.SINGLE, 1, Op.checkout, 0, checkout("a")),
             (Kind.VIEW, 2, View.SKU, sku, b""),
             (Kind.SINGLE, 3, Op.checkout, 0, checkout("b")),
             (Kind.BATCH, 4, 0, 0, msgspec.json.encode({"commands": []})),
             (Kind.SINGLE, 5, Op.checkout, 0, b"[1]"),
             (Kind.SINGLE, 6, Op.checkout, 0, checkout("a"))]  # a retry of call 1
    stream = b"".join(CALL.pack(k, c, o, t, 1, 0, len(p)) + p for k, c, o, t, p in calls)
    reads = [stream] if cut is None else [stream[:cut], stream[cut:]]

    class Transport:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, data: bytes) -> None:
            self.data += data

        def is_closing(self) -> bool:
            return False

    async def run() -> dict[int, tuple[int, bytes]]:
        link = EngineLink(LocalFestival(festival), asyncio.get_running_loop().create_future())
        link.transport = transport = Transport()
        for read in reads:
            link.data_received(read)
            await asyncio.sleep(0)
        await festival.drain()
        for _ in range(100):  # the view and the batch answer from tasks of their own
            if len(answers_in(transport.data)) == len(calls):
                break
            await asyncio.sleep(0.01)
        return answers_in(transport.data)

    def answers_in(data: bytearray) -> dict[int, tuple[int, bytes]]:
        found, at = {}, 0
        while at < len(data):
            call, code, _, length = ANSWER.unpack_from(data, at)
            assert call not in found, f"call {call} answered twice"
            found[call] = (code, bytes(data[at + ANSWER.size:at + ANSWER.size + length]))
            at += ANSWER.size + length
        return found

    festival = Festival.open(small_catalog(), data_dir=tmp_path / "data", clock_start_ms=T0, speedup=0.0)
    try:
        got = uvloop.run(run())
    finally:
        festival.close()
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    first, second = msgspec.json.decode(got[1][1]), msgspec.json.decode(got[3][1])
    assert got[1][0] == got[3][0] == Result.created and first["checkout"] != second["checkout"]
    assert got[6] == got[1]  # the retry: the first answer, byte for byte
    assert got[5][0] == Result.invalid_request and msgspec.json.decode(got[5][1])["error"]["code"] == "invalid_request"
    assert got[2][0] == Result.ok and msgspec.json.decode(got[2][1])["sku"] == sku
    assert got[4] == (Result.ok, b'{"results":[]}')
