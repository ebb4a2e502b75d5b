"""The OpenAPI 3.1 document of the HTTP API.

The commands (their routes, request bodies, bounds and results) are rendered
from their declarations (double11/areas.py, double11/spec.py); the answers
and views from msgspec Structs.  The Structs are used for the document only
(the engine validates commands itself, the HTTP layer decodes bodies untyped
so it never answers for the engine).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from double11 import areas, limits
from double11.access import policy
from double11.access.roles import OPERATOR_ONLY, Role
from double11.engine.commands import Discounts
from double11.errors import Result
from double11.spec import Command, Field
from double11.statuses import HTTP_STATUS

# --------------------------------------------------------------------------- responses


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class Error(msgspec.Struct):
    error: ErrorDetail


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


# where a checkout has any discount, it, its orders and its lines carry
# list_fen and discounts beside amount_fen, the payable amount (docs/promotions.md)
class CheckoutLineView(msgspec.Struct, omit_defaults=True):
    sku: int
    qty: int
    price_fen: int  # the list price
    amount_fen: int
    order: int
    list_fen: int | None = None
    discounts: Discounts | None = None


class CheckoutOrderView(msgspec.Struct, omit_defaults=True):
    order: int
    merchant: int
    amount_fen: int
    status: str
    list_fen: int | None = None
    discounts: Discounts | None = None


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
    list_fen: int | None = None
    discounts: Discounts | None = None


class OrderLineView(msgspec.Struct, omit_defaults=True):
    sku: int
    qty: int
    price_fen: int
    amount_fen: int
    list_fen: int | None = None
    discounts: Discounts | None = None


class OrderView(msgspec.Struct, omit_defaults=True):
    order: int
    checkout: int
    buyer: int
    merchant: int
    status: Literal["reserved", "paid", "settled", "refunded", "cancelled", "expired"]
    amount_fen: int
    lines: list[OrderLineView]
    list_fen: int | None = None
    discounts: Discounts | None = None


class LedgerView(msgspec.Struct):
    accounts: dict[str, Any]
    sum: int
    transfers: int


class SoldOutDeal(msgspec.Struct):
    deal: int
    sku: int
    kind: str
    sold_out_at: int


class PromotionFigures(msgspec.Struct):
    discounts_fen: Discounts  # of the payments so far; refunds do not take them back
    coupons_granted: int
    coupons_used: int
    deals_sold_out: int
    coupons_left: dict[str, int]  # by template kind: what the templates may still grant
    coupon_budget_left_fen: dict[str, int]  # by template kind: those coupons at face value
    deals_sold_out_latest: list[SoldOutDeal]  # newest first


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
    promotions: PromotionFigures


_ANSWERS = tuple(command.answer for command in areas.COMMANDS)
_COMPONENTS = (
    Error, *_ANSWERS, BatchResponse, SkuView, SkuPage, CheckoutView, OrderView, LedgerView, Stats,
    *(read.answer for read in areas.READS),
)

_REF = "#/components/schemas/{name}"


def _ref_name(name: str) -> dict:
    return {"$ref": _REF.format(name=name)}


def _ref(t: type) -> dict:
    return _ref_name(t.__name__)


def _json(t: type) -> dict:
    return {"application/json": {"schema": _ref(t)}}


def _err(*codes: Result) -> dict:
    out: dict[str, dict] = {}
    for c in dict.fromkeys(codes):  # once each, in the order given
        st = str(HTTP_STATUS[c])
        entry = out.setdefault(st, {"description": "", "content": _json(Error)})
        entry["description"] = (entry["description"] + ", " if entry["description"] else "") + c.name
    return out


_TRANSPORT = (Result.invalid_request, Result.body_too_large, Result.not_found,
              Result.method_not_allowed, Result.overloaded, Result.unavailable, Result.storage_unavailable)


def _id_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": limits.id_max}}


def _schema(field: Field) -> dict:
    """A field's JSON schema: its type, its bounds and what it means."""
    schema: dict[str, Any] = {"description": field.meaning}
    if field.kind == "integer":
        schema.update(type="integer", minimum=field.low, maximum=field.high)
    elif field.kind == "string":
        schema.update(type="string", minLength=field.low, maxLength=field.high)
    elif field.kind == "choice":
        schema.update(type="string", enum=list(field.choices))
    elif len(field.items) == 1:  # a list of one-field items holds them bare: [10, 20]
        schema.update(type="array", items=_schema(field.items[0]), minItems=field.low, maxItems=field.high)
    else:
        schema.update(type="array", items=_object(field.items), minItems=field.low, maxItems=field.high)
    if field.optional:
        schema["default"] = [] if field.kind == "list" else field.default
    return schema


