"""A festival whose command log is a JetStream stream, and its hot standby."""

from __future__ import annotations

from pathlib import Path

import pytest
from model import T0, co, pay, small_catalog

from double11.catalog import Catalog
from double11.cluster.nats_local import LocalNats
from double11.cluster.standby import Standby, state_hash
from double11.cluster.unit import open_unit
from double11.service.festival import Festival

pytestmark = pytest.mark.slow  # starts NATS servers


def _catalog() -> Catalog:
    return small_catalog(stock={102: 1_000_000, 104: 1_000_000})


def _trade(festival: Festival, batch: int, buyers: int = 30) -> list[int]:
    """A batch of checkouts, then a batch paying every other one; the checkout ids."""
    at = T0 + batch * 10_000
    answers = festival.execute([co(f"c{batch}-{b}", [(102, 1), (104, 2)] if b % 3 else [(102, 3)], buyer=b + 1)
                                for b in range(buyers)], now_ms=at)
    assert all(a["status"] == 201 for a in answers), answers
    made = [a["body"]["checkout"] for a in answers]
    paid = festival.execute([pay(f"p{batch}-{k}", a["body"]["checkout"], a["body"]["amount_fen"])
                             for k, a in enumerate(answers) if k % 2 == 0], now_ms=at + 500)
    assert all(p["status"] == 200 for p in paid), paid
    return made


def _views(festival: Festival, checkouts: list[int]) -> list[object]:
    return [festival.checkout(c) for c in checkouts] + [festival.order(o) for o in range(1, 3 * len(checkouts))] + \
        [festival.sku(s) for s in (101, 102, 104)] + [festival.stats(), festival.ledger()]


def test_a_unit_comes_back_from_its_stream(nats_cluster: LocalNats, tmp_path: Path):
    unit = open_unit(nats_cluster.urls, "east", tmp_path / "east", catalog=_catalog(), clock_start_ms=T0)
    try:
        checkouts = _trade(unit, 1) + _trade(unit, 2)
        unit.snapshot()  # the local snapshot covers records 1-4; the next ones only the stream holds
        checkouts += _trade(unit, 3)
        before, digest, last = _views(unit, checkouts), state_hash(unit.engine), unit.stream_log.next_seq - 1
    finally:
        unit.close()
    assert last == 6 and unit.snapshot_seq == 4
    assert before[-1]["sum"] == 0 and before[-1]["transfers"] > 0  # type: ignore[index]

    # from the local snapshot and the records after it
    again = open_unit(nats_cluster.urls, "east", tmp_path / "east")
    try:
        assert _views(again, checkouts) == before and state_hash(again.engine) == digest
        assert again.stream_log.next_seq == last + 1
    finally:
        again.close()

    # a new machine: nothing local but the catalog and the festival's day, every record from the stream
    elsewhere = open_unit(nats_cluster.urls, "east", tmp_path / "elsewhere", catalog=_catalog(), clock_start_ms=T0)
    try:
        assert _views(elsewhere, checkouts) == before and state_hash(elsewhere.engine) == digest
        assert elsewhere.ledger()["sum"] == 0
        more = _trade(elsewhere, 4)  # and it goes on where the stream ends
        assert more[0] == checkouts[-1] + 1
    finally:
        elsewhere.close()


def test_the_standby_holds_the_primarys_state_at_each_record(nats_cluster: LocalNats, tmp_path: Path):
    primary = open_unit(nats_cluster.urls, "west", tmp_path / "west", catalog=_catalog(), clock_start_ms=T0)
    standby = Standby.from_snapshot(nats_cluster.urls, "west", tmp_path / "west")
    try:
        assert standby.state_hash() == state_hash(primary.engine)
        hashes = set()
        for batch in range(1, 5):
            _trade(primary, batch)
            seq = primary.stream_log.next_seq - 1
            assert standby.wait_for(seq, timeout_s=30), standby.error
            assert standby.seq == seq
            digest = state_hash(primary.engine)
            assert standby.state_hash() == digest
            hashes.add(digest)
        assert len(hashes) == 4  # the digests tell states apart
        assert standby.engine.ledger.escrow == primary.engine.ledger.escrow
    finally:
        standby.close()
        primary.close()
    assert standby.error is None
