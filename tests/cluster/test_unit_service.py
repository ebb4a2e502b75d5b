"""A unit's node served over NATS (double11/cluster/unit_service.py), with
real processes: binary batches, the stock report, the state, the cluster's
status and the figures; the primary SIGKILLed while batches come over NATS."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import nats.errors
import numpy as np
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from unit_nodes import CHECKOUTS_PER_BATCH, UnitNode, checkouts_batch, primary_and_standby, replayed_hash

from double11 import limits
from double11.cluster import figures
from double11.cluster.nats_local import LocalNats
from double11.cluster.stream_log import LoopThread, connect
from double11.cluster.unit_requests import ask, ask_batch, ask_state, ask_status, ask_stock, gather, unit_subject
from double11.engine.encode import encode_commands
from double11.engine.wire import decode_results
from double11.errors import Double11Error, Result

pytestmark = pytest.mark.slow  # starts NATS servers and engine processes

_NATS_ONLY = "--no-stdin"
_SKU_ROW = 1  # SKU 102's row in the small catalog
# a batch not answered this soon is sent again (same keys: answered once); a
# primary killed while it held one never answers it
_RESEND_S = 2.0
_T = TypeVar("_T")


def _body(b: int) -> bytes:
    return encode_commands(checkouts_batch(b)).to_bytes()


class _Asker:
    """A NATS connection on a loop of its own, for the test's questions."""

    def __init__(self, urls: list[str]) -> None:
        self.io = LoopThread("test-asker")
        self.nc: Client = self.io.call(connect(urls), 30)

    def __call__(self, question: Callable[[Client], Coroutine[Any, Any, _T]], timeout_s: float = 120) -> _T:
        return self.io.call(question(self.nc), timeout_s)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.io.call(self.nc.close(), 10)
        self.io.close()


@pytest.fixture
def asker(nats_cluster: LocalNats) -> Any:
    asking = _Asker(nats_cluster.urls)
    yield asking
    asking.close()


async def _figures_at(nc: Client, unit: str, seq: int, timeout_s: float) -> figures.UnitFigures:
    """The unit's first published figures that include record seq."""
    found: asyncio.Future[figures.UnitFigures] = asyncio.get_running_loop().create_future()

    async def take(msg: Msg) -> None:
        published = figures.decode(msg.data)
        if published.seq >= seq and not found.done():
            found.set_result(published)

    subscription = await nc.subscribe(figures.figures_subject(unit), cb=take)
    try:
        return await asyncio.wait_for(found, timeout_s)
    finally:
        await subscription.unsubscribe()


def _status_when(asker: _Asker, settled: Callable[[dict[int, dict[str, Any]]], bool],
                 timeout_s: float = 60) -> dict[int, dict[str, Any]]:
    """The nodes' status answers by pid, asked again until `settled` holds them."""
    deadline = time.monotonic() + timeout_s
    while True:
        answers = {a["pid"]: a for a in asker(lambda nc: ask_status(nc))}
        if settled(answers) or time.monotonic() > deadline:
            return answers


def test_a_primary_answers_batches_stock_state_and_status_over_nats(nats_cluster: LocalNats, tmp_path: Path,
                                                                   nodes: list[UnitNode], asker: _Asker):
    primary, standby = primary_and_standby(nats_cluster.urls, tmp_path, nodes, "east", _NATS_ONLY)

    # batches sent together: the group commit gathers them; every checkout is made, once
    batches = 8
    async def together(nc: Client) -> list[bytes]:
        return list(await asyncio.gather(*(ask_batch(nc, "east", _body(b)) for b in range(batches))))

    answers = asker(together)
    results = [decode_results(answer) for answer in answers]
    assert [set(r["code"].tolist()) for r in results] == [{Result.ok}] * batches
    checkouts = np.concatenate([r["ref"] for r in results])
    assert sorted(checkouts.tolist()) == list(range(1, batches * CHECKOUTS_PER_BATCH + 1))

    # a request refused whole: its code in the header, the JSON error body saying why
    with pytest.raises(Double11Error) as refused:
        asker(lambda nc: ask_batch(nc, "east", b"not a batch"))
    assert refused.value.code == Result.invalid_request
    assert "binary batch" in str(refused.value)

    state = asker(lambda nc: ask_state(nc, "east", with_hash=True))
    assert state["unit"] == "east" and state["role"] == "primary" and state["pid"] == primary.pid
    assert 1 <= state["seq"] <= batches  # one record per group of batches committed together
    print(f"{batches} batches sent at once took {state['seq']} stream records")
    assert set(asker(lambda nc: ask_state(nc, "east"))) == {"unit", "role", "pid", "seq"}
    last, digest, made = replayed_hash(nats_cluster.urls, "east", tmp_path / "primary")
    assert (last, digest, made) == (state["seq"], state["state_hash"], batches * CHECKOUTS_PER_BATCH)

    stock = asker(lambda nc: ask_stock(nc, "east"))
    assert stock.seq == state["seq"]
    # the checkouts hold their units (reserved, not sold until paid)
    assert (stock.stocked[_SKU_ROW], stock.sold[_SKU_ROW]) == (10**8, 0)
    assert stock.available[_SKU_ROW] == 10**8 - batches * CHECKOUTS_PER_BATCH
    # asked again with the report held: only what changed comes, the same report once applied
    again = asker(lambda nc: ask_stock(nc, "east", since=stock))
    assert again.report_id != stock.report_id and again.available.tolist() == stock.available.tolist()
    with pytest.raises(Double11Error, match="since"):
        asker(lambda nc: ask(nc, "east", "stock", b'{"since": "x"}'))

    # the standby does not answer the unit's requests: one reply, the primary's
    replies = asker(lambda nc: gather(nc, unit_subject("east", "state"), b"", wait_s=1.0))
    assert len(replies) == 1 and b'"pid": %d' % primary.pid in replies[0].data

    # both answer the cluster's status; the standby has caught up with the stream
    def caught_up(answers: dict[int, dict[str, Any]]) -> bool:
        return standby.pid in answers and answers[standby.pid]["lag"] == 0

    answers_by_pid = _status_when(asker, caught_up)
    assert set(answers_by_pid) == {primary.pid, standby.pid}
    assert answers_by_pid[primary.pid]["role"] == "primary" and answers_by_pid[standby.pid]["role"] == "standby"
    assert answers_by_pid[primary.pid]["seq"] == answers_by_pid[standby.pid]["seq"] == state["seq"]
    assert answers_by_pid[primary.pid]["lag"] == 0
    assert answers_by_pid[standby.pid]["data"] == str(tmp_path / "standby")

    # the primary publishes the unit's figures
    published = asker(lambda nc: _figures_at(nc, "east", state["seq"], timeout_s=30))
    assert published.seq == state["seq"]
    assert published.scalars[figures.SCALARS.index("checkouts")] == batches * CHECKOUTS_PER_BATCH


