"""Storage faults in the command log (issue 24): a write or a sync that fails.

A fault-injecting file layer (storage.log.LogFiles) makes the log's n-th
write short and then fail, fail outright, or its n-th sync fail, at random
points of hypothesis command streams checked against the reference model:
what was acknowledged is recovered, the batch whose record failed is never
read (reads are refused while the fault lasts, and it is not there after the
festival is opened again), and the festival goes on as the model does.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model import co, small_catalog
from model.reference import ReferenceFestival
from test_properties import CONFIG, SETTINGS, Driver, batch_r, stream_r, views

from double11 import Festival
from double11.engine.batch import Op
from double11.errors import Double11Error, Result
from double11.storage.log import LogFiles

FAULTS = ["short write", "write", "sync"]


class FailingFiles(LogFiles):
    """The log's calls, failing at the `at`-th call of their kind (0 first) as `how` says."""

    def __init__(self, how: str, at: int) -> None:
        self.how, self.at = how, at
        self.writes = self.syncs = 0
        self.failed = False

    def write(self, fd: int, data) -> int:  # type: ignore[override]
        n, self.writes = self.writes, self.writes + 1
        if self.how == "short write" and n == self.at and len(data) > 1:
            return os.write(fd, data[: len(data) // 2])  # the rest fails on the next call
        if (self.how == "write" and n == self.at) or (self.how == "short write" and n == self.at + 1):
            self.failed = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:  # type: ignore[override]
        n, self.syncs = self.syncs, self.syncs + 1
        if self.how == "sync" and n == self.at:
            self.failed = True
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # the bytes written may or may not be on disk
        os.fsync(fd)


def refused(call, *args) -> Double11Error:
    with pytest.raises(Double11Error) as caught:
        call(*args)
    assert caught.value.code == Result.storage_unavailable, caught.value
    return caught.value


@settings(SETTINGS, max_examples=40)
@given(stream=stream_r, after=st.lists(batch_r, min_size=1, max_size=4), how=st.sampled_from(FAULTS),
       at=st.integers(0, 14))
def test_a_failed_write_or_sync_loses_nothing_acknowledged_and_shows_nothing_else(stream, after, how, at):
    with tempfile.TemporaryDirectory() as data_dir:
        festival = Festival.open(small_catalog(), data_dir=data_dir, config=CONFIG)
        files = FailingFiles(how, at)
        assert festival.log is not None
        festival.log.files = files
        d = Driver(festival, ReferenceFestival(small_catalog(), CONFIG))
        try:
            for batch in stream + after:
                try:
                    d.send(batch)  # the model takes a batch only once the engine acknowledged it
                    continue
                except Double11Error as e:
                    assert e.code == Result.storage_unavailable and files.failed
                # nothing more is taken, and nothing is read: the state holds a batch the log lost
                refused(festival.execute, [co("after-the-fault", [(101, 1)])])
                refused(festival.stats)
                refused(festival.sku, 101)
                refused(festival.ledger)
                festival.abandon()
                festival = d.engine = festival.reopen()  # with a log that writes
                d.check_views()  # exactly what was acknowledged
            closed = views(festival, d.model)
        finally:
            festival.close()
        festival = Festival.open(data_dir=data_dir)
        try:
            assert views(festival, d.model) == closed
        finally:
            festival.close()


def test_a_fault_under_the_group_commit_answers_503_and_no_later_record_is_written(tmp_path, caplog):
    """Batches in the pipeline behind the failed one (applied while it synced)
    are refused too, and the log never holds a record after the lost one."""
    festival = Festival.open(small_catalog(), data_dir=tmp_path, config=CONFIG)
    assert festival.log is not None
    acknowledged = festival.execute([co("first", [(101, 1)])])
    assert acknowledged[0]["status"] == 201
    festival.log.files = FailingFiles("sync", 0)

    async def flood():
        bodies = [b'{"buyer":%d,"country":"CN","channel":"mobile","lines":[{"sku":102,"qty":1}],'
                  b'"idempotency_key":"k%d"}' % (i % 5 + 1, i) for i in range(40)]
        answers: list = []
        for body in bodies:  # all in one turn of the loop: one or two group commits
            try:
                answers.append(festival.submit_single(Op.checkout, 0, body))
            except Double11Error as e:  # refused at once once the fault is known
                answers.append(e)
        return [a if isinstance(a, Double11Error) else await asyncio.gather(a, return_exceptions=True)
                for a in answers]

    answers = asyncio.run(flood())
    answers = [a if isinstance(a, Double11Error) else a[0] for a in answers]
    codes = {a.code if isinstance(a, Double11Error) else a[0] for a in answers}
    assert codes == {Result.storage_unavailable}, answers
    assert "STORAGE FAULT" in caplog.text and "Input/output error" in caplog.text
    assert festival.metrics()["double11_storage_fault"] == 1
    festival.abandon()
    reopened = festival.reopen()
    try:
        assert reopened.checkout(1) is not None and reopened.checkout(2) is None
        assert reopened.stats()["checkouts"] == 1
        assert reopened.ledger()["sum"] == 0
        assert reopened.execute([co("again", [(102, 1)])])[0]["status"] == 201
    finally:
        reopened.close()
    # the failed record was cut back: the next start finds no damage and the same state
    again = Festival.open(data_dir=tmp_path)
    try:
        assert again.stats()["checkouts"] == 2
    finally:
        again.close()


def test_written_through_is_where_the_log_has_the_state_and_none_after_a_fault(tmp_path):
    """What a stepped-down unit primary asks before its engine goes on as the
    standby (cluster/node.py `_let_go`): the log's last record once every
    applied batch is in it; None once one is not."""
    assert Festival.open(small_catalog(), config=CONFIG).durability.written_through() is None  # no log
    festival = Festival.open(small_catalog(), data_dir=tmp_path, config=CONFIG)
    try:
        assert festival.log is not None
        for n in range(3):
            assert festival.execute([co(f"k{n}", [(101, 1)])])[0]["status"] == 201
        assert festival.durability.written_through() == festival.log.next_seq - 1 >= 3
        festival.log.files = FailingFiles("sync", 0)
        refused(festival.execute, [co("lost", [(101, 1)])])  # applied, its record lost
        assert festival.durability.written_through() is None
    finally:
        festival.abandon()
