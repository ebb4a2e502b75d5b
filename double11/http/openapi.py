"""The OpenAPI 3.1 document of the HTTP API, generated from msgspec Structs.

The Structs describe the wire shapes of docs/api.md; they are used for the
document only (the engine validates commands itself, the HTTP layer decodes
bodies untyped so it never answers for the engine).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from double11 import limits
from double11.errors import HTTP_STATUS, Result

# --------------------------------------------------------------------------- requests


class Line(msgspec.Struct):
    sku: int
    qty: int


class CheckoutRequest(msgspec.Struct):
    buyer: int
    country: str
    channel: Literal["mobile", "pc"]
    lines: list[Line]
    idempotency_key: str


class PayRequest(msgspec.Struct):
    amount_fen: int
    idempotency_key: str


class KeyOnlyRequest(msgspec.Struct):
    idempotency_key: str


class RestockRequest(msgspec.Struct):
    qty: int
    idempotency_key: str


class BatchCommand(msgspec.Struct):
    """One command: `op` plus that op's fields (see docs/api.md)."""

    op: Literal["checkout", "pay", "cancel", "confirm", "refund", "restock"]
    idempotency_key: str
    buyer: int | msgspec.UnsetType = msgspec.UNSET
    country: str | msgspec.UnsetType = msgspec.UNSET
    channel: Literal["mobile", "pc"] | msgspec.UnsetType = msgspec.UNSET
    lines: list[Line] | msgspec.UnsetType = msgspec.UNSET
    checkout: int | msgspec.UnsetType = msgspec.UNSET
    order: int | msgspec.UnsetType = msgspec.UNSET
    sku: int | msgspec.UnsetType = msgspec.UNSET
    qty: int | msgspec.UnsetType = msgspec.UNSET
    amount_fen: int | msgspec.UnsetType = msgspec.UNSET


class BatchRequest(msgspec.Struct):
    commands: list[BatchCommand]


# --------------------------------------------------------------------------- responses


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class Error(msgspec.Struct):
    error: ErrorDetail


class CheckoutOrder(msgspec.Struct):
    order: int
    merchant: int
    amount_fen: int


class CheckoutCreated(msgspec.Struct):
    checkout: int
    amount_fen: int
    orders: list[CheckoutOrder]
    status: Literal["reserved"]
    expires_at: int


class Paid(msgspec.Struct):
    checkout: int
    status: Literal["paid"]
    amount_fen: int


class Cancelled(msgspec.Struct):
    checkout: int
    status: Literal["cancelled"]


class Settled(msgspec.Struct):
    order: int
    status: Literal["settled"]
    merchant_fen: int
    commission_fen: int


class Refunded(msgspec.Struct):
    order: int
    status: Literal["refunded"]
    amount_fen: int


class Restocked(msgspec.Struct):
    sku: int
    qty: int


class CommandResult(msgspec.Struct):
    status: int
    body: dict[str, Any]


class BatchResponse(msgspec.Struct):
    results: list[CommandResult]


class SkuView(msgspec.Struct):
    sku: int
    name: str  # the product's name ("SKU <id>" where the catalog has none)
    merchant: int
    merchant_name: str
    brand: int
    brand_name: str
    price_fen: int
    stock: int
    reserved: int
    sold: int
    stocked: int


class SkuPage(msgspec.Struct):
    """A page of SKUs in id order; pass `next_after` as `after` for the next
    page (null: this was the last)."""

    skus: list[SkuView]
    next_after: int | None


class CheckoutLineView(msgspec.Struct):
    sku: int
    qty: int
    price_fen: int
    amount_fen: int
    order: int


class CheckoutOrderView(msgspec.Struct):
    order: int
    merchant: int
    amount_fen: int
    status: str


class CheckoutView(msgspec.Struct):
    checkout: int
    buyer: int
    country: str
    channel: str
    status: Literal["reserved", "paid", "cancelled", "expired"]
    amount_fen: int
    created_at: int
    expires_at: int
    lines: list[CheckoutLineView]
    orders: list[CheckoutOrderView]