class _NatsLoad:
    """Batches of checkouts over NATS, one after another, each sent again
    (same keys) until a primary answers it; each answer kept."""

    def __init__(self, urls: list[str], unit: str) -> None:
        self.unit = unit
        self.acknowledged: dict[int, bytes] = {}
        self.answered_at: dict[int, float] = {}
        self.refused: list[Double11Error] = []
        self.resent = 0
        self._stop = threading.Event()
        self._io = LoopThread("test-nats-load")
        self._running = self._io.submit(self._run(urls))

    async def _run(self, urls: list[str]) -> None:
        nc = await connect(urls)
        try:
            b = 0
            while not self._stop.is_set():
                answer = await self._until_answered(nc, _body(b))
                if answer is None:
                    return
                self.acknowledged[b], self.answered_at[b] = answer, time.monotonic()
                b += 1
        finally:
            await nc.close()

    async def _until_answered(self, nc: Client, body: bytes) -> bytes | None:
        while not self._stop.is_set():
            try:
                return await ask_batch(nc, self.unit, body, timeout_s=_RESEND_S)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                pass  # no primary now (or it died holding this batch): a standby takes over
            except Double11Error as exc:
                if exc.code != Result.storage_unavailable:  # the old primary's lease gone: not an answer
                    self.refused.append(exc)
                    return None
            self.resent += 1
            await asyncio.sleep(0.05)
        return None

    def wait_batches(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acknowledged) < n:
            assert time.monotonic() < deadline, f"{len(self.acknowledged)} batches acknowledged of {n}"
            assert not self._running.done() and not self.refused, self.refused
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._running.result(60)
        self._io.close()


def test_the_standby_answers_batches_after_the_primary_is_killed(nats_cluster: LocalNats, tmp_path: Path,
                                                                 nodes: list[UnitNode], asker: _Asker):
    primary, standby = primary_and_standby(nats_cluster.urls, tmp_path, nodes, "west", _NATS_ONLY)
    load = _NatsLoad(nats_cluster.urls, "west")
    try:
        load.wait_batches(10, timeout_s=120)
        before = len(load.acknowledged)
        killed_at = time.monotonic()
        primary.signal(signal.SIGKILL)
        load.wait_batches(before + 3, timeout_s=120)
    finally:
        load.stop()
    assert not load.refused and primary.wait(10) == -signal.SIGKILL
    first_after = min(at for at in load.answered_at.values() if at > killed_at)
    print(f"failover over NATS: the standby answered a batch {first_after - killed_at:.2f} s after the primary's "
          f"SIGKILL ({before} batches answered before, {load.resent} requests sent again)")
    assert first_after - killed_at <= limits.unit_failover_s_max

    # the batches sent again with the same idempotency keys are answered with their first results
    last = max(load.acknowledged)
    for b in (before - 1, 0, last):
        assert asker(lambda nc, b=b: ask_batch(nc, "west", _body(b))) == load.acknowledged[b]

    # the new primary's state is a replay of the stream, holding every batch answered, once
    state = asker(lambda nc: ask_state(nc, "west", with_hash=True))
    assert state["pid"] == standby.pid and state["role"] == "primary"
    stream_last, digest, made = replayed_hash(nats_cluster.urls, "west", tmp_path / "primary")
    assert (stream_last, digest) == (state["seq"], state["state_hash"])
    assert made == len(load.acknowledged) * CHECKOUTS_PER_BATCH
    answers = _status_when(asker, lambda answers: standby.pid in answers)
    assert set(answers) == {standby.pid} and answers[standby.pid]["role"] == "primary"
