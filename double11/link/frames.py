"""The frames on the link: a fixed little-endian header, then the payload.

    call   (front -> engine): kind u8, call u32, op u8, target i64, role u8, actor i64, length u32
    answer (engine -> front): call u32, code u16, binary u8, length u32

`role` and `actor` are the principal the call acts as (double11/access:
the front verified its token).  `call` pairs an answer with its call (the front numbers them, wrapping at
2**32); answers may come in any order.  The engine's first frame is an
answer to call 0: it is ready.  A payload is a request body as it came
(SINGLE, BATCH) or nothing (VIEW, METRICS); an answer's is the HTTP body,
and its code a `Result` that the front says as an HTTP status.
"""

from __future__ import annotations

import enum
import struct

import numpy as np

from double11.engine.compiled import kernel

CALL = struct.Struct("<BIBqBqI")
ANSWER = struct.Struct("<IHBI")
READY_CALL = 0
CALL_ID_MASK = 0xFFFF_FFFF


class FrameTooLarge(Exception):
    pass


class CallFrames:
    """The calls at the start of a buffer, as columns (`scan_calls`): call
    i's payload is buffer[start[i]:end[i]]; `consumed` bytes held whole
    frames."""

    __slots__ = ("kind", "call", "op", "target", "role", "actor", "start", "end", "consumed")

    def __init__(self, kind, call, op, target, role, actor, start, end, consumed: int) -> None:
        self.kind, self.call, self.op, self.target, self.role, self.actor = kind, call, op, target, role, actor
        self.start, self.end, self.consumed = start, end, consumed

    def __len__(self) -> int:
        return len(self.kind)


# a scan's columns are sized for this many calls at most: a big read takes
# several scans, not one allocation per 27 bytes of it
SCAN_CALLS_MAX = 1 << 16


_NO_FRAMES = CallFrames(np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint32), np.empty(0, dtype=np.uint8),
                        np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.int64),
                        np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), consumed=0)


def scan_calls(buffer: bytearray, payload_bytes_max: int) -> CallFrames:
    """The whole call frames at the start of `buffer` (up to SCAN_CALLS_MAX),
    found in one compiled pass without a Python object per frame: the
    engine reads hundreds of single requests at once.  The buffer is left as
    it was.  FrameTooLarge past the limit."""
    if len(buffer) < CALL.size:
        n = 0
    else:  # a first frame not all read yet (a big batch, often): nothing to scan, nothing to allocate
        length = CALL.unpack_from(buffer)[-1]
        n = 0 if length <= payload_bytes_max and CALL.size + length > len(buffer) else len(buffer) // CALL.size
    if n == 0:  # nothing whole to scan: no columns to make, no compiled call
        return _NO_FRAMES
    view = np.frombuffer(buffer, dtype=np.uint8)
    n = min(n, SCAN_CALLS_MAX)
    kind, op = np.empty(n, dtype=np.uint8), np.empty(n, dtype=np.uint8)
    call, target = np.empty(n, dtype=np.uint32), np.empty(n, dtype=np.uint64)
    role, actor = np.empty(n, dtype=np.uint8), np.empty(n, dtype=np.uint64)
    start, end = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    count, consumed, too_large = _scan_calls(view, payload_bytes_max, kind, call, op, target, role, actor, start, end)
    del view  # the bytearray may change size again
    if too_large:
        raise FrameTooLarge(f"a frame of more than {payload_bytes_max} bytes")
    return CallFrames(kind[:count], call[:count], op[:count], target[:count].view(np.int64), role[:count],
                      actor[:count].view(np.int64), start[:count], end[:count], consumed)


assert CALL.size == 27, "_scan_calls reads the CALL header at fixed offsets"


