"""The cluster's client against a unit's primary that dies while it holds a request (client.py)."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from double11 import limits
from double11.cluster.client import answer_while_alive
from double11.cluster.nats_local import LocalNats
from double11.cluster.stream_log import connect
from double11.cluster.unit_requests import ALIVE, unit_subject

pytestmark = pytest.mark.slow  # starts NATS servers


def test_a_try_ends_once_nobody_serves_the_unit_not_when_its_wait_runs_out(nats_cluster: LocalNats,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """A primary killed after it took a request never answers it: the try
    waits on while the unit is served, and ends (no responders, sent again
    by send_to_unit) once the primary's connection is gone, long before
    unit_answer_s_max."""
    monkeypatch.setattr(limits, "unit_answer_s_max", 120.0)

    async def scenario() -> None:
        primary, client = await connect(nats_cluster.urls), await connect(nats_cluster.urls)
        taken = asyncio.Event()

        async def take(msg) -> None:  # takes the batch and never answers it
            taken.set()

        async def alive(msg) -> None:
            await primary.publish(msg.reply, b"")

        await primary.subscribe(unit_subject("u9", "batch"), cb=take)
        await primary.subscribe(unit_subject("u9", ALIVE), cb=alive)
        await primary.flush()
        # the client may be on another node, which learns of the subscriptions over the
        # cluster's routes a moment later: no responders until then
        for _ in range(100):
            try:
                await client.request(unit_subject("u9", ALIVE), b"", timeout=1.0)
                break
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.1)
        trying = asyncio.ensure_future(answer_while_alive(client, "u9", "batch", b"a batch"))
        await asyncio.wait_for(taken.wait(), 30)
        await asyncio.sleep(limits.unit_alive_check_s * 2.5)  # asked twice whether u9 is served: it is
        assert not trying.done()
        await primary.close()  # a SIGKILL's closed socket: the unit's subscriptions go with it
        with pytest.raises(nats.errors.NoRespondersError):
            await asyncio.wait_for(trying, 30)
        await client.close()

    asyncio.run(scenario())
