"""The quota rebalancer as a process on a cluster (its logic: rebalancer.py).

    python -m double11.cluster.rebalancer_node --urls nats://...,nats://... --catalog DIR

It reads the slot map (the units) and the catalog's SKU ids (every unit
holds the whole catalog, in the same rows), finishes the transfers its journal holds (the KV bucket
`d11-transfers`: a transfer is put before its release and deleted after its
restock), then runs a round every `limits.rebalance_period_s` until SIGTERM
or Ctrl-C.  One JSON line per round that moved quota:
{"event": "moved", "transfers", "units", "dropped"}.  Run one rebalancer per
cluster: two would each move quota correctly, but twice as eagerly.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import time
from types import FrameType
from typing import TextIO

import msgspec
import nats.errors
import nats.js.errors
import numpy as np
from nats.aio.client import Client
from nats.js.kv import KeyValue

from double11 import limits
from double11.catalog.files import load_catalog
from double11.cluster.buckets import BucketUnavailable, open_bucket
from double11.cluster.client import send_to_unit
from double11.cluster.quotas import StockReport
from double11.cluster.rebalancer import Rebalancer, Transfer
from double11.cluster.slots import SlotMap, read_slot_map
from double11.cluster.stream_log import LoopThread, connect
from double11.cluster.unit_requests import ask_stock
from double11.cluster.urls import urls_arg
from double11.errors import Double11Error
from double11.lifecycle import follow_parent

TRANSFERS_BUCKET = "d11-transfers"
# what a round may meet while the cluster heals: said, and the next round tries again
_PASSING = (nats.errors.Error, TimeoutError, OSError, Double11Error)


class NatsUnits:
    """The units as the rebalancer reaches them: over NATS, from a thread of its own."""

    def __init__(self, urls: list[str]) -> None:
        self._io = LoopThread("double11-rebalancer")
        self._last: dict[int, StockReport] = {}  # each unit's last report
        try:
            self._nc: Client = self._io.call(connect(urls), limits.stream_connect_s_max)
            self.slot_map: SlotMap = self._io.call(read_slot_map(self._nc), limits.stream_connect_s_max * 2)
            self._journal: KeyValue = self._io.call(open_bucket(self._nc, TRANSFERS_BUCKET),
                                                    limits.stream_connect_s_max * 2)
        except BaseException:
            self._io.close()
            raise

    def count(self) -> int:
        return len(self.slot_map.units)

    def stock(self, unit: int) -> StockReport:
        """The unit's quotas: what changed since the last read, applied to it."""
        report = self._io.call(ask_stock(self._nc, self.slot_map.units[unit], since=self._last.get(unit)),
                               limits.unit_request_s_max)
        self._last[unit] = report
        return report

    def send(self, unit: int, batch: bytes) -> bytes:
        return self._io.call(send_to_unit(self._nc, self.slot_map.units[unit], batch),
                             limits.cluster_retry_s_max + limits.unit_answer_s_max)

    # rebalancer.Journal, in the bucket
    def put(self, key: str, transfers: list[Transfer]) -> None:
        self._io.call(self._journal.put(key, msgspec.json.encode(transfers)), limits.unit_request_s_max)

    def remove(self, key: str) -> None:
        self._io.call(self._journal.purge(key), limits.unit_request_s_max)

    def unfinished(self) -> list[list[Transfer]]:
        async def read() -> list[list[Transfer]]:
            try:
                keys = await self._journal.keys()
            except nats.js.errors.NoKeysError:
                return []
            out = []
            for key in keys:
                try:
                    entry = await self._journal.get(key)
                except nats.js.errors.KeyNotFoundError:
                    continue
                if entry.value:
                    held = msgspec.json.decode(entry.value, type=list[Transfer] | Transfer)
                    out.append(held if isinstance(held, list) else [held])  # one transfer: an older rebalancer's
            return out

        return self._io.call(read(), limits.unit_request_s_max)

    def close(self) -> None:
        try:
            self._io.call(self._nc.close(), limits.nats_stop_s_max)
        finally:
            self._io.close()


def run(urls: list[str], sku_ids: np.ndarray, out: TextIO) -> int:
    units = NatsUnits(urls)
    try:
        rebalancer = Rebalancer(units, units, sku_ids, epoch=secrets.token_hex(4))
        _say(out, {"event": "rebalancing", "units": list(units.slot_map.units)})
        failing = False
        while True:
            began = time.monotonic()
            try:
                if failing:  # a transfer cut short by the failure is in the journal: finished first
                    rebalancer.finish_unfinished()
                done = rebalancer.round()
            except _PASSING as exc:  # a unit failing over, a bucket electing its leader: the next round
                _say(out, {"event": "round_failed", "reason": f"{type(exc).__name__}: {exc}"})
                failing = True
                time.sleep(limits.rebalance_retry_s)
                continue
            failing = False
            if done.moved or done.dropped:
                _say(out, {"event": "moved", "transfers": done.moved, "units": done.units_moved,
                           "dropped": done.dropped})
            time.sleep(max(0.0, limits.rebalance_period_s - (time.monotonic() - began)))
    finally:
        units.close()


def _say(out: TextIO, message: dict) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # a stop between rounds; a transfer cut short is in the journal


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m double11.cluster.rebalancer_node",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--urls", type=urls_arg, required=True, help="the NATS cluster's client URLs, comma separated")
    p.add_argument("--catalog", required=True, help="the cluster's catalog folder (the SKU ids)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    follow_parent(signal.SIGTERM)  # started by a cluster's supervisor or a command: stops when it dies
    try:
        return run(args.urls, load_catalog(args.catalog).sku_id, sys.stdout)
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError, LookupError, Double11Error, BucketUnavailable) as exc:
        print(f"double11 rebalancer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