@kernel
def _scan_calls(buf, payload_bytes_max, kind, call, op, target, role, actor, start, end):
    """CALL frames (little-endian <BIBqBqI: kind at 0, call at 1, op at 5,
    target at 6, role at 14, actor at 15, length at 23; 27 bytes)."""
    n, at, k = len(buf), 0, 0
    while k < len(kind) and n - at >= 27:
        length = np.int64(buf[at + 23]) | (np.int64(buf[at + 24]) << 8) | (np.int64(buf[at + 25]) << 16) | (
            np.int64(buf[at + 26]) << 24)
        if length > payload_bytes_max:
            return k, at, True
        stop = at + 27 + length
        if stop > n:
            break
        kind[k] = buf[at]
        call[k] = np.uint32(buf[at + 1]) | (np.uint32(buf[at + 2]) << 8) | (np.uint32(buf[at + 3]) << 16) | (
            np.uint32(buf[at + 4]) << 24)
        op[k] = buf[at + 5]
        t = np.uint64(0)
        for j in range(8):
            t |= np.uint64(buf[at + 6 + j]) << np.uint64(8 * j)
        target[k] = t
        role[k] = buf[at + 14]
        a = np.uint64(0)
        for j in range(8):
            a |= np.uint64(buf[at + 15 + j]) << np.uint64(8 * j)
        actor[k] = a
        start[k] = at + 27
        end[k] = stop
        k += 1
        at = stop  # type: ignore[assignment]  # compiled: an int64 in Numba from the start
    return k, at, False


def pack_answers(calls: np.ndarray, code: np.ndarray, data: bytes, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """ANSWER frames (not binary) for calls[i] with result code[i] and the body
    data[starts[i]:ends[i]], one after another, written in one compiled pass:
    the engine answers hundreds of single requests at once."""
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    out = np.empty(ANSWER.size * len(calls) + int((ends - starts).sum()), dtype=np.uint8)
    _pack_answers(np.asarray(calls, dtype=np.uint32), np.asarray(code, dtype=np.int64),
                  np.frombuffer(data, dtype=np.uint8), starts, ends, out)
    return out.tobytes()


assert ANSWER.size == 11, "_pack_answers writes the ANSWER header at fixed offsets"


@kernel
def _pack_answers(calls, codes, data, starts, ends, out):
    """ANSWER frames (little-endian <IHBI: call at 0, code at 4, binary at
    6, length at 7; 11 bytes), each followed by its body."""
    p = 0
    for i in range(len(calls)):
        call, code, n = calls[i], codes[i], ends[i] - starts[i]
        for j in range(4):
            out[p + j] = (call >> np.uint32(8 * j)) & np.uint32(0xFF)
            out[p + 7 + j] = (n >> (8 * j)) & 0xFF
        out[p + 4] = code & 0xFF
        out[p + 5] = (code >> 8) & 0xFF
        out[p + 6] = 0
        p += 11
        first = starts[i]
        for k in range(n):  # unsigned indexes: no negative-index check, so the copy vectorizes (8x faster)
            out[np.uint64(p + k)] = data[np.uint64(first + k)]
        p += n
    return p


class Kind(enum.IntEnum):
    SINGLE = 1  # op: the command's op, target: the path's id (0 for a checkout)
    BATCH = 2  # op: 1 for the binary format, 0 for JSON
    VIEW = 3  # op: a View, target: the id
    METRICS = 4


# Kind.SINGLE as a plain int, for the phones' path at both ends of the link:
# NumPy compares a column to a plain int 5x faster than to an IntEnum member
SINGLE_KIND = int(Kind.SINGLE)


class View(enum.IntEnum):
    SKU = 1
    CHECKOUT = 2
    ORDER = 3
    LEDGER = 4
    STATS = 5
    SKU_PAGE = 6  # payload: SKU_PAGE_QUERY
    STOCK_PROBE = 7  # payload: STOCK_PROBE_ITEM each; answer: a verdict byte each (engine/stock_probe.py)
    HEALTH = 8  # GET /healthz: ok, or storage_unavailable after a storage fault
    # an area's views are numbered from areas.FIRST_READ_NUMBER on


# a VIEW call of SKU_PAGE carries its query: merchant (0: all), after, limit
SKU_PAGE_QUERY = struct.Struct("<qqq")
# a VIEW call of STOCK_PROBE carries checkouts as (idempotency key's digest,
# sku, and the role and id of who sent it: a buyer's keys are its own)
STOCK_PROBE_ITEM = struct.Struct("<Qqqq")
