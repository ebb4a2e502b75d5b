"""The frames on the link: a fixed little-endian header, then the payload.

    call   (front -> engine): kind u8, call u32, op u8, target i64, length u32
    answer (engine -> front): call u32, status u16, binary u8, length u32

`call` pairs an answer with its call (the front numbers them, wrapping at
2**32); answers may come in any order.  The engine's first frame is an
answer to call 0: it is ready.  A payload is a request body as it came
(SINGLE, BATCH) or nothing (VIEW, METRICS); an answer's is the HTTP body.
"""

from __future__ import annotations

import enum
import struct

CALL = struct.Struct("<BIBqI")
ANSWER = struct.Struct("<IHBI")
READY_CALL = 0
CALL_ID_MASK = 0xFFFF_FFFF


class FrameTooLarge(Exception):
    pass


def cut(buffer: bytearray, header: struct.Struct, payload_bytes_max: int) -> list[tuple[tuple, bytes]]:
    """The whole frames at the start of `buffer`, taken out of it: (header
    fields, payload) each, the payload's length being the header's last
    field; a frame not yet all read stays.  FrameTooLarge past the limit."""
    frames = []
    at, n, size = 0, len(buffer), header.size
    with memoryview(buffer) as view:  # one copy of each payload, not two
        while n - at >= size:
            fields = header.unpack_from(buffer, at)
            if fields[-1] > payload_bytes_max:
                raise FrameTooLarge(f"a frame of {fields[-1]} bytes")
            end = at + size + fields[-1]
            if end > n:
                break
            frames.append((fields, bytes(view[at + size:end])))
            at = end
    del buffer[:at]
    return frames


class Kind(enum.IntEnum):
    SINGLE = 1  # op: the command's op, target: the path's id (0 for a checkout)
    BATCH = 2  # op: 1 for the binary format, 0 for JSON
    VIEW = 3  # op: a View, target: the id
    METRICS = 4


class View(enum.IntEnum):
    SKU = 1
    CHECKOUT = 2
    ORDER = 3
    LEDGER = 4
    STATS = 5
