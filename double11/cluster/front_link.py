"""The cluster as the HTTP front's festival: the operations the front calls
on one machine's engine process (link.remote.RemoteFestival), answered by
the units over NATS, so that the same HTTP app (http/app.py) serves a
cluster.  The front checks tokens and roles as on one machine; each request
carries its principal to the unit, which checks whose thing a command names.

Where each request goes (router.py's rules, slots.py's map):
- a single checkout or coupon grant to its buyer's unit (the body's `buyer`,
  read here; a body that does not read goes to unit 0, which answers its
  refusal in the engine's words), its coupons in that unit's ids (a coupon
  of another unit is refused here: router.py); a coupon template, threshold
  discount or deal to every unit, in one order (definitions.py), its answer
  unit 0's with the units' shares added up; pay, cancel, confirm and refund to the unit their id
  names, in that unit's ids; a restock to the SKU's home unit.  An id that
  names no unit goes to unit 0 as it came, which answers that there is no
  such thing, as one machine would;
- a binary batch is split by unit and answered in its order
  (client.ClusterClient); a JSON batch is checked whole here (a command of a
  bad shape refuses it, nothing applied, as on one machine), split by unit
  the same way, each unit's commands sent as a JSON list, and the results
  put back in the batch's order;
- a checkout, order or coupon's view to the unit in its id; a buyer's
  coupons to the buyer's unit; a threshold discount's from unit 0; a SKU's,
  template's or deal's view, a page of SKUs and the ledger from every unit,
  added up (front_ids.py); /v1/stats (and the big screen's stream) from the
  units' published figures, summed (figures.FiguresAggregator: exact);
- /healthz: every unit's primary answers, or 503 naming the unit that does not.
Answers carry the cluster's ids (front_ids.py).  What the cluster does not
serve (the quota moves release, coupon_budget and deal_qty: the rebalancer
sends them to a unit by name) is answered 501 not_on_cluster, naming it.  A unit failing over is waited for (its request
sent again with the same bytes: the idempotency keys answer a retry with its
first result) for limits.front_unit_wait_s_max, then answered 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats.errors
import numpy as np
from nats.aio.client import Client

from double11 import areas, limits
from double11.access.roles import OPERATOR, Principal
from double11.catalog import Catalog
from double11.cluster.client import ClusterClient
from double11.cluster.definitions import Definition, split_command
from double11.cluster.figures import FiguresAggregator
from double11.cluster.front_ids import (
    answer_with_cluster_ids,
    summed_deal,
    summed_ledgers,
    summed_pages,
    summed_skus,
    summed_template,
    unit_id,
    with_cluster_ids,
)
from double11.cluster.router import (
    DEFINITIONS,
    NOT_ROUTED,
    foreign_coupon_codes,
    runs,
    units_of,
    units_of_commands,
)
from double11.cluster.slots import read_slot_map, unit_of_id
from double11.cluster.stream_log import connect
from double11.cluster.unit_requests import SINGLE, VIEW, answer_of, ask, principal_headers
from double11.config import FestivalConfig
from double11.engine.batch import Op
from double11.engine.encode import encode_commands
from double11.engine.json_shape import first_misshapen
from double11.engine.refusals import TARGET_FIELD, coupon_message
from double11.errors import Double11Error, Result, error_body
from double11.link.frames import SKU_PAGE_QUERY, STOCK_PROBE_ITEM, View
from double11.link.local import EMPTY_RESULTS, json_batch_commands
from double11.promotions.spec import COUPON_TEMPLATE, DEAL, GRANT
from double11.service import refusal
from double11.statuses import answer

_ENC = msgspec.json.Encoder()
_CHECKOUT, _PAY, _REFUND = int(Op.checkout), int(Op.pay), int(Op.refund)
_GRANT, _TEMPLATE, _DEAL = GRANT.number, COUPON_TEMPLATE.number, DEAL.number
_DEFINITIONS = frozenset(DEFINITIONS.tolist())
_ROUTED_OPS = frozenset(int(op) for op in Op) | {_GRANT} | _DEFINITIONS  # the rest: not_on_cluster
_NOT_ON_CLUSTER = int(Result.not_on_cluster)
_COUPON_REFUSALS = (int(Result.not_your_coupon), int(Result.unknown_coupon))
_READ = areas.READ_NUMBER
_BY_BUYER_VIEWS = {_READ["buyer_coupons"]}
_SUMMED_VIEWS = {_READ["coupon_template"]: summed_template, _READ["deal"]: summed_deal}
_UNIT_0_VIEWS = {_READ["threshold_discount"]}  # alike in every unit
_SUMMED_ANSWERS = {_TEMPLATE: summed_template, _DEAL: summed_deal}
_OK = (int(Result.ok), b'{"status":"ok"}')


class _Buyer(msgspec.Struct):
    """What the front reads of a checkout's or grant's body: whose unit
    serves it, and a checkout's coupons (in the cluster's ids)."""

    buyer: int
    coupons: list[int] = []


_read_buyer = msgspec.json.Decoder(_Buyer).decode


def not_served(what: str) -> tuple[int, bytes]:
    return _NOT_ON_CLUSTER, _ENC.encode(error_body(Result.not_on_cluster, message=(
        f"{what} is not served on a cluster: its rebalancer moves the quotas between units; a festival on one "
        "machine (double11 serve) serves it")))


class ClusterFestival:
    """The front's festival over the cluster's units (see the module)."""

    lost = False  # http/app.py's /healthz asks: a cluster has no one engine process to lose

    def __init__(self, nc: Client, client: ClusterClient, aggregator: FiguresAggregator) -> None:
        self.nc, self.client, self.aggregator = nc, client, aggregator
        self.slot_map = client.slot_map
        self._wait_s = limits.front_unit_wait_s_max

    @classmethod
    async def connect(cls, urls: list[str], catalog: Catalog) -> ClusterFestival:
        """Connects to the cluster at `urls`: its slot map, unit 0's config
        (for the figures' view), and the units' published figures."""
        nc = await asyncio.wait_for(connect(urls), limits.stream_connect_s_max)
        try:
            client = ClusterClient(nc, await read_slot_map(nc))
            config = msgspec.json.decode(await client.send(0, "config", b""), type=FestivalConfig)
            aggregator = await asyncio.get_running_loop().run_in_executor(
                None, FiguresAggregator, urls, catalog, config)
        except BaseException:
            await nc.close()
            raise
        return cls(nc, client, aggregator)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.aggregator.close)
        await self.nc.close()

    # ------------------------------------------------------------ commands
    async def single(self, op: int, target: int, body: bytes, principal: Principal = OPERATOR) -> tuple[int, bytes]:
        """(result code, JSON answer) of a single request's command."""
        if op not in _ROUTED_OPS:
            return not_served(f"{areas.BY_NUMBER[op].op} ({areas.BY_NUMBER[op].route})")
        if op in _DEFINITIONS:
            return await self._define_single(op, target, body, principal)
        read = self._buyer(body) if op in (_CHECKOUT, _GRANT) else None
        unit, sent = self._unit_of(op, read.buyer if read is not None else target), target
        if _PAY <= op <= _REFUND and unit != 0:
            sent = unit_id(target)
        if op == _CHECKOUT and read is not None and read.coupons:
            foreign = self._foreign_coupon(unit, read.coupons)
            if foreign is not None:
                return foreign
            if unit != 0:
                body = _ENC.encode({**msgspec.json.decode(body), "coupons": [unit_id(c) for c in read.coupons]})
        try:
            reply = await self._send(unit, "single", SINGLE.pack(op, sent) + body, principal)
        except Double11Error as exc:
            return refusal(exc)
        code, answered = answer_of(reply)
        return code, answer_with_cluster_ids(unit, answered)

    async def batch(self, body: bytes, binary: bool, principal: Principal = OPERATOR) -> tuple[int, bytes, bool]:
        """A batch request's answer: (result code, body, whether it is binary)."""
        try:
            if binary:
                return Result.ok, await self.client.submit(body, principal, self._wait_s), True
            return Result.ok, await self._json_batch(json_batch_commands(body), principal), False
        except Double11Error as exc:
            return (*refusal(exc), False)

    async def _json_batch(self, commands: list[Any], principal: Principal) -> bytes:
        if not commands:
            return EMPTY_RESULTS
        batch = encode_commands(commands)
        misshapen = first_misshapen(commands, batch.notes)
        if misshapen is not None:
            raise misshapen
        unit, refusal, ref = units_of(batch, self.slot_map)
        results: list[Any] = [None] * len(commands)
        for place in np.flatnonzero(np.isin(batch.op, list(_ROUTED_OPS), invert=True)).tolist():
            code, said = not_served(f"op {commands[place]['op']}")
            results[place] = answer(code, msgspec.json.decode(said))
        foreign = (unit == NOT_ROUTED) & np.isin(refusal, _COUPON_REFUSALS)
        for place in np.flatnonzero(foreign).tolist():
            code = Result(int(refusal[place]))
            results[place] = answer(code, error_body(code, message=coupon_message(code, int(ref[place]))))
        by_id = (batch.op >= _PAY) & (batch.op <= _REFUND) & (unit > 0)
        # ids naming no unit: unit 0 says so
        unit[(unit == NOT_ROUTED) & np.isin(batch.op, list(_ROUTED_OPS)) & ~foreign] = 0

        async def part(u: int, places: np.ndarray) -> None:
            sent = [self._for_unit(u, commands[place], bool(by_id[place])) for place in places.tolist()]
            got = msgspec.json.decode(await self._send(u, "commands", _ENC.encode(sent), principal))["results"]
            for place, result in zip(places.tolist(), got, strict=True):
                results[place] = with_cluster_ids(u, result)

        for places, defined in runs(unit):
            if defined:
                place = int(places[0])
                results[place] = await self._define_json(int(batch.op[place]), commands[place], principal)
                continue
            await asyncio.gather(*(part(u, places[unit[places] == u]) for u in range(len(self.slot_map.units))
                                   if (unit[places] == u).any()))
        return _ENC.encode({"results": results})

    def _for_unit(self, unit: int, command: dict[str, Any], by_id: bool) -> dict[str, Any]:
        """A JSON command in unit `unit`'s ids."""
        if by_id:
            field = TARGET_FIELD[int(areas.BY_OP[command["op"]].number)]
            return {**command, field: unit_id(command[field])}
        if unit != 0 and command.get("op") == "checkout" and command.get("coupons"):
            return {**command, "coupons": [unit_id(c) for c in command["coupons"]]}
        return command

    # --------------------------------------------------------- definitions
    async def _define_single(self, op: int, target: int, body: bytes, principal: Principal) -> tuple[int, bytes]:
        """A definition of a single request, sent to every unit: unit 0's
        answer, its shares added up."""
        units = len(self.slot_map.units)
        try:
            fields = msgspec.json.decode(body)
        except msgspec.DecodeError:
            fields = None
        split = split_command(fields, op, units) if isinstance(fields, dict) else None
        bodies = [_ENC.encode(each) for each in split] if split is not None else [body] + [b""] * (units - 1)
        payloads = [SINGLE.pack(op, target) + each if each else b"" for each in bodies]
        try:
            replies = await self.client.define(Definition("single", payloads, principal_headers(principal)),
                                                self._wait_s)
        except Double11Error as exc:
            return refusal(exc)
        answers = [answer_of(reply) for reply in replies if reply]
        code, first = answers[0]
        if code not in (Result.ok, Result.created) or op not in _SUMMED_ANSWERS or len(answers) < units:
            return code, first
        return code, _ENC.encode(_SUMMED_ANSWERS[op]([msgspec.json.decode(b) for _, b in answers]))

    async def _define_json(self, op: int, command: dict[str, Any], principal: Principal) -> Any:
        """A JSON batch's definition, sent to every unit: its result as unit 0 answered, shares added up."""
        units = len(self.slot_map.units)
        split = split_command(command, op, units)
        lists = [[each] for each in split] if split is not None else [[command]] + [[]] * (units - 1)
        payloads = [_ENC.encode(each) if each else b"" for each in lists]
        try:
            replies = await self.client.define(Definition("commands", payloads, principal_headers(principal)),
                                                self._wait_s)
        except Double11Error as exc:
            code, said = refusal(exc)
            return answer(code, msgspec.json.decode(said))
        results = [msgspec.json.decode(reply)["results"][0] for reply in replies if reply]
        first = results[0]
        if op not in _SUMMED_ANSWERS or len(results) < units or first["status"] >= 300:
            return first
        return {**first, "body": _SUMMED_ANSWERS[op]([r["body"] for r in results])}

    # ------------------------------------------------------------ reads
    async def view(self, which: int, id_: int = 0, principal: Principal = OPERATOR) -> tuple[int, bytes]:
        """(result code, JSON) of a view, in the cluster's ids."""
        try:
            if which == View.STATS:
                return Result.ok, _ENC.encode(self.stats())
            if which in (View.SKU, View.LEDGER):
                answers = await self._from_every_unit(VIEW.pack(which, id_), principal)
                if isinstance(answers, tuple):
                    return answers
                return Result.ok, _ENC.encode(summed_skus(answers) if which == View.SKU else summed_ledgers(answers))
            if which in (View.CHECKOUT, View.ORDER):
                unit = self._unit_of(_PAY if which == View.CHECKOUT else _REFUND, id_)
                sent = unit_id(id_) if unit != 0 else id_
            elif which in _BY_BUYER_VIEWS:
                unit, sent = int(self.slot_map.unit_of_buyer(np.array([max(id_, 0)]))[0]), id_
            elif which == _READ["coupon"]:
                named = int(unit_of_id(np.array([id_]))[0])
                unit = named if 0 <= named < len(self.slot_map.units) else 0
                sent = unit_id(id_) if unit != 0 else id_
            elif which in _UNIT_0_VIEWS:
                unit, sent = 0, id_
            elif which in _SUMMED_VIEWS:
                views = await self._from_every_unit(VIEW.pack(which, id_), principal)
                if isinstance(views, tuple):
                    return views
                return Result.ok, _ENC.encode(_SUMMED_VIEWS[which](views))
            else:
                return not_served(f"view {which}")
            code, body = answer_of(await self._send(unit, "view", VIEW.pack(which, sent), principal))
        except Double11Error as exc:
            return refusal(exc)
        return code, answer_with_cluster_ids(unit, body)

    async def sku_page(self, merchant: int, after: int, limit: int) -> tuple[int, bytes]:
        """GET /v1/skus: the same page from every unit, the counts added up."""
        try:
            pages = await self._from_every_unit(VIEW.pack(View.SKU_PAGE, 0) +
                                                SKU_PAGE_QUERY.pack(merchant, after, limit), OPERATOR)
        except Double11Error as exc:
            return refusal(exc)
        if isinstance(pages, tuple):
            return pages
        return Result.ok, _ENC.encode(summed_pages(pages))

    async def _from_every_unit(self, payload: bytes, principal: Principal) -> list[Any] | tuple[int, bytes]:
        """Every unit's answer to one view, decoded; or the first refusal."""
        replies = await asyncio.gather(*(self._send(u, "view", payload, principal)
                                         for u in range(len(self.slot_map.units))))
        decoded = []
        for reply in replies:
            code, body = answer_of(reply)
            if code != Result.ok:
                return code, body
            decoded.append(msgspec.json.decode(body))
        return decoded

    def stats(self) -> dict[str, Any]:
        """/v1/stats: the units' latest published figures summed, as one festival's."""
        view = self.aggregator.view()
        # the units' clock and its pace, as one machine's /v1/stats says its own (the figures are as published)
        view["at"] = max(view["at"], self.aggregator.clock_ms())
        view["speedup"] = self.aggregator.speedup()
        return view

    async def stock_probe(self, payload: bytes) -> tuple[int, bytes]:
        """Every checkout passes to its unit (http/flow_control.py's PASS): a
        SKU sold out in one unit may still sell in another."""
        return Result.ok, bytes(len(payload) // STOCK_PROBE_ITEM.size)

    async def health(self) -> tuple[int, bytes]:
        """Ok while every unit has a primary answering; else 503 naming the first that has not."""
        for unit, said in zip(self.slot_map.units, await asyncio.gather(
                *(self._unit_health(unit) for unit in self.slot_map.units))):
            if said is not None:
                return refusal(Double11Error(Result.unavailable, message=f"unit {unit} {said}; retry with the same "
                                                                         "idempotency_key once it is back"))
        return _OK

    async def _unit_health(self, unit: str) -> str | None:
        try:
            await ask(self.nc, unit, "state", b"", limits.front_health_s_max)
        except nats.errors.NoRespondersError:
            return "has no primary serving (a standby may be taking over)"
        except (nats.errors.TimeoutError, TimeoutError):
            return f"did not answer within {limits.front_health_s_max:g} s"
        except Double11Error as exc:
            return f"refused: {exc.message or exc.code.name}"
        return None

    async def metrics(self) -> dict[str, int | float]:
        return {"double11_cluster_units": len(self.slot_map.units),
                "double11_cluster_requests_resent_total": self.client.retries,
                "double11_cluster_figures_received_total": self.aggregator.received}

    # ------------------------------------------------------------ routing
    def _buyer(self, body: bytes) -> _Buyer | None:
        """The checkout's or grant's buyer and coupons; None (unit 0: it
        answers the refusal) where the body does not read."""
        try:
            read = _read_buyer(body)
        except msgspec.DecodeError:
            return None
        return read if 0 < read.buyer <= limits.id_max else None

    def _foreign_coupon(self, unit: int, coupons: list[int]) -> tuple[int, bytes] | None:
        """The refusal of a checkout in unit `unit` naming a coupon of another
        unit (not_your_coupon) or of none (unknown_coupon); None if it names none."""
        for coupon in coupons:
            named = int(unit_of_id(np.array([coupon], dtype=np.int64))[0]) if 0 < coupon <= limits.id_max else unit
            if named != unit:
                units = len(self.slot_map.units)
                code = Result(int(foreign_coupon_codes(np.array([coupon], dtype=np.int64), units)[0]))
                return code, _ENC.encode(error_body(code, message=coupon_message(code, coupon)))
        return None

    def _unit_of(self, op: int, target: int) -> int:
        """The unit index serving one command (unit 0 when none does: it answers why)."""
        unit, _ = units_of_commands(np.array([op], dtype=np.uint8), np.array([target], dtype=np.int64),
                                    np.zeros(1, dtype=np.uint8), self.slot_map)
        return max(int(unit[0]), 0)

    async def _send(self, unit: int, request: str, payload: bytes, principal: Principal) -> bytes:
        return await self.client.send(unit, request, payload, principal_headers(principal), self._wait_s)

