"""The bench's overload phase: single checkouts offered at a fixed rate,
whatever the server answers (an open loop, as millions of phones are).

wrk answers each response with the next request (a closed loop: a slower
server is offered less) and keeps one latency for every status, so the phase
has a client of its own.  It runs in a process of its own (`python -m
double11.bench.overload`, its arguments and its figures as JSON), on uvloop:
each request goes on an idle connection when its moment comes, its latency
counted from its write to its answer's last byte; a moment with every
connection busy is counted as not offered (the server holds them all), never
queued in the client.  It says how much CPU it used, since on the bench's
machine every microsecond of it is one the server did not get.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import time
from typing import Any

import numpy as np

# the scheduler's step: each wake-up sends what fell due since the last one
TICK_S = 0.001
# a connection refused or cut is opened again after this long
RECONNECT_S = 0.05
_COUNTRIES = ["CN"] * 17 + ["US", "RU", "ES", "FR", "HK", "TW", "JP", "KR", "SG", "MY"]
_HEAD = (b"POST /v1/checkouts HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
         b"content-length: %d\r\n\r\n")
_BODY = ('{"buyer":%d,"country":"%s","channel":"%s","lines":[{"sku":%d,"qty":1}],'
         '"idempotency_key":"ovl-%d-%d"}')


class Tally:
    """What the phase saw: answers by status, accepted latencies (ms), and the moments not offered."""

    def __init__(self) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()
        self.accepted_ms: list[float] = []
        self.retry_after_missing = 0  # 429s without Retry-After
        self.not_offered = 0
        self.cut = 0  # requests whose connection closed before their answer


class Phone(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, idle: collections.deque, tally: Tally) -> None:
        self.idle, self.tally = idle, tally
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.busy = False
        self.buf = b""
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.idle.append(self)

    def send(self, request: bytes) -> None:
        self.busy, self.buf, self.sent_at = True, b"", time.perf_counter()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        head = buf[:end].lower() + b"\r\n"
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17:head.find(b"\r\n", at + 2)]) if at >= 0 else 0
        if len(buf) < end + 4 + length:
            self.buf = buf
            return
        status = int(buf[9:12])
        tally = self.tally
        tally.statuses[status] += 1
        if status == 201:
            tally.accepted_ms.append((time.perf_counter() - self.sent_at) * 1000)
        elif status == 429 and b"\r\nretry-after:" not in head:
            tally.retry_after_missing += 1
        self.busy, self.buf = False, b""
        self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.busy:
            self.tally.cut += 1


async def _open(port: int, idle: collections.deque, tally: Tally, phones: list[Phone]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            _, phone = await loop.create_connection(lambda: Phone(idle, tally), "127.0.0.1", port)
            phones.append(phone)
            return
        except OSError:
            await asyncio.sleep(RECONNECT_S)


async def offer(port: int, per_s: float, seconds: float, connections: int, sku_ids: list[int], run: int) -> dict:
    """Offers `per_s` single checkouts a second for `seconds` on up to
    `connections` connections; the tally as a dict."""
    tally = Tally()
    idle: collections.deque[Phone] = collections.deque()
    phones: list[Phone] = []
    await asyncio.gather(*[_open(port, idle, tally, phones) for _ in range(connections)])
    rng = np.random.default_rng(run)
    draws = 1 << 16
    skus = [sku_ids[int(k)] for k in rng.integers(0, len(sku_ids), draws)]
    buyers = rng.integers(1, 50_000_000, draws).tolist()
    countries = [_COUNTRIES[int(k)] for k in rng.integers(0, len(_COUNTRIES), draws)]
    channels = ["pc" if x < 0.1 else "mobile" for x in rng.random(draws)]
    loop = asyncio.get_running_loop()
    cpu0, started = os.times(), time.perf_counter()
    stop = started + seconds
    sent = 0
    while True:
        now = time.perf_counter()
        if now >= stop:
            break
        due = int((now - started) * per_s) - sent - tally.not_offered
        for _ in range(due):
            while idle and idle[0].lost:
                idle.popleft()
            if not idle:
                tally.not_offered += 1
                continue
            k = sent & (draws - 1)
            body = (_BODY % (buyers[k], countries[k], channels[k], skus[k], run, sent)).encode()
            idle.popleft().send(_HEAD % len(body) + body)
            sent += 1
        lost = [p for p in phones if p.lost]
        if lost:  # cut by the server: open as many again
            phones[:] = [p for p in phones if not p.lost]
            for _ in lost:
                loop.create_task(_open(port, idle, tally, phones))
        await asyncio.sleep(TICK_S)
    elapsed = time.perf_counter() - started
    # the answers still on their way are waited for a moment (not counted as offered later)
    deadline = time.perf_counter() + 5
    while any(p.busy and not p.lost for p in phones) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    cpu1 = os.times()
    for p in phones:
        if p.transport is not None:
            p.transport.close()
    unanswered = sum(1 for p in phones if p.busy and not p.lost)
    lat = np.array(tally.accepted_ms) if tally.accepted_ms else np.zeros(1)
    return {
        "seconds": elapsed,
        "sent": sent,
        "not_offered": tally.not_offered,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "accepted": tally.statuses[201],
        "refused": tally.statuses[429],
        "retry_after_missing": tally.retry_after_missing,
        "cut": tally.cut,
        "unanswered": unanswered,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
    }


def main() -> int:
    args = json.loads(sys.stdin.read())  # the SKU draws are too many for a command line
    try:
        import uvloop
    except ImportError:  # pragma: no cover - granian[uvloop] brings it
        run = asyncio.run
    else:
        run = uvloop.run
    result = run(offer(args["port"], args["per_s"], args["seconds"], args["connections"], args["skus"],
                       args["run"]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
