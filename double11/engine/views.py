"""What the engine's state looks like from outside: result bodies and entity views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from double11 import areas, geo
from double11.engine import refusals
from double11.engine.area_commands import values_of
from double11.engine.batch import Channel, CommandBatch, Op
from double11.engine.machine import Engine, Status
from double11.errors import Result, error_body
from double11.promotions import views as promotion_views
from double11.promotions.views import checkout_money, discounted, line_money, order_money
from double11.quotas.answers import released
from double11.quotas.spec import RELEASE

# a command's answer: its result code (Result.ok or .created when done) and
# its body; the edge says the code as an HTTP status (double11/statuses.py)
Answer = tuple[Result, dict[str, Any]]


def refusal(engine: Engine, batch: CommandBatch, i: int, code: int, ref: int, first_line: int) -> Answer:
    """The (code, body) answer to refused command i of a batch
    (`first_line`: the index of its first line in the batch): its message
    names the field, the line and the bound (refusals.py)."""
    code = refusals.RESULTS[code]
    if refusals.refused_at_the_edge(code, ref):  # the edge left its words in `notes`
        message = batch.notes.get(i)
        if message is None:  # a batch built from columns
            shaped = refusals.shape_message(batch, i, first_line)
            message = shaped[1] if shaped is not None and shaped[0] == code else None
    else:
        total = None
        if code == Result.amount_mismatch:
            total = checkout_money(engine, int(batch.target[i]) - 1)["amount_fen"]
        message = refusals.state_message(code, ref, batch, i, first_line, total)
    return code, error_body(code, message=message)


def _result(engine: Engine, batch: CommandBatch, i: int, code: int, ref: int) -> Answer:
    """The (code, body) answer to command i of a batch, done (code 0),
    but a created checkout (`results` builds those for the whole batch at once)."""
    number = int(batch.op[i])
    command = areas.BY_NUMBER[number]
    from_sent = promotion_views.FROM_SENT.get(command.op)
    if from_sent is not None:  # its answer reads what it sent, too
        start = int(batch.arg_starts()[i])
        values = values_of(command, batch.arg[start:start + int(batch.args[i])])
        body = from_sent(engine, int(batch.target[i]), values, ref)
        assert body is not None, "a thing just created or moved has a view"
        return command.success, body
    created = promotion_views.CREATED.get(command.op)
    if created is not None:
        body = created(engine, ref)
        assert body is not None, "a thing just created has a view"
        return Result.created, body
    if number == RELEASE.number:
        start = int(batch.arg_starts()[i])
        return Result.ok, released(int(batch.target[i]), int(batch.arg[start + RELEASE.arg_at("qty")]), ref)
    op = Op(number)
    if op == Op.pay:
        row = ref - 1
        return Result.ok, {"checkout": ref, "status": "paid", "amount_fen": checkout_money(engine, row)["amount_fen"]}
    if op == Op.cancel:
        return Result.ok, {"checkout": ref, "status": "cancelled"}
    if op == Op.confirm:
        # the merchant is settled on its price less only what it funds
        amounts = order_money(engine, ref - 1)
        amount = amounts["amount_fen"] + amounts["discounts"]["platform_coupon"]
        commission = engine.commission(amount)
        return Result.ok, {"order": ref, "status": "settled", "merchant_fen": amount - commission,
                           "commission_fen": commission}
    if op == Op.refund:
        return Result.ok, {"order": ref, "status": "refunded", "amount_fen": order_money(engine, ref - 1)["amount_fen"]}
    return Result.ok, {"sku": ref, "qty": int(batch.amount[i])}


def _with_money(out: dict[str, Any], amounts: dict[str, Any], shown: bool) -> dict[str, Any]:
    """`out` with its amounts: amount_fen payable, and list_fen and discounts
    where its checkout has any discount (`shown`)."""
    out["amount_fen"] = amounts["amount_fen"]
    if shown:
        out["list_fen"] = amounts["list_fen"]
        out["discounts"] = amounts["discounts"]
    return out


def _lines(engine: Engine, start: int, count: int, with_order: bool, shown: bool = False) -> list[dict[str, Any]]:
    out = []
    sku_id = engine.catalog.sku_id
    rows: Sequence[int] = range(start, start + count)
    if with_order:  # a checkout lists its lines as they were given
        rows = sorted(rows, key=lambda ln: int(engine.l_position.data[ln]))
    for ln in rows:
        sku = int(engine.l_sku.data[ln])
        qty = int(engine.l_qty.data[ln])
        line = _with_money({"sku": int(sku_id[sku]), "qty": qty, "price_fen": int(engine.l_amount.data[ln]) // qty},
                           line_money(engine, ln), shown)
        if with_order:
            line["order"] = int(engine.l_order.data[ln]) + 1
        out.append(line)
    return out


def checkout(engine: Engine, checkout_id: int) -> dict[str, Any] | None:
    if not 1 <= checkout_id <= engine.c_status.size:
        return None
    row = checkout_id - 1
    start, count = int(engine.c_order_start.data[row]), int(engine.c_orders.data[row])
    created = int(engine.c_created.data[row])
    shown = discounted(engine, row)
    out = {
        "checkout": checkout_id,
        "buyer": int(engine.b_id.data[engine.c_buyer.data[row]]),
        "country": geo.decode(int(engine.c_country.data[row])),
        "channel": Channel(int(engine.c_channel.data[row])).name,
        "status": Status(int(engine.c_status.data[row])).name,
    }
    _with_money(out, checkout_money(engine, row), shown)
    out |= {
        "created_at": created,
        "expires_at": created + engine.config.payment_timeout_ms,
        "lines": _lines(engine, int(engine.c_line_start.data[row]), int(engine.c_lines.data[row]), True, shown),
        "orders": [
            _with_money({"order": o + 1, "merchant": int(engine.catalog.merchant_id[engine.o_merchant.data[o]])},
                        order_money(engine, o), shown) | {"status": Status(int(engine.o_status.data[o])).name}
            for o in range(start, start + count)
        ],
    }
    return out


def order(engine: Engine, order_id: int) -> dict[str, Any] | None:
    if not 1 <= order_id <= engine.o_status.size:
        return None
    row = order_id - 1
    shown = discounted(engine, int(engine.o_checkout.data[row]))
    out = {
        "order": order_id,
        "checkout": int(engine.o_checkout.data[row]) + 1,
        "buyer": int(engine.b_id.data[engine.c_buyer.data[int(engine.o_checkout.data[row])]]),
        "merchant": int(engine.catalog.merchant_id[engine.o_merchant.data[row]]),
        "status": Status(int(engine.o_status.data[row])).name,
    }
    _with_money(out, order_money(engine, row), shown)
    out["lines"] = _lines(engine, int(engine.o_line_start.data[row]), int(engine.o_lines.data[row]), False, shown)
    return out


def sku(engine: Engine, sku_id: int) -> dict[str, Any] | None:
    if not 0 < sku_id < 2**63:
        return None
    row = int(engine.sku_index.lookup(np.array([sku_id], dtype=np.int64))[0])
    if row < 0:
        return None
    return sku_at(engine, row)


def sku_at(engine: Engine, row: int) -> dict[str, Any]:
    """The view of the SKU at catalog row `row`: its names come from the
    catalog (read for views only, never by the engine's loop)."""
    cat = engine.catalog
    stock, sold, stocked = int(engine.available[row]), int(engine.sku_sold[row]), int(engine.sku_stocked[row])
    rows = engine.skus.rows
    return {
        "sku": int(cat.sku_id[row]),
        "name": cat.sku_name_at(row),
        "merchant": int(cat.sku_merchant[row]),
        "merchant_name": cat.merchant_name[int(rows["merchant"][row])],
        "brand": int(cat.sku_brand[row]),
        "brand_name": cat.brand_name[int(rows["brand"][row])],
        "price_fen": int(engine.sku_price[row]),
        "stock": stock,
        "reserved": stocked - stock - sold,  # as Engine.sku_reserved, for one row (not the whole array)
        "sold": sold,
        "stocked": stocked,
    }


def sku_page(engine: Engine, rows: np.ndarray, next_after: int | None) -> dict[str, Any]:
    """A page of GET /v1/skus: the SKUs at catalog `rows`, and the `after`
    that asks for the next page (None on the last)."""
    return {"skus": [sku_at(engine, row) for row in rows.tolist()], "next_after": next_after}


def _created_with_discounts(engine: Engine, checkout_id: int, order_ids: list[int], merchants: list[int],
                            expires_at: int) -> dict[str, Any]:
    amounts = checkout_money(engine, checkout_id - 1)
    return {
        "checkout": checkout_id,
        "amount_fen": amounts["amount_fen"],
        "orders": [{"order": o, "merchant": m} | order_money(engine, o - 1) for o, m in zip(order_ids, merchants)],
        "status": "reserved",
        "expires_at": expires_at,
        "list_fen": amounts["list_fen"],
        "discounts": amounts["discounts"],
    }


def results(engine: Engine, batch: CommandBatch, code: np.ndarray, ref: np.ndarray,
            start: int, stop: int) -> list[Answer]:
    """The (code, body) answers to commands start..stop of a batch.  Created checkouts, the
    bulk of the traffic, are gathered from the columns once for the whole
    slice; everything else goes through `result`."""
    codes = code[start:stop].tolist()
    refs = ref[start:stop].tolist()
    ops = batch.op[start:stop]
    created = np.flatnonzero((code[start:stop] == Result.ok) & (ops == Op.checkout))
    bodies: dict[int, dict[str, Any]] = {}
    if created.size:
        rows = ref[start:stop][created] - 1
        first = engine.c_order_start.data[rows]
        counts = engine.c_orders.data[rows].astype(np.int64)
        order_rows = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        order_merchants = engine.catalog.merchant_id[engine.o_merchant.data[order_rows]].tolist()
        order_amounts = engine.o_amount.data[order_rows].tolist()
        order_ids = (order_rows + 1).tolist()
        amounts = engine.c_amount.data[rows].tolist()
        expires = (engine.c_created.data[rows] + engine.config.payment_timeout_ms).tolist()
        at = 0
        linked = (engine.c_promo.data[rows] != 0).tolist()  # a promotions record: maybe discounts
        priced = [bool(has) and discounted(engine, int(row)) for has, row in zip(linked, rows.tolist())]
        for k, (i, n) in enumerate(zip(created.tolist(), counts.tolist())):
            if priced[k]:  # with its discounts, for the checkout and its orders
                bodies[i] = _created_with_discounts(engine, refs[i], order_ids[at:at + n], order_merchants[at:at + n],
                                                    expires[k])
            else:
                bodies[i] = {
                    "checkout": refs[i],
                    "amount_fen": amounts[k],
                    "orders": [{"order": order_ids[j], "merchant": order_merchants[j],
                                "amount_fen": order_amounts[j]} for j in range(at, at + n)],
                    "status": "reserved",
                    "expires_at": expires[k],
                }
            at += n
    out = []
    first_line: np.ndarray | None = None  # of each command: where a refusal's lines are
    for i in range(stop - start):
        body = bodies.get(i)
        if body is not None:
            out.append((Result.created, body))
        elif codes[i] != Result.ok:
            if first_line is None:
                first_line = refusals.first_lines(batch, stop)
            out.append(refusal(engine, batch, start + i, codes[i], refs[i], int(first_line[start + i])))
        else:
            out.append(_result(engine, batch, start + i, codes[i], refs[i]))
    return out
