"""Admission control in the front: how much work may wait for the engine.

A single command is admitted while the commands in flight (sent down the
link, not yet answered) are under `admitted_max`: the engine's answer rate,
measured over the last window, times the queueing delay an admitted command
may take (limits.admission_queue_delay_ms_target), between a floor and the
link's ceiling.  By Little's law, work in flight over answer rate is the wait
of the newest command, so the bound keeps that wait near the target whatever
the engine's pace (a busy batch load, a slow disk, a smaller machine): a fixed
number would be seconds of queue on one host and needless refusals on another.
While the engine keeps up, the measured rate is the offered one and the bound
sits above the work in flight; it falls only as fast as the engine does, and
rises by the ratio of the target to the engine's latency each window, so a
cold start reaches a fast engine's pace within a few windows.

The front pays for it with one compare a request and one count per read of
the link; the rate is taken on a timer (RemoteFestival._adapt).
"""

from __future__ import annotations

import struct

from double11 import limits

# a binary batch's header starts magic (4 s), version (H), flags (H), commands (I): engine/batch.py
_BINARY_COUNT = struct.Struct("<I")
_BINARY_COUNT_AT = 8


def admitted_max(answered: int, elapsed_s: float) -> int:
    """The most commands in flight the front admits a single command beside,
    after the engine answered `answered` commands in `elapsed_s` seconds."""
    rate_per_s = answered / elapsed_s if elapsed_s > 0 else 0.0
    bound = int(rate_per_s * limits.admission_queue_delay_ms_target / 1000)
    return min(limits.link_calls_in_flight_max, max(limits.admission_calls_in_flight_min, bound))


def batch_commands(body: bytes, binary: bool) -> int:
    """About how many commands a batch's body holds, without decoding it: a
    binary batch says so in its header, a JSON batch names each command's op
    once.  At least 1, at most limits.batch_commands_max (a bigger one is
    refused by the engine, which counts exactly)."""
    if binary:
        n = _BINARY_COUNT.unpack_from(body, _BINARY_COUNT_AT)[0] if len(body) >= _BINARY_COUNT_AT + 4 else 1
    else:
        n = body.count(b'"op"')
    return min(limits.batch_commands_max, max(1, n))
