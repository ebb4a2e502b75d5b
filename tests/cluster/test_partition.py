"""A network partition that isolates one NATS node (issue 25), with real processes.

Three nats-server processes, each in a network namespace of its own
(double11/cluster/netns.py), their cluster routes crossing a bridge; the test
cuts the link of one, n1, while two units take checkouts and payments:
- n1 leads both units' streams when it is cut (the hardest case: a leader
  that takes proposals it can never commit);
- unit "north" runs on this process's side, its client connected to n2 and
  n3: the majority.  It goes on being acknowledged once they elect a stream
  leader (a batch refused meanwhile by a storage fault is sent again once the
  unit reopened, as `double11 serve` reopens it);
- unit "south" was opened inside n1's namespace, its client connected to n1:
  a writer on the minority's side.  Its batch is refused (503
  storage_unavailable) and none of it is acknowledged; after the heal it
  reopens and sends the same batch again.

After the heal, for each unit: every acknowledged checkout is there exactly
once and no other (the unit's books are those its answers said); per SKU,
sold <= stocked; the ledger sums to zero; GMV equals the paid checkouts.  And
no replica diverges, checked on each node's own copy: the three nodes'
stores report the same stream (messages, bytes, first and last record, each
from its own monitoring endpoint); then each node in turn is made the
stream's leader (a stepdown naming it as preferred) and the records read
from it (a leader answers a message get from its own store) are the same
bytes with the same message ids, whose replay from the unit's snapshot gives
the unit's own state hash.  Killing the other two nodes instead would leave
a stream of three replicas without a quorum, and without a leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from cluster_processes import gone  # tests/cluster/cluster_processes.py
from model import T0, co, code_of, pay, small_catalog
from nats.aio.client import Client

from double11 import limits
from double11.catalog import Catalog
from double11.cluster.nats_local import LocalNats
from double11.cluster.netns import HostNetwork, why_unavailable
from double11.cluster.standby import state_hash
from double11.cluster.stream_log import RECORD_HEAD, ask_cluster, stream_name
from double11.cluster.unit import UnitFestival, open_unit
from double11.engine.batch import CommandBatch
from double11.errors import Double11Error, Result
from double11.service.durability import latest_snapshot
from double11.service.festival import Festival

pytestmark = pytest.mark.slow  # starts NATS servers in network namespaces

ISOLATED = 0  # n1
# a stream without its majority is a storage fault after this long: short, so that south is refused
# soon, and long enough for the majority's election to come first most of the time
RETRY_S = 10.0
SCARCE_SKU = 101  # sells out during the test: sold <= stocked is tested where it binds
CHECKOUTS_PER_BATCH = 30
BATCHES_BEFORE = 6
BATCHES_WHILE_CUT = 4
BATCHES_AFTER = 4
WAIT_S_MAX = 120  # any one wait for the cluster (an election, a catch-up, a reopen); a hang fails here


def _catalog() -> Catalog:
    return small_catalog(stock={SCARCE_SKU: 150, 102: 10**6, 103: 10**6, 104: 10**6, 105: 10**6})


# ------------------------------------------------------------------ fixtures
def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


@pytest.fixture
def partitioned(tmp_path: Path) -> Iterator[tuple[HostNetwork, LocalNats]]:
    """Three hosts on a bridge, a NATS node on each; all removed afterwards, passed or failed."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with HostNetwork(3) as network:
        cluster = LocalNats(tmp_path / "nats", network=network).start()
        pids = cluster.pids()
        try:
            yield network, cluster
        finally:
            pids += cluster.pids()
            cluster.stop()
        assert all(gone(pid) for pid in pids), f"nats-server processes left: {[p for p in pids if not gone(p)]}"
    assert not _namespaces() & set(network.namespaces)


def test_the_hosts_network_is_removed_when_its_user_fails():
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with pytest.raises(RuntimeError, match="the test failed"), HostNetwork(2) as network:
        assert set(network.namespaces) <= _namespaces()
        network.cut(1)
        raise RuntimeError("the test failed")
    assert not _namespaces() & set(network.namespaces)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert network.bridge not in links and not any(link in links for link in network.links)


