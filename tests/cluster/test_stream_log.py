"""StreamLog: a unit's command log on a 3-replica JetStream stream."""

from __future__ import annotations

import struct

import pytest

from double11.cluster.nats_local import LocalNats
from double11.cluster.stream_log import StreamLog, StreamLogError, StreamReader, stream_replay

pytestmark = pytest.mark.slow  # starts NATS servers


def test_records_come_back_in_order_with_their_time(nats_cluster: LocalNats):
    log = StreamLog(nats_cluster.urls, "u1", 1)
    try:
        seqs = [log.append(1_000 + k, bytes([k]) * (k + 1)) for k in range(5)]
        log.sync()
        seqs += [log.append(2_000, b"last")]
        log.sync()
    finally:
        log.close()
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert log.syncs == 2 and log.next_seq == 7
    assert log.bytes_written == sum(16 + k + 1 for k in range(5)) + 16 + 4
    everything = [(seq, now_ms, bytes(payload)) for seq, now_ms, payload in stream_replay(nats_cluster.urls, "u1", 0)]
    assert everything == [(k + 1, 1_000 + k, bytes([k]) * (k + 1)) for k in range(5)] + [(6, 2_000, b"last")]
    assert [seq for seq, _, _ in stream_replay(nats_cluster.urls, "u1", 4)] == [5, 6]
    assert list(stream_replay(nats_cluster.urls, "u1", 6)) == []


def test_the_stream_is_replicated_on_three_nodes_and_a_new_unit_starts_empty(nats_cluster: LocalNats):
    assert list(stream_replay(nats_cluster.urls, "fresh", 0)) == []
    log = StreamLog(nats_cluster.urls, "fresh", 1)
    try:
        log.append(1, b"a")
        log.sync()

        async def info():
            return await log._js.stream_info(log.stream)

        found = log._io.call(info(), 10)
    finally:
        log.close()
    assert found.config.num_replicas == 3
    assert found.state.messages == 1 and found.state.last_seq == 1
    assert found.cluster is not None and found.cluster.leader in {node.name for node in nats_cluster.nodes}


def test_a_log_that_does_not_go_on_from_the_streams_end_is_refused(nats_cluster: LocalNats):
    log = StreamLog(nats_cluster.urls, "u2", 1)
    log.append(1, b"a")
    log.append(2, b"b")
    log.close()
    with pytest.raises(StreamLogError, match="ends at record 2, but this log goes on from record 2"):
        StreamLog(nats_cluster.urls, "u2", 2)
    StreamLog(nats_cluster.urls, "u2", 3).close()


def test_a_resent_record_is_a_duplicate_and_one_past_a_gap_is_refused(nats_cluster: LocalNats):
    log = StreamLog(nats_cluster.urls, "u3", 1)
    try:
        for k in range(3):
            log.append(k, b"x")
        log.sync()
        assert not log._unconfirmed  # confirmed records leave it

        async def publish(seq: int, msg_id_seq: int):
            headers = {"Nats-Msg-Id": f"u3:{msg_id_seq}:{log.writer}", "Nats-Expected-Last-Sequence": str(seq - 1)}
            try:
                return await log._js.publish(log.subject, struct.pack("<Qq", seq, 0), headers=headers)
            except Exception as exc:  # noqa: BLE001
                return exc

        again = log._io.call(publish(2, 2), 10)  # record 2 sent again, as after a lost ack
        assert again.duplicate and again.seq == 2
        past_gap = log._io.call(publish(5, 5), 10)  # record 5 while the stream ends at 3
        assert getattr(past_gap, "err_code", None) == 10071
    finally:
        log.close()
    assert [seq for seq, _, _ in stream_replay(nats_cluster.urls, "u3", 0)] == [1, 2, 3]


def test_a_second_writer_is_fenced_off(nats_cluster: LocalNats):
    first = StreamLog(nats_cluster.urls, "u4", 1)
    second = None
    try:
        for k in range(3):
            first.append(k, b"first")
        first.sync()
        second = StreamLog(nats_cluster.urls, "u4", 4)  # believes it leads from record 4 on
        first.append(3, b"first")
        first.sync()
        second.append(3, b"second")
        with pytest.raises(StreamLogError, match="does not end at record 3 and holds no record 4 of this log's"):
            second.sync()
    finally:
        first.close()
        if second is not None:
            second.cut_back()
    assert [bytes(p) for _, _, p in stream_replay(nats_cluster.urls, "u4", 0)] == [b"first"] * 4


def test_reading_back_refuses_a_record_out_of_place(nats_cluster: LocalNats):
    log = StreamLog(nats_cluster.urls, "u5", 1)
    try:
        log.append(0, b"a")
        log.sync()

        async def stray():
            # a record 9 with no expected-sequence header, as a writer that skipped the fence would send
            return await log._js.publish(log.subject, struct.pack("<Qq", 9, 0) + b"z")

        assert log._io.call(stray(), 10).seq == 2
    finally:
        log._shut()
    with pytest.raises(StreamLogError, match="gave record 9 at position 2 where record 2 belongs"):
        list(stream_replay(nats_cluster.urls, "u5", 0))


def test_a_record_over_the_message_limit_is_refused_before_it_is_sent(nats_cluster: LocalNats,
                                                                      monkeypatch: pytest.MonkeyPatch):
    from double11 import limits

    monkeypatch.setattr(limits, "nats_payload_bytes_max", 100)
    log = StreamLog(nats_cluster.urls, "u6", 1)
    try:
        with pytest.raises(StreamLogError, match="over the stream's 100"):
            log.append(0, b"x" * 100)
        assert log.next_seq == 1
    finally:
        log.close()


def test_a_reader_follows_records_as_they_come(nats_cluster: LocalNats):
    reader = StreamReader(nats_cluster.urls, "u7", 0)
    log = StreamLog(nats_cluster.urls, "u7", 1)
    try:
        assert reader.fetch(wait_s=0.2) == []
        log.append(5, b"one")
        log.sync()
        got = reader.fetch()
        assert [(seq, now_ms, bytes(p)) for seq, now_ms, p in got] == [(1, 5, b"one")]
    finally:
        log.close()
        reader.close()
