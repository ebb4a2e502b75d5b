"""A unit's primary lease: a key in a JetStream KV bucket, held by one engine at a time.

The bucket (`d11-leases`, 3 replicas) drops each entry limits.unit_lease_ttl_s
after its last write (the bucket's max age).  The primary creates the key
`<unit>` (the write succeeds only if the key is absent or deleted) and renews
it every limits.unit_lease_renew_s with an update conditioned on the revision
it last wrote (a compare-and-set): nobody else can renew it, and once it
lapses the first standby to create it holds it.  The value names the holder
(a random token, the host and the pid), for the people reading a refusal.

The holder counts its lease from the moment it *sent* its last renewal that
was answered: the cluster stamps the entry later than that, so the holder's
count ends before the cluster's.  It stops taking commands
limits.unit_lease_guard_s before that end (`held`), which leaves room for a
batch already on its way and for clocks that run at slightly different rates.
A holder paused for longer than that (SIGSTOP, a long GC, a VM frozen) wakes
believing nothing: `held` reads the clock again; and a batch that was past the
check when the pause came is refused by the stream itself once the new primary
has written (stream_log: Nats-Expected-Last-Sequence), so it is never
acknowledged.

`LeasedStreamLog` is the log a primary writes with its lease: it refuses to
append once the lease is not held (a storage fault for the festival: 503
storage_unavailable naming the lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
import socket
import time
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from double11 import limits
from double11.cluster.buckets import BucketUnavailable, open_bucket
from double11.cluster.stream_log import (
    LoopThread,
    StreamLog,
    StreamLogError,
    ask_cluster,
    check_unit,
    connect,
    is_wrong_last_sequence,
)

LEASE_BUCKET = "d11-leases"


class LeaseHeld(RuntimeError):
    """The unit's lease is held by another engine: one line naming the holder."""


class LeaseUnavailable(RuntimeError):
    """The cluster's lease bucket could not be reached: one line."""


async def lease_bucket(nc: Client, replicas: int = limits.stream_replicas) -> KeyValue:
    """The cluster's lease bucket, created by the first engine that needs it."""
    try:
        return await open_bucket(nc, LEASE_BUCKET, replicas, ttl_s=limits.unit_lease_ttl_s)
    except BucketUnavailable as exc:
        raise LeaseHeld(str(exc)) from exc


def _describe(value: bytes) -> str:
    try:
        holder = json.loads(value)
        return f"{holder['host']} pid {holder['pid']} (token {holder['token']})"
    except (ValueError, KeyError, TypeError):
        return repr(value[:80])


