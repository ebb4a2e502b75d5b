"""The rebalancer's journal in its NATS bucket (rebalancer_node.NatsUnits):
a round's transfers kept as one entry until removed, and an entry an older
rebalancer left (one transfer) read as a round of one."""

from __future__ import annotations

import msgspec
import pytest

from double11.cluster.nats_local import LocalNats
from double11.cluster.rebalancer import TEMPLATE, Transfer
from double11.cluster.rebalancer_node import TRANSFERS_BUCKET, NatsUnits
from double11.cluster.slots import SlotMap, save_slot_map
from double11.cluster.stream_log import ask_cluster

pytestmark = pytest.mark.slow  # starts NATS servers


def test_the_journal_keeps_a_round_whole_and_reads_an_older_single_transfer(nats_cluster: LocalNats):
    save_slot_map(nats_cluster.urls, SlotMap.even(["u0", "u1"]))
    units = NatsUnits(nats_cluster.urls)
    try:
        assert units.unfinished() == []
        round_ = [Transfer("e-1", 102, 0, 1, 3), Transfer("e-2", 7, 1, 0, 2, TEMPLATE)]
        units.put("round-e-1", round_)
        assert units.unfinished() == [round_]

        async def older(nc):  # type: ignore[no-untyped-def]
            kv = await nc.jetstream().key_value(TRANSFERS_BUCKET)
            await kv.put("d-9", msgspec.json.encode(Transfer("d-9", 101, 1, 0, 1)))

        ask_cluster(nats_cluster.urls, "test-older", older)
        assert sorted(units.unfinished(), key=len) == [[Transfer("d-9", 101, 1, 0, 1)], round_]
        units.remove("round-e-1")
        units.remove("d-9")
        assert units.unfinished() == []
    finally:
        units.close()