# ------------------------------------------------------------------ trading
class Shoppers:
    """A unit's buyers: batches of random checkouts (the scarce SKU among
    their lines) with payments of earlier ones; keeps what the answers acknowledged."""

    def __init__(self, prefix: str, buyers: range, seed: int) -> None:
        self.prefix, self.buyers = prefix, buyers
        self.rng = random.Random(seed)
        self.batches = 0
        self.checkouts: dict[int, dict[str, Any]] = {}  # acknowledged: checkout id -> its command
        self.amounts: dict[int, int] = {}
        self.paid: set[int] = set()
        self.unpaid: list[int] = []
        self.sold_out = 0  # checkouts refused: out of stock

    def batch(self) -> tuple[list[dict[str, Any]], int]:
        """The next batch's commands and its time."""
        self.batches += 1
        b = self.batches
        commands = [co(f"{self.prefix}{b}-{k}", [(sku, self.rng.randint(1, 2)) for sku in
                                                  self.rng.sample([SCARCE_SKU, 102, 103, 104, 105], 2)],
                       buyer=self.rng.choice(self.buyers)) for k in range(CHECKOUTS_PER_BATCH)]
        paying = self.unpaid[:self.rng.randint(0, len(self.unpaid))]
        commands += [pay(f"{self.prefix}{b}-pay-{c}", c, self.amounts[c]) for c in paying]
        return commands, T0 + 50 * b

    def acknowledged(self, commands: list[dict[str, Any]], answers: list[dict[str, Any]]) -> None:
        for command, answer in zip(commands, answers, strict=True):
            if command["op"] == "pay":
                assert answer["status"] == 200, answer
                self.paid.add(command["checkout"])
            elif answer["status"] == 201:
                checkout = answer["body"]["checkout"]
                assert checkout not in self.checkouts, (command, answer)  # never one checkout for two keys
                self.checkouts[checkout], self.amounts[checkout] = command, answer["body"]["amount_fen"]
                self.unpaid.append(checkout)
            else:
                assert code_of(answer) == "out_of_stock", answer
                self.sold_out += 1
        self.unpaid = [c for c in self.unpaid if c not in self.paid]


def reopened(open_again: Callable[[], Festival]) -> UnitFestival:
    """The unit opened again after a storage fault, tried every limits.storage_retry_s as serve does
    (serve tries again on OSError and ValueError; reading a stream whose replica is still catching
    up can also raise the client's own 503, nats.js.errors.ServiceUnavailableError)."""
    deadline = time.monotonic() + WAIT_S_MAX
    while True:
        try:
            unit = open_again()
            assert isinstance(unit, UnitFestival)
            return unit
        except (OSError, ValueError, nats.errors.Error):
            if time.monotonic() > deadline:
                raise
            time.sleep(limits.storage_retry_s)


def execute_through_faults(unit: UnitFestival, commands: list[dict[str, Any]], now_ms: int,
                           reopen: Callable[[UnitFestival], Festival]
                           ) -> tuple[UnitFestival, list[dict[str, Any]], int]:
    """The batch's answers, sent again (the same keys) after each storage fault once
    the unit reopened; the unit that answered, and how many faults it took."""
    faults = 0
    while True:
        try:
            return unit, unit.execute(commands, now_ms=now_ms), faults
        except Double11Error as exc:
            if exc.code != Result.storage_unavailable or faults >= 10:
                raise
            faults += 1
            unit.abandon()
            unit = reopened(functools.partial(reopen, unit))


class Trading:
    """Shoppers' batches executed on a unit on a thread of its own, each kept with when it was
    first sent and when it was acknowledged."""

    def __init__(self, unit: UnitFestival, shoppers: Shoppers) -> None:
        self.unit, self.shoppers = unit, shoppers
        self.acks: list[tuple[float, float]] = []
        self.faults = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="trading")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                commands, now_ms = self.shoppers.batch()
                sent = time.monotonic()
                self.unit, answers, faults = execute_through_faults(self.unit, commands, now_ms,
                                                                    lambda u: u.reopen())
                self.shoppers.acknowledged(commands, answers)
                with self._progress:
                    self.acks.append((sent, time.monotonic()))
                    self.faults += faults
                    self._progress.notify_all()
        except BaseException as exc:  # noqa: BLE001 (the test says it)
            with self._progress:
                self.error = exc
                self._progress.notify_all()

    def wait_acks(self, count: int) -> None:
        with self._progress:
            self._progress.wait_for(lambda: len(self.acks) >= count or self.error is not None, WAIT_S_MAX)
            if self.error is not None:
                raise self.error
            assert len(self.acks) >= count, f"{len(self.acks)} batches acknowledged of {count} within {WAIT_S_MAX} s"

    def stop(self) -> UnitFestival:
        """Stops after the batch under way; the unit as it is now."""
        self._stop.set()
        self._thread.join()
        return self.unit

    def end(self) -> UnitFestival:
        unit = self.stop()
        if self.error is not None:
            raise self.error
        return unit


def let_go(unit: UnitFestival) -> None:
    """Closes a unit; one met by a storage fault is abandoned (its log takes nothing more)."""
    if unit.durability.log_failure is None:
        unit.close()
    else:
        with contextlib.suppress(Exception):  # abandoned already, or half way
            unit.abandon()


# ------------------------------------------------------------------ the streams, node by node
async def _stream_leader(nc: Client, stream: str) -> str | None:
    try:
        info = await nc.jetstream(timeout=2).stream_info(stream)
    except (nats.errors.Error, TimeoutError):
        return None  # no leader right now (an election)
    return info.cluster.leader if info.cluster is not None else None