def _object(fields: tuple[Field, ...], **first: dict) -> dict:
    properties = {**first, **{f.name: _schema(f) for f in fields}}
    # a field that may be left out is not required
    required = [*first, *(f.name for f in fields if not f.optional)]
    return {"type": "object", "properties": properties, "required": required}


def _typed(field: Field) -> dict:
    """A field's JSON schema in a batch's command: its type only, its bound in
    words.  A batch with a command not of its types is refused whole; a value
    out of its bounds is that command's own refusal in the results (the
    single request's schema holds the bounds: there it is the request's)."""
    bound = f"{field.low}..{field.high} {field.unit}" if field.kind == "list" else field.wanted
    schema: dict[str, Any] = {"description": f"{field.meaning}; {bound}"}
    if field.kind == "integer":
        schema["type"] = "integer"
    elif field.kind in ("string", "choice"):
        schema["type"] = "string"
    elif len(field.items) == 1:
        schema.update(type="array", items=_typed(field.items[0]))
    else:
        schema.update(type="array", items={"type": "object", "properties": {f.name: _typed(f) for f in field.items},
                                           "required": [f.name for f in field.items if not f.optional]})
    if field.optional:
        schema["default"] = [] if field.kind == "list" else field.default
    return schema


def _title(command: Command, suffix: str) -> str:
    return command.op.capitalize() + suffix


def _command_components() -> dict[str, dict]:
    """Per command: its single request's body (`<Op>Request`) and its form in
    a batch (`<Op>Command`: op, the path's ids and the body); the batch's."""
    out: dict[str, dict] = {}
    for command in areas.COMMANDS:
        out[_title(command, "Request")] = _object(command.body_fields)
        typed = {f.name: _typed(f) for f in command.fields}
        out[_title(command, "Command")] = {
            "type": "object", "properties": {"op": {"const": command.op}, **typed},
            "required": ["op", *(f.name for f in command.fields if not f.optional)]}
    out["BatchCommand"] = {
        "description": "One command: `op` and that op's fields, of their JSON types (a batch with a command that "
                       "is not is refused whole: 400 naming the command's index and the field). A value out of its "
                       "bounds is refused in that command's result only, as the single request is.",
        "oneOf": [_ref_name(_title(c, "Command")) for c in areas.COMMANDS],
        "discriminator": {"propertyName": "op", "mapping": {
            c.op: _REF.format(name=_title(c, "Command")) for c in areas.COMMANDS}}}
    out["BatchRequest"] = {"type": "object", "required": ["commands"], "properties": {"commands": {
        "type": "array", "items": _ref_name("BatchCommand"), "maxItems": limits.batch_commands_max}}}
    return out


def _command(command: Command) -> dict:
    op: dict[str, Any] = {"summary": command.summary}
    if command.path_fields:
        op["parameters"] = [{"name": f.name, "in": "path", "required": True, "description": f.meaning,
                             "schema": {"type": "integer", "minimum": f.low, "maximum": f.high}}
                            for f in command.path_fields]
    op["requestBody"] = {"required": True, "content": {
        "application/json": {"schema": _ref_name(_title(command, "Request"))}}}
    op["responses"] = {str(HTTP_STATUS[command.success]): {"description": "ok", "content": _json(command.answer)},
                       **_err(*_TRANSPORT, *command.shape_codes, Result.idempotency_key_reused,
                              *command.results)}
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