class OrderLineView(msgspec.Struct):
    sku: int
    qty: int
    price_fen: int
    amount_fen: int


class OrderView(msgspec.Struct):
    order: int
    checkout: int
    merchant: int
    status: Literal["reserved", "paid", "settled", "refunded", "cancelled", "expired"]
    amount_fen: int
    lines: list[OrderLineView]


class LedgerView(msgspec.Struct):
    accounts: dict[str, Any]
    sum: int
    transfers: int


class Stats(msgspec.Struct):
    """The live figures; see docs/api.md for every field."""

    at: int
    festival_start: int
    gmv_fen: int
    checkouts: int
    orders: int
    payments: int
    speedup: Annotated[float, msgspec.Meta(
        description="festival seconds per real second of the server's clock (serve --speedup)")]
    scale: Annotated[float, msgspec.Meta(
        description="the share of a real festival's traffic this one simulates (serve --scale; 1: real size); "
                    "amounts, counts and rates times 1/scale estimate a real day's")]


_COMPONENTS = (
    CheckoutRequest, PayRequest, KeyOnlyRequest, RestockRequest, BatchRequest,
    Error, CheckoutCreated, Paid, Cancelled, Settled, Refunded, Restocked, BatchResponse,
    SkuView, SkuPage, CheckoutView, OrderView, LedgerView, Stats,
)

_REF = "#/components/schemas/{name}"


def _ref(t: type) -> dict:
    return {"$ref": _REF.format(name=t.__name__)}


def _json(t: type) -> dict:
    return {"application/json": {"schema": _ref(t)}}


def _err(*codes: Result) -> dict:
    out: dict[str, dict] = {}
    for c in codes:
        st = str(HTTP_STATUS[c])
        entry = out.setdefault(st, {"description": "", "content": _json(Error)})
        entry["description"] = (entry["description"] + ", " if entry["description"] else "") + c.name
    return out


_TRANSPORT = (Result.invalid_request, Result.body_too_large, Result.not_found,
              Result.method_not_allowed, Result.overloaded, Result.unavailable)


def _id_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": limits.id_max}}


def _command(summary: str, req: type | None, ok_status: int, ok: type, id_name: str | None,
             *codes: Result) -> dict:
    op: dict[str, Any] = {"summary": summary}
    if id_name:
        op["parameters"] = [_id_param(id_name)]
    if req is not None:
        op["requestBody"] = {"required": True, "content": _json(req)}
    op["responses"] = {str(ok_status): {"description": "ok", "content": _json(ok)},
                       **_err(*_TRANSPORT, Result.invalid_idempotency_key,
                              Result.idempotency_key_reused, *codes)}
    return {"post": op}


def _view(summary: str, t: type, id_name: str | None, *codes: Result) -> dict:
    op: dict[str, Any] = {"summary": summary}
    if id_name:
        op["parameters"] = [_id_param(id_name)]
    op["responses"] = {"200": {"description": "ok", "content": _json(t)},
                       **_err(Result.invalid_request, Result.not_found, *codes)}
    return {"get": op}


def _sku_list() -> dict:
    def param(name: str, low: int, high: int, about: str, default: int | None = None) -> dict:
        schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
        if default is not None:
            schema["default"] = default
        return {"name": name, "in": "query", "required": False, "description": about, "schema": schema}

    return {"get": {
        "summary": "SKUs in id order, a page at a time (all, or one merchant's)",
        "parameters": [
            param("merchant", 1, limits.id_max, "only this merchant's SKUs"),
            param("after", 0, limits.id_max, "only SKUs with a higher id: the last page's next_after", 0),
            param("limit", 1, limits.sku_list_limit_max, "SKUs in the page at most", limits.sku_list_limit_default),
        ],
        "responses": {"200": {"description": "ok", "content": _json(SkuPage)},
                      **_err(Result.invalid_request, Result.not_found)}}}