def lead_from(urls: list[str], unit: str, server: str) -> None:
    """Moves the unit's stream leader to `server` (a stepdown naming it as preferred)."""
    stream = stream_name(unit)
    request = json.dumps({"placement": {"preferred": server}}).encode()

    async def move(nc: Client) -> None:
        deadline = time.monotonic() + WAIT_S_MAX
        while (leader := await _stream_leader(nc, stream)) != server:
            assert time.monotonic() < deadline, f"{stream} is led by {leader}, not {server}, after {WAIT_S_MAX} s"
            if leader is not None:
                with contextlib.suppress(nats.errors.Error, TimeoutError):  # answered or not, the loop looks again
                    await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=2)
            await asyncio.sleep(0.2)

    ask_cluster(urls, f"move-{unit}", move)


def stored_by(cluster: LocalNats, unit: str) -> list[tuple[int, int, int, int] | None]:
    """Each node's own copy of the unit's stream as its monitoring endpoint says:
    (messages, bytes, first record, last record); None where it does not answer."""
    copies: list[tuple[int, int, int, int] | None] = []
    for node in cluster.nodes:
        seen = None
        for account in (cluster.monitor(node, "jsz?accounts=true&streams=true") or {}).get("account_details", []):
            for stream in account.get("stream_detail") or []:
                if stream["name"] == stream_name(unit):
                    state = stream["state"]
                    seen = (state["messages"], state["bytes"], state["first_seq"], state["last_seq"])
        copies.append(seen)
    return copies


def read_from_leader(urls: list[str], unit: str, leader: str) -> list[tuple[int, str, bytes]]:
    """Every record of the unit's stream (sequence, message id, bytes) as `leader`'s store holds it."""
    stream = stream_name(unit)

    async def read(nc: Client) -> list[tuple[int, str, bytes]]:
        js = nc.jetstream(timeout=limits.stream_replay_wait_s)
        info = await js.stream_info(stream)
        assert info.cluster is not None and info.cluster.leader == leader
        records = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            records.append((msg.seq or 0, (msg.headers or {}).get("Nats-Msg-Id", ""), bytes(msg.data or b"")))
        assert await _stream_leader(nc, stream) == leader  # all of it read from that node
        return records

    return ask_cluster(urls, f"read-{unit}", read)


def replayed_hash(data_dir: Path, records: list[tuple[int, str, bytes]]) -> str:
    """The state hash of the unit's snapshot in data_dir with the records after it applied."""
    found = latest_snapshot(data_dir)
    assert found is not None
    seq, engine = found
    for record_seq, _, data in records[seq:]:
        head_seq, now_ms = RECORD_HEAD.unpack_from(data)
        assert record_seq == head_seq == seq + 1
        engine.apply(CommandBatch.from_bytes(memoryview(data)[RECORD_HEAD.size:], trusted=True), now_ms)
        seq = record_seq
    return state_hash(engine)


def wait_replicas_agree(cluster: LocalNats, units: dict[str, int]) -> None:
    """Until each node's own copy of each unit's stream holds records 1 to units[unit]."""
    deadline = time.monotonic() + WAIT_S_MAX
    while True:
        copies = {unit: stored_by(cluster, unit) for unit in units}
        if all(len(set(seen)) == 1 and seen[0] is not None and seen[0][2:] == (1, units[unit])
               for unit, seen in copies.items()):
            return
        assert time.monotonic() < deadline, f"the replicas did not agree within {WAIT_S_MAX} s: {copies}"
        time.sleep(0.2)


def check_books(unit: UnitFestival, shoppers: Shoppers) -> None:
    """Every acknowledged checkout once, none other; sold <= stocked; ledger zero; GMV = the paid."""
    stats = unit.stats()
    assert stats["checkouts"] == len(shoppers.checkouts)
    for checkout, command in shoppers.checkouts.items():
        view = unit.checkout(checkout)
        assert view is not None and view["buyer"] == command["buyer"]
        assert view["amount_fen"] == shoppers.amounts[checkout]
        assert view["status"] == ("paid" if checkout in shoppers.paid else "reserved")
        assert sorted((line["sku"], line["qty"]) for line in view["lines"]) == \
            sorted((line["sku"], line["qty"]) for line in command["lines"])
    for sku in (SCARCE_SKU, 102, 103, 104, 105):
        s = unit.sku(sku)
        assert s is not None and min(s["stock"], s["reserved"], s["sold"]) >= 0, s
        assert s["stock"] + s["reserved"] + s["sold"] == s["stocked"] and s["sold"] <= s["stocked"], s
    assert shoppers.sold_out > 0  # the scarce SKU sold out: the bound was reached
    assert unit.ledger()["sum"] == 0
    assert stats["gmv_fen"] == sum(shoppers.amounts[c] for c in shoppers.paid) > 0