class UnitLease:
    """The primary lease of unit `unit` on the cluster at `urls`, for this process.

    `acquire` takes it (waiting while another holds it, up to wait_s), after
    which it is renewed on a thread of its own until `release` or `close`."""

    def __init__(self, urls: list[str], unit: str) -> None:
        self.unit = check_unit(unit)
        self.token = secrets.token_hex(8)
        self.value = json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid()}).encode()
        self.revision = 0  # of the entry this holder last wrote (0: not held)
        self.lost: str | None = None  # why the lease went, once it did
        self._valid_until = 0.0  # time.monotonic() at which this holder stops believing it holds the lease
        self._renewer: asyncio.Task[None] | None = None
        self._io = LoopThread(f"double11-lease-{unit}")
        opening = self._io.submit(self._open(urls))
        try:
            self._nc, self._kv = opening.result(limits.stream_connect_s_max * 2)
        except BaseException as exc:
            opening.cancel()
            self._io.close()
            if isinstance(exc, (LeaseHeld, KeyboardInterrupt, SystemExit)):
                raise
            reason = f"{type(exc).__name__} {exc}".rstrip()
            raise LeaseUnavailable(f"the lease bucket {LEASE_BUCKET} could not be reached on {', '.join(urls)} "
                                   f"within {limits.stream_connect_s_max} s: {reason}") from exc

    async def _open(self, urls: list[str]) -> tuple[Client, KeyValue]:
        nc = await asyncio.wait_for(connect(urls), limits.stream_connect_s_max)  # the client alone would go on trying
        try:
            return nc, await lease_bucket(nc)
        except BaseException:
            await nc.close()
            raise

    # ------------------------------------------------------------ taking it
    def acquire(self, wait_s: float = 0.0) -> None:
        """Takes the lease; raises LeaseHeld, naming the holder, if another
        engine still held it after wait_s."""
        self._io.call(self._acquire(wait_s), wait_s + limits.stream_connect_s_max)

    async def _acquire(self, wait_s: float) -> None:
        holder = await self._take(wait_s, retaking=False)
        if holder is not None:
            raise LeaseHeld(f"unit {self.unit}'s primary lease is held by {holder}; it lapses "
                            f"{limits.unit_lease_ttl_s:g} s after its holder stops renewing it")

    def retake(self, wait_s: float) -> bool:
        """Takes the lease again after it lapsed unrenewed (renewals nobody
        answered: the bucket electing a leader after its node died, or this
        engine paused), unless another engine took it meanwhile: False then,
        or if the bucket did not answer within wait_s.  A primary that gets it
        back goes on with its state, where stepping down would have left its
        unit to a standby (perhaps one still replaying the stream)."""
        async def retake() -> bool:
            await self._stop_renewing()
            return await self._take(wait_s, retaking=True) is None

        return self._io.call(retake(), wait_s + limits.stream_connect_s_max)

    async def _take(self, wait_s: float, retaking: bool) -> str | None:
        """Creates the key, tried until wait_s (retaking: this engine's own
        entry, not yet dropped, renewed instead; another engine's ends the
        try at once): None once the lease is held, else who holds it."""
        deadline = time.monotonic() + wait_s
        while True:
            sent = time.monotonic()
            try:
                self.revision = await self._kv.create(self.unit, self.value)
                break
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                ours = await self._ours_again() if retaking else None
                if ours:
                    break
                holder = await self.holder_now()  # (not found: it lapsed while create looked at it)
                if ours is False:
                    return holder
            except (nats.errors.Error, TimeoutError) as exc:  # no quorum now: try again
                holder = f"nobody known ({type(exc).__name__})"
            if time.monotonic() >= deadline:
                return holder
            await asyncio.sleep(limits.unit_lease_poll_s / 2 if retaking else limits.unit_lease_poll_s)
        self.lost = None
        self._valid_until = sent + limits.unit_lease_ttl_s - limits.unit_lease_guard_s
        self._renewer = asyncio.get_running_loop().create_task(self._renew())
        return None

    async def _ours_again(self) -> bool | None:
        """The key is held: renewed if it is still this engine's entry (True),
        False if another engine's, None if that could not be told now."""
        try:
            entry = await self._kv.get(self.unit)
            if entry.value != self.value or entry.revision is None:
                return False
            self.revision = await self._kv.update(self.unit, self.value, last=entry.revision)
            return True
        except (nats.errors.Error, TimeoutError):  # dropped meanwhile, or no answer: try again
            return None

    async def holder_now(self) -> str:
        try:
            return _describe((await self._kv.get(self.unit)).value or b"")
        except nats.js.errors.KeyNotFoundError:
            return "nobody (it just lapsed)"

    # ------------------------------------------------------------ keeping it
    def held(self) -> bool:
        """Whether this engine may still take commands as the unit's primary."""
        return self.lost is None and self.revision > 0 and time.monotonic() < self._valid_until

    def why_not_held(self) -> str:
        if self.lost is not None:
            return self.lost
        if self.revision == 0:
            return f"unit {self.unit}'s primary lease was never taken by this engine"
        return (f"unit {self.unit}'s primary lease was not renewed in time (the last renewal answered is "
                f"{time.monotonic() - self._valid_until + limits.unit_lease_ttl_s - limits.unit_lease_guard_s:.1f}"
                f" s old; it lapses after {limits.unit_lease_ttl_s:g} s): another engine may lead the unit now")

    async def _renew(self) -> None:
        while self.lost is None:
            await asyncio.sleep(limits.unit_lease_renew_s)
            if time.monotonic() >= self._valid_until:  # too late to renew: a standby may have it by now
                self.lost = self.why_not_held()
                return
            sent = time.monotonic()
            try:
                self.revision = await self._kv.update(self.unit, self.value, last=self.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                await self._after_refused_renewal()
                continue
            except (nats.errors.Error, TimeoutError):
                continue  # no answer (a leader change): try again while the lease lasts
            self._valid_until = sent + limits.unit_lease_ttl_s - limits.unit_lease_guard_s

    async def _after_refused_renewal(self) -> None:
        """A renewal whose answer was lost landed, or another engine took the lease."""
        try:
            entry = await self._kv.get(self.unit)
        except nats.js.errors.KeyNotFoundError:
            self.lost = f"unit {self.unit}'s primary lease lapsed before it was renewed"
            return
        except (nats.errors.Error, TimeoutError):
            return  # asked again at the next renewal
        if entry.value == self.value and entry.revision is not None:
            self.revision = entry.revision  # ours: the lost answer's renewal
        else:
            self.lost = f"unit {self.unit}'s primary lease was taken by {_describe(entry.value or b'')}"

    # ------------------------------------------------------------ letting go
    def release(self) -> None:
        """Stops renewing and deletes the key if it is still ours (a standby takes over at once)."""
        async def release() -> None:
            await self._stop_renewing()
            if self.revision > 0:
                with contextlib.suppress(nats.errors.Error, TimeoutError):  # if not deleted, it lapses by itself
                    await self._delete_ours()
            self.revision = 0
            self.lost = f"unit {self.unit}'s primary lease was given up"
        if not self._io.loop.is_closed():
            self._io.call(release(), limits.stream_ack_wait_s * 2)

    async def _delete_ours(self) -> None:
        """Deletes the key at the revision of this engine's entry.  That may be
        newer than self.revision: a renewal cancelled by _stop_renewing after
        it was sent still lands.  Conditioned on the revision read, so another
        engine's entry is never deleted."""
        try:
            await self._kv.delete(self.unit, last=self.revision)
        except nats.js.errors.APIError as exc:
            if not is_wrong_last_sequence(exc):  # (delete, unlike update, does not translate it)
                raise
            entry = await self._kv.get(self.unit)
            if entry.value == self.value and entry.revision is not None:
                await self._kv.delete(self.unit, last=entry.revision)

    async def _stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    def close(self) -> None:
        """Stops renewing (the lease lapses by itself if it was not released) and disconnects."""
        if self._io.loop.is_closed():
            return

        async def stop() -> None:
            await self._stop_renewing()
            await self._nc.close()
        try:
            self._io.call(stop(), limits.nats_stop_s_max)
        except Exception:  # noqa: BLE001 (the connection is gone either way)
            pass
        finally:
            self._io.close()


def lease_holder(urls: list[str], unit: str) -> str | None:
    """Who holds unit `unit`'s lease now (None: nobody)."""
    async def holder(nc: Client) -> str | None:
        try:
            return _describe((await (await lease_bucket(nc)).get(check_unit(unit))).value or b"")
        except nats.js.errors.KeyNotFoundError:
            return None

    return ask_cluster(urls, f"double11-lease-ask-{unit}", holder)


class LeasedStreamLog(StreamLog):
    """A unit's stream log written under its primary lease: no record once the lease is not held."""

    def __init__(self, urls: list[str], unit: str, next_seq: int, lease: UnitLease, **kwargs: Any) -> None:
        self.lease = lease
        super().__init__(urls, unit, next_seq, **kwargs)

    def unwritable(self) -> str | None:
        if self.lease.held():
            return None
        return f"{self.lease.why_not_held()}; this engine takes no commands for unit {self.unit} until it holds it"

    def append(self, now_ms: int, payload: bytes | memoryview) -> int:
        if not self.lease.held():
            raise StreamLogError(errno.EACCES, f"{self.lease.why_not_held()}; this engine takes no more "
                                 f"commands for unit {self.unit}")
        return super().append(now_ms, payload)
