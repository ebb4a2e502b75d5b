"""The cluster's JetStream KV buckets (the leases, the slot map), opened or made."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from double11 import limits


class BucketUnavailable(RuntimeError):
    """A bucket could not be opened or made in time: one line naming it."""


async def open_bucket(nc: Client, bucket: str, replicas: int = limits.stream_replicas,
                      ttl_s: float | None = None) -> KeyValue:
    """The bucket, made by the first one that needs it (history 1; entries
    dropped ttl_s after their last write, when given)."""
    js = nc.jetstream(timeout=limits.stream_ack_wait_s)
    deadline = time.monotonic() + limits.stream_connect_s_max
    while True:  # a cluster just started may still be electing its meta leader
        try:
            try:
                return await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                return await js.create_key_value(bucket=bucket, history=1, replicas=replicas, ttl=ttl_s)
        except (nats.errors.Error, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise BucketUnavailable(f"the bucket {bucket} could not be opened within "
                                        f"{limits.stream_connect_s_max} s: {type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(limits.unit_lease_poll_s)