# ------------------------------------------------------------------ the test
def test_the_isolated_leaders_side_refuses_writes_and_after_the_heal_no_replica_diverges(
        partitioned: tuple[HostNetwork, LocalNats], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    network, cluster = partitioned
    monkeypatch.setattr(limits, "stream_retry_s_max", RETRY_S)
    isolated = cluster.nodes[ISOLATED]
    majority = [node.url for node in cluster.nodes if node is not isolated]
    north = open_unit(majority, "north", tmp_path / "north", catalog=_catalog(), clock_start_ms=T0)
    south = network.run_in(ISOLATED, lambda: open_unit([isolated.url], "south", tmp_path / "south",
                                                       catalog=_catalog(), clock_start_ms=T0))
    live: dict[str, UnitFestival | None] = {"north": north, "south": south}
    trading: Trading | None = None
    try:
        for name in ("north", "south"):
            lead_from(cluster.urls, name, isolated.name)
        north_shoppers, south_shoppers = Shoppers("n", range(1, 301), 1), Shoppers("s", range(1001, 1301), 2)
        for _ in range(BATCHES_BEFORE):
            commands, now_ms = south_shoppers.batch()
            south_shoppers.acknowledged(commands, south.execute(commands, now_ms=now_ms))
        confirmed = south.stream_log.next_seq - 1
        trading = Trading(north, north_shoppers)
        trading.wait_acks(BATCHES_BEFORE)

        # the partition: n1, leading both streams, reaches nobody and nobody reaches it
        network.cut(ISOLATED)
        cut_at = time.monotonic()  # a batch sent from now on cannot have reached n1
        refused_batch, refused_ms = south_shoppers.batch()
        with pytest.raises(Double11Error) as refused:
            south.execute(refused_batch, now_ms=refused_ms)
        refused_after_s = time.monotonic() - cut_at
        assert refused.value.code == Result.storage_unavailable
        assert f"did not take record {confirmed + 1}" in str(refused.value)
        south.abandon()
        live["south"] = None
        at_refusal = len(trading.acks)
        trading.wait_acks(at_refusal + BATCHES_WHILE_CUT)  # the majority takes writes meanwhile
        assert cluster.monitor(isolated, "varz") is None  # still cut off from this side
        assert ask_cluster(majority, "leader", lambda nc: _stream_leader(nc, stream_name("north"))) != isolated.name

        network.heal(ISOLATED)
        healed_at = time.monotonic()
        trading.wait_acks(len(trading.acks) + BATCHES_AFTER)
        north = live["north"] = trading.end()
        # south reopens on its side and sends its refused batch again: the same keys, so it is taken
        # once whether or not its first copy reached the stream (it was never acknowledged)
        south = live["south"] = reopened(lambda: network.run_in(ISOLATED, south.reopen))
        assert south.stream_log.next_seq - 1 in (confirmed, confirmed + 1)
        for k in range(1 + BATCHES_AFTER):  # each batch made once the one before was answered
            commands, now_ms = (refused_batch, refused_ms) if k == 0 else south_shoppers.batch()
            live["south"] = None  # execute_through_faults lets a faulted one go
            south, answers, _ = execute_through_faults(south, commands, now_ms,
                                                       lambda u: network.run_in(ISOLATED, u.reopen))
            live["south"] = south
            south_shoppers.acknowledged(commands, answers)

        check_books(north, north_shoppers)
        check_books(south, south_shoppers)
        last = {"north": north.stream_log.next_seq - 1, "south": south.stream_log.next_seq - 1}
        hashes = {"north": state_hash(north.engine), "south": state_hash(south.engine)}
        wait_replicas_agree(cluster, last)
        agreed_after_s = time.monotonic() - healed_at
    finally:
        if trading is not None:
            live["north"] = trading.stop()
        for unit in live.values():
            if unit is not None:
                let_go(unit)

    for name in ("north", "south"):  # each node's copy, read from it while it leads
        copies = {}
        for node in cluster.nodes:
            lead_from(cluster.urls, name, node.name)
            copies[node.name] = read_from_leader(cluster.urls, name, node.name)
            assert [seq for seq, _, _ in copies[node.name]] == list(range(1, last[name] + 1))
            assert replayed_hash(tmp_path / name, copies[node.name]) == hashes[name]
        assert copies["n1"] == copies["n2"] == copies["n3"]

    first_after_cut = min(acked for sent, acked in trading.acks if sent > cut_at)
    print(f"south refused {refused_after_s:.1f} s after the cut (stream_retry_s_max {RETRY_S:g} s); north "
          f"acknowledged a batch sent after the cut {first_after_cut - cut_at:.1f} s after it "
          f"({trading.faults} storage faults); every copy the same {agreed_after_s:.1f} s after the heal")
