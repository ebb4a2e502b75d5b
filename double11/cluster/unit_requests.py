"""The subjects a unit's node answers on (unit_service.py), and how to ask them.

While it is its unit's primary, a node answers:
- `d11.unit.<unit>.batch`: a binary batch (engine/batch.py's wire bytes,
  `application/x-double11-batch`, in the unit's local ids: the router turns
  the cluster's ids into them, slots.py) -> the binary results (engine/wire.py);
- `d11.unit.<unit>.stock`: nothing, or `{"since": <report id>}` -> the
  unit's quotas.StockReport, as bytes (whole, or the changes since that report);
- `d11.unit.<unit>.state`: `{"hash": true}` or nothing -> JSON
  {"unit", "role", "pid", "seq"} (and "state_hash" when asked for);
- `d11.unit.<unit>.config`: -> the festival's config (config.FestivalConfig) as JSON;
- `d11.unit.<unit>.alive`: -> nothing: the unit has a primary (no responders: none now);
and, for a cluster's HTTP front (front_link.py), what the engine process
answers the front on one machine (link/engine.py), the answer after a
result code (ANSWER_CODE: the code the front says as an HTTP status):
- `d11.unit.<unit>.single`: SINGLE (op, target) then a single request's
  body as it came -> its answer;
- `d11.unit.<unit>.view`: VIEW (which: a link.frames.View or an area's
  view number, id), then a page's query (SKU_PAGE_QUERY) -> the view's JSON;
- `d11.unit.<unit>.commands`: a JSON list of commands (a JSON batch's, in
  the unit's ids) -> {"results": [...]}, as `POST /v1/batch` answers.
A request sent on behalf of a token's holder (the front checked its role)
carries the header `D11-Principal: <role>:<id>` (none: the operator), so the
unit checks whose thing a command names as one machine's engine does.
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
import struct
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from double11 import limits
from double11.access.roles import OPERATOR, Principal, Role
from double11.cluster.quotas import StockReport
from double11.cluster.stream_log import check_unit
from double11.errors import Double11Error, Result

ERROR_HEADER = "D11-Error"
PRINCIPAL_HEADER = "D11-Principal"
STATUS_SUBJECT = "d11.cluster.status"
ALIVE = "alive"  # the request a client asks while its answer is late (client.answer_while_alive)
UNIT_REQUESTS = ("batch", "stock", "state", "config", "single", "view", "commands", ALIVE)
SINGLE = struct.Struct("<Bq")  # a single request's op and the id in its path (0: a checkout)
VIEW = struct.Struct("<Hq")  # a view's number and the id it reads
ANSWER_CODE = struct.Struct("<H")  # before an answer's body: its result code


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


def principal_headers(principal: Principal) -> dict[str, str] | None:
    """The headers of a request sent on behalf of `principal` (None: the operator's)."""
    if principal == OPERATOR:
        return None
    return {PRINCIPAL_HEADER: f"{int(principal.role)}:{principal.id}"}


def principal_of(request: Msg) -> Principal:
    """Who a request was sent on behalf of (the operator, without the header)."""
    said = (request.headers or {}).get(PRINCIPAL_HEADER)
    if said is None:
        return OPERATOR
    role, _, ident = said.partition(":")
    try:
        return Principal(Role(int(role)), int(ident))
    except ValueError:
        raise Double11Error(Result.invalid_request, message=f"{PRINCIPAL_HEADER} must be <role>:<id>, "
                                                            f"got {said[:40]!r}") from None


def answered(code: int, body: bytes) -> bytes:
    """An answer as a unit replies it: its result code, then its body."""
    return ANSWER_CODE.pack(code) + body


def answer_of(reply: bytes) -> tuple[int, bytes]:
    """(result code, body) of a reply made by `answered`."""
    if len(reply) < ANSWER_CODE.size:
        raise Double11Error(Result.internal, message=f"a unit's answer of {len(reply)} bytes has no result code")
    return ANSWER_CODE.unpack_from(reply)[0], reply[ANSWER_CODE.size:]


async def ask(nc: Client, unit: str, request: str, payload: bytes = b"",
              timeout_s: float = limits.unit_request_s_max, headers: dict[str, str] | None = None) -> bytes:
    """One request to the unit's primary: its answer, or its refusal raised."""
    reply = await nc.request(unit_subject(unit, request), payload, timeout=timeout_s, headers=headers)
    refused = refusal_of(reply)
    if refused is not None:
        raise refused
    return bytes(reply.data)


async def ask_batch(nc: Client, unit: str, batch: bytes, timeout_s: float = limits.unit_request_s_max) -> bytes:
    """A binary batch executed by the unit: its binary results (engine/wire.py)."""
    return await ask(nc, unit, "batch", batch, timeout_s)


async def ask_stock(nc: Client, unit: str, timeout_s: float = limits.unit_request_s_max,
                    since: StockReport | None = None) -> StockReport:
    """The unit's quotas now; given the last report the asker had of that
    unit (`since`), only what changed is sent (whole when the unit no longer
    keeps that report: another primary, too many askers between)."""
    payload = json.dumps({"since": since.report_id}).encode() if since is not None and since.report_id else b""
    return StockReport.from_bytes(await ask(nc, unit, "stock", payload, timeout_s), since)


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