def build_openapi() -> dict:
    _, components = msgspec.json.schema_components(_COMPONENTS, ref_template=_REF)
    binary = "application/x-double11-batch"
    paths = {
        "/v1/checkouts": _command(
            "Create a checkout (reserve stock)", CheckoutRequest, 201, CheckoutCreated, None,
            Result.invalid_quantity, Result.invalid_country, Result.invalid_channel,
            Result.too_many_lines, Result.empty_checkout, Result.unknown_sku, Result.out_of_stock),
        "/v1/checkouts/{checkout}/pay": _command(
            "Pay a checkout", PayRequest, 200, Paid, "checkout", Result.invalid_amount,
            Result.unknown_checkout, Result.amount_mismatch, Result.already_paid,
            Result.cancelled, Result.expired),
        "/v1/checkouts/{checkout}/cancel": _command(
            "Cancel a reserved checkout", KeyOnlyRequest, 200, Cancelled, "checkout",
            Result.unknown_checkout, Result.already_paid, Result.cancelled, Result.expired),
        "/v1/orders/{order}/confirm": _command(
            "Confirm receipt: settle a paid order to its merchant", KeyOnlyRequest, 200,
            Settled, "order", Result.unknown_order, Result.not_paid, Result.already_settled,
            Result.already_refunded),
        "/v1/orders/{order}/refund": _command(
            "Refund a paid order", KeyOnlyRequest, 200, Refunded, "order",
            Result.unknown_order, Result.not_paid, Result.already_settled,
            Result.already_refunded),
        "/v1/skus/{sku}/restock": _command(
            "Add stock to a SKU", RestockRequest, 200, Restocked, "sku",
            Result.invalid_quantity, Result.unknown_sku),
        "/v1/checkouts/{checkout}": _view("A checkout", CheckoutView, "checkout",
                                          Result.unknown_checkout),
        "/v1/orders/{order}": _view("An order", OrderView, "order", Result.unknown_order),
        "/v1/skus/{sku}": _view("A SKU and its stock", SkuView, "sku", Result.unknown_sku),
        "/v1/skus": _sku_list(),
        "/v1/ledger": _view("The ledger: balances by account class, sum (always 0)", LedgerView, None),
        "/v1/stats": _view("The live festival figures", Stats, None),
        "/v1/batch": {"post": {
            "summary": "Apply many commands in order; one result per command",
            "requestBody": {"required": True, "content": {
                **_json(BatchRequest),
                binary: {"schema": {"type": "string", "contentMediaType": binary},
                         "description": "the compact columnar batch (double11.engine.wire)"}}},
            "responses": {
                "200": {"description": "one result per command, in order",
                        "content": {**_json(BatchResponse),
                                    binary: {"schema": {"type": "string", "contentMediaType": binary}}}},
                **_err(*_TRANSPORT, Result.batch_too_large)}}},
        "/v1/stats/stream": {"get": {
            "summary": "Server-sent events: `data: <stats JSON>` every 500 ms",
            "responses": {"200": {"description": "event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}},
        "/metrics": {"get": {
            "summary": "Prometheus text exposition",
            "responses": {"200": {"description": "metrics",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/": {"get": {
            "summary": "The big-screen dashboard",
            "responses": {"200": {"description": "index.html",
                                  "content": {"text/html": {"schema": {"type": "string"}}}},
                          **_err(Result.not_found)}}},
        "/static/{file}": {"get": {
            "summary": "Dashboard static files",
            "parameters": [{"name": "file", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the file"}, **_err(Result.not_found)}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "double11", "version": "0.1.0",
                 "description": "Singles' Day transaction core. Money is integer fen; times are ms "
                                "since the Unix epoch on the festival clock. Every error is "
                                '{"error": {"code", "message"}}.'},
        "paths": paths,
        "components": {"schemas": components},
    }
