"""Admission control at overload (link/admission.py, link/remote.py): the
front refuses single commands at once with 429 overloaded and Retry-After
once the work in flight passes what the engine answers within the target
delay, so nothing is queued without bound; whatever was accepted is durable.

The real-server test runs `double11 serve` with the admission bound's floor
and ceiling lowered in its front process (the same code, a bound a test can
flood), and floods it with more concurrent checkouts than the ceiling."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest
from conftest import SplitServer
from model import small_catalog

from double11 import limits
from double11.bench.run import process_tree_rss_bytes
from double11.catalog.files import save_catalog
from double11.errors import Result
from double11.link.admission import admitted_max, batch_commands

ROOT = Path(__file__).resolve().parents[2]
START_S = 90.0
FLOOR, CEILING = 4, 32  # the front's admission bound in the flooded server
CONNECTIONS = 256  # concurrent checkouts, each on a connection of its own: eight times the ceiling
ROUNDS_MAX = 20  # floods until some are refused (each round is all of them at once)
RSS_GROWTH_MAX_BYTES = 200 * 2**20
SKU = 101

# `double11 serve` with the admission bound lowered in the front (the engine is a process of its own, as ever)
_LAUNCH = ("import sys\n"
           "from double11 import limits\n"
           f"limits.admission_calls_in_flight_min = {FLOOR}\n"
           f"limits.link_calls_in_flight_max = {CEILING}\n"
           "from double11.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")


class FloodedServer(SplitServer):
    def __init__(self, catalog_dir: Path, data_dir: Path, flags: list[str]) -> None:
        super().__init__(catalog_dir, data_dir, tuple(flags), launch=(sys.executable, "-c", _LAUNCH), start_s=START_S)

    def rss_bytes(self) -> int:
        """The front's and the engine's resident memory."""
        return process_tree_rss_bytes(self.proc.pid)


async def _checkout(port: int, key: str) -> tuple[int, dict[str, str], bytes]:
    """One checkout on a connection of its own: (status, headers, body)."""
    body = json.dumps({"buyer": 7, "country": "CN", "channel": "mobile", "lines": [{"sku": SKU, "qty": 1}],
                       "idempotency_key": key}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/checkouts HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % len(body) + body)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()


async def _flood(port: int, round_: int) -> list[tuple[int, dict[str, str], bytes]]:
    return await asyncio.gather(*[_checkout(port, f"flood-{round_}-{k}") for k in range(CONNECTIONS)])


def test_a_flooded_server_refuses_with_retry_after_keeps_its_memory_and_every_accepted_checkout(tmp_path):
    catalog_dir = tmp_path / "catalog"
    save_catalog(small_catalog(stock={SKU: 10_000_000}), catalog_dir)
    data_dir = tmp_path / "data"
    flags = ["--open"]  # this test is about load, not access (tests/http/test_access.py)
    server = FloodedServer(catalog_dir, data_dir, flags)
    accepted: list[int] = []  # checkout ids answered 201
    refused: list[tuple[dict[str, str], bytes]] = []
    others: list[tuple[int, bytes]] = []
    try:
        rss_before = server.rss_bytes()
        rss_most = rss_before
        for round_ in range(ROUNDS_MAX):
            for status, headers, body in asyncio.run(_flood(server.port, round_)):
                if status == 201:
                    accepted.append(json.loads(body)["checkout"])
                elif status == 429:
                    refused.append((headers, body))
                else:
                    others.append((status, body))
            rss_most = max(rss_most, server.rss_bytes())
            if refused and round_ >= 2:
                break
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert others == []  # no 5xx, nor anything else but accepted and refused
    assert refused, f"no 429 in {ROUNDS_MAX} floods of {CONNECTIONS} against a bound of at most {CEILING}"
    for headers, body in refused:
        assert headers.get("retry-after") == str(limits.overloaded_retry_after_s)
        error = json.loads(body)["error"]
        assert error["code"] == "overloaded"
        assert "commands wait for it" in error["message"] and "retry after" in error["message"]
    assert accepted, "nothing was accepted"
    assert rss_most - rss_before < RSS_GROWTH_MAX_BYTES
    # every checkout answered 201 is there after a restart, and nothing else is
    again = FloodedServer(catalog_dir, data_dir, flags)
    try:
        with httpx.Client(base_url=again.url, timeout=30) as client:
            for checkout in accepted:
                r = client.get(f"/v1/checkouts/{checkout}")
                assert r.status_code == 200, (checkout, r.text)
            assert client.get("/v1/stats").json()["checkouts"] == len(accepted)
    finally:
        again.stop()


def test_the_bound_is_the_answer_rate_times_the_target_delay_between_floor_and_ceiling(monkeypatch):
    monkeypatch.setattr(limits, "admission_queue_delay_ms_target", 50)
    monkeypatch.setattr(limits, "admission_calls_in_flight_min", 1_000)
    monkeypatch.setattr(limits, "link_calls_in_flight_max", 100_000)
    assert admitted_max(0, 0.1) == 1_000  # an idle engine: the floor
    assert admitted_max(10_000, 0.1) == 5_000  # 100,000 answers a second: 50 ms of them
    assert admitted_max(100_000, 0.05) == 100_000  # 2M a second would be 100,000: the ceiling
    assert admitted_max(10**9, 0.1) == 100_000
    assert admitted_max(5, 0.0) == 1_000  # no time measured: no rate


def test_a_batch_counts_as_its_commands():
    from double11.engine.encode import encode_commands

    checkout = {"op": "checkout", "idempotency_key": "k", "buyer": 1, "country": "CN", "channel": "pc",
                "lines": [{"sku": 101, "qty": 1}]}
    commands = [{**checkout, "idempotency_key": f"k{i}"} for i in range(37)]
    assert batch_commands(encode_commands(commands).to_bytes(), binary=True) == 37
    assert batch_commands(json.dumps({"commands": commands}).encode(), binary=False) == 37
    assert batch_commands(b"", binary=True) == 1  # not a batch: the engine refuses it, it weighs one
    assert batch_commands(b"{}", binary=False) == 1


def test_the_front_refuses_singles_while_a_batch_holds_the_engine_and_admits_them_as_it_answers(monkeypatch):
    """A batch in flight counts as its commands: single commands beside it
    are refused at once (nothing is sent), and admitted again once it is
    answered; the bound follows the answer rate on its timer."""
    import socket

    from double11.errors import Double11Error
    from double11.link.frames import ANSWER
    from double11.link.remote import RemoteFestival

    monkeypatch.setattr(limits, "admission_calls_in_flight_min", 10)
    monkeypatch.setattr(limits, "admission_window_ms", 10)

    async def go():
        front_end, engine_end = socket.socketpair()
        remote = RemoteFestival()
        await asyncio.get_running_loop().create_unix_connection(lambda: remote, sock=front_end)
        batch = asyncio.ensure_future(remote.batch(json.dumps({"commands": [{"op": "pay"}] * 20}).encode(), False))
        await asyncio.sleep(0)  # the batch is sent: 20 commands in flight, over the bound of 10
        with pytest.raises(Double11Error) as refused:
            remote.single(1, 0, b"{}")
        assert refused.value.code == Result.overloaded
        assert "20 commands wait for it, at most 10" in refused.value.body()["error"]["message"]
        engine_end.sendall(ANSWER.pack(1, 200, 0, 2) + b"{}")  # the engine answers the batch (call 1)
        assert (await asyncio.wait_for(batch, 5))[0] == 200
        single = remote.single(1, 0, b"{}")  # room again
        assert not single.done()
        remote.transport.close()
        engine_end.close()
        await asyncio.sleep(0)
        with pytest.raises(Double11Error):
            await single

    asyncio.run(go())
