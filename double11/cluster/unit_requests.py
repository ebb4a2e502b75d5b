"""The subjects a unit's node answers on (unit_service.py), and how to ask them.

While it is its unit's primary, a node answers:
- `d11.unit.<unit>.batch`: a binary batch (engine/batch.py's wire bytes,
  `application/x-double11-batch`, in the unit's local ids: the router turns
  the cluster's ids into them, slots.py) -> the binary results (engine/wire.py);
- `d11.unit.<unit>.stock`: -> the unit's quotas.StockReport, as bytes;
- `d11.unit.<unit>.state`: `{"hash": true}` or nothing -> JSON
  {"unit", "role", "pid", "seq"} (and "state_hash" when asked for).
Every node, primary or standby, answers `d11.cluster.status` (one request,
many replies: the asker gathers them for a moment) with JSON
{"unit", "role", "pid", "seq", "lag", "data"}; `lag` is how many records
the node is behind its stream's last.

A request refused whole (bytes that are not a batch, a storage fault, a
lease gone) is answered with the header `D11-Error: <Result number>` and the
JSON error body (errors.error_body): `refusal_of` makes it a Double11Error
again.  A unit whose primary is gone has no responder: NATS says so at once
(nats.errors.NoRespondersError), and the asker tries again until a standby
serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from double11 import limits
from double11.cluster.quotas import StockReport
from double11.cluster.stream_log import check_unit
from double11.errors import Double11Error, Result

ERROR_HEADER = "D11-Error"
STATUS_SUBJECT = "d11.cluster.status"
UNIT_REQUESTS = ("batch", "stock", "state")


def unit_subject(unit: str, request: str) -> str:
    """The subject of one of a unit's requests (UNIT_REQUESTS)."""
    if request not in UNIT_REQUESTS:
        raise ValueError(f"a unit answers {', '.join(UNIT_REQUESTS)}, not {request!r}")
    return f"d11.unit.{check_unit(unit)}.{request}"


def refusal_of(reply: Msg) -> Double11Error | None:
    """The refusal a reply carries (None: it is an answer)."""
    code = (reply.headers or {}).get(ERROR_HEADER)
    if code is None:
        return None
    try:
        result = Result(int(code))
        message = str(json.loads(reply.data)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return Double11Error(Result.internal, message=f"a unit's refusal that does not read: {ERROR_HEADER} {code!r}")
    return Double11Error(result, message=message)


async def ask(nc: Client, unit: str, request: str, payload: bytes = b"",
              timeout_s: float = limits.unit_request_s_max) -> bytes:
    """One request to the unit's primary: its answer, or its refusal raised."""
    reply = await nc.request(unit_subject(unit, request), payload, timeout=timeout_s)
    refused = refusal_of(reply)
    if refused is not None:
        raise refused
    return bytes(reply.data)


async def ask_batch(nc: Client, unit: str, batch: bytes, timeout_s: float = limits.unit_request_s_max) -> bytes:
    """A binary batch executed by the unit: its binary results (engine/wire.py)."""
    return await ask(nc, unit, "batch", batch, timeout_s)


async def ask_stock(nc: Client, unit: str, timeout_s: float = limits.unit_request_s_max) -> StockReport:
    return StockReport.from_bytes(await ask(nc, unit, "stock", b"", timeout_s))


async def ask_state(nc: Client, unit: str, with_hash: bool = False,
                    timeout_s: float = limits.unit_request_s_max) -> dict[str, Any]:
    payload = json.dumps({"hash": True}).encode() if with_hash else b""
    return dict(json.loads(await ask(nc, unit, "state", payload, timeout_s)))


async def gather(nc: Client, subject: str, payload: bytes = b"", wait_s: float = limits.cluster_status_wait_s,
                 expected: int | None = None) -> list[Msg]:
    """Every reply to one request that comes within wait_s (sooner, once
    `expected` replies came)."""
    replies: list[Msg] = []
    enough = asyncio.Event()

    async def take(msg: Msg) -> None:
        replies.append(msg)
        if expected is not None and len(replies) >= expected:
            enough.set()

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=take)
    try:
        await nc.publish(subject, payload, reply=inbox)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), wait_s)
    finally:
        await subscription.unsubscribe()
    return replies


async def ask_status(nc: Client, wait_s: float = limits.cluster_status_wait_s,
                     expected: int | None = None) -> list[dict[str, Any]]:
    """What every unit node says of itself (the ones that answered within wait_s)."""
    answers = []
    for reply in await gather(nc, STATUS_SUBJECT, b"", wait_s, expected):
        with contextlib.suppress(ValueError):
            answers.append(dict(json.loads(reply.data)))
    return answers