def build_openapi(open_access: bool = False) -> dict:
    """The document; `open_access`: of a server that takes no tokens (serve
    --open), which declares none."""
    _, components = msgspec.json.schema_components(_COMPONENTS, ref_template=_REF)
    components.update(_command_components())
    binary = "application/x-double11-batch"
    paths = {
        **{command.route: _command(command) for command in areas.COMMANDS},
        "/v1/checkouts/{checkout}": _view("A checkout", CheckoutView, "checkout",
                                          Result.unknown_checkout),
        "/v1/orders/{order}": _view("An order", OrderView, "order", Result.unknown_order),
        "/v1/skus/{sku}": _view("A SKU and its stock", SkuView, "sku", Result.unknown_sku),
        "/v1/skus": _sku_list(),
        **{read.route: _view(read.summary, read.answer, read.route.split("{")[1].split("}")[0], read.missing)
           for read in areas.READS},
        "/v1/ledger": _view("The ledger: balances by account class, sum (always 0)", LedgerView, None),
        "/v1/stats": _view("The live festival figures", Stats, None),
        "/v1/batch": {"post": {
            "summary": "Apply many commands in order; one result per command",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref_name("BatchRequest")},
                binary: {"schema": {"type": "string", "contentMediaType": binary},
                         "description": "the compact columnar batch (double11.engine.wire)"}}},
            "responses": {
                "200": {"description": "one result per command, in order",
                        "content": {**_json(BatchResponse),
                                    binary: {"schema": {"type": "string", "contentMediaType": binary}}}},
                **_err(*_TRANSPORT, Result.batch_too_large)}}},
        "/v1/stats/stream": {"get": {
            "summary": "Server-sent events: `data: <stats JSON>` every 500 ms",
            "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {
                # one event (OpenAPI 3.1 has no schema for a stream as a whole): its data, the figures
                "schema": {"type": "object", "required": ["data"], "properties": {"data": {
                    "type": "string", "contentMediaType": "application/json", "contentSchema": _ref(Stats)}}}}}}}}},
        "/healthz": {"get": {
            "summary": "Whether the server is up, its engine with it, and its command log writable",
            "responses": {"200": {"description": "up", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"status": {"const": "ok"}}}}}},
                **_err(Result.unavailable, Result.storage_unavailable)}}},
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
    if not open_access:
        _secure(paths)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "double11", "version": "0.1.0",
                 "description": "Singles' Day transaction core. Money is integer fen; times are ms "
                                "since the Unix epoch on the festival clock. Every error is "
                                '{"error": {"code", "message"}}.'},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {"schemas": components, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A token signed by the festival's key: `double11 tokens issue --role <role> [--id N]` "
                           "(docs/api.md, Tokens and roles)."}}},
    }
    if open_access:
        del doc["security"], doc["components"]["securitySchemes"]
    return doc


def _secure(paths: dict[str, dict]) -> None:
    """Each operation's security (none for the public ones) and who may call
    it, from the one table the front checks (access.policy)."""
    for route, operations in paths.items():
        rule = policy.ROUTES.get(route, OPERATOR_ONLY)
        for op in operations.values():
            if rule is policy.PUBLIC:
                op["security"] = []
                continue
            who = ["operator", *sorted(r.name for r in rule.anyone)]
            who += [f"{r.name} (its own)" for r in sorted(rule.own - rule.anyone)]
            op["description"] = (op.get("description", "") + " " if op.get("description") else "") + \
                "Who may: " + ", ".join(who) + "."
            # a buyer's commands are held to its rate (http/flow_control.py)
            limited = (Result.rate_limited,) if "post" in operations and Role.buyer in rule.own else ()
            for status, entry in _err(Result.unauthenticated, Result.forbidden, *limited).items():
                if status in op["responses"]:
                    op["responses"][status]["description"] += ", " + entry["description"]
                else:
                    op["responses"][status] = entry
