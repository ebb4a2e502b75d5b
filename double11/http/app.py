"""The HTTP app: a tiny hand-written router over the festival's operations
(`link.local.LocalFestival`), on granian's RSGI interface (a request is one
`await proto()` for the body and one `proto.response_bytes(...)`: about a
third less Python per request than ASGI's message dicts, measured with the
same server and client).

Transport only.  Request bodies go to the festival as they came: a single
command's is parsed with the rest of its group commit in one compiled pass,
a batch's is decoded and checked there (not a JSON object: 400
invalid_request; over limits.batch_commands_max: 413 batch_too_large).  The
HTTP layer answers for: a body over limits.http_body_bytes_max (413
body_too_large, from Content-Length and while streaming), a path id that is
not a positive integer (400 invalid_request), unknown paths (404 not_found)
and wrong methods (405 method_not_allowed).  A request refused anywhere
changes nothing.  One refused before its body was read has the body read
and dropped before the answer (`settle_body`), so a client reusing the
connection never loses its next request; a body that cannot be (over the
limit) gets an answer with Connection: close.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any, final
from urllib.parse import parse_qsl

import msgspec
from granian.rsgi import ProtocolClosed, ProtocolError

from double11 import areas, limits
from double11.access import policy
from double11.access.roles import OPERATOR, OPERATOR_ONLY, Role, a_token_of
from double11.access.tokens import Verifier
from double11.engine.batch import Op
from double11.engine.refusals import shown
from double11.errors import Double11Error, Result, error_body
from double11.http.flow_control import BuyerRates, RateLimited, RefusedCheckouts, SoldOutSkus
from double11.http.metrics import HttpMetrics
from double11.http.openapi import build_openapi
from double11.link.admission import batch_commands
from double11.link.frames import View
from double11.statuses import HTTP_STATUS, STATUS_OF_CODE

log = logging.getLogger("double11.http")

STATIC_DIR = Path(__file__).resolve().parent.parent / "screen" / "static"
BINARY_BATCH_TYPE = "application/x-double11-batch"
SSE_INTERVAL_S = 0.5

_ENC = msgspec.json.Encoder()

_H_JSON = [("content-type", "application/json")]
# every 429 overloaded says when to come back (RFC 9110: delay-seconds)
_H_OVERLOADED = _H_JSON + [("retry-after", str(limits.overloaded_retry_after_s))]
# the JSON headers of an answer by its result code: a lookup, not a test, on the phones' path
_H_OF_CODE = [_H_OVERLOADED if code == Result.overloaded else _H_JSON for code in range(len(STATUS_OF_CODE))]
# a 401 says how to authenticate (RFC 6750)
_H_OF_CODE[Result.unauthenticated] = _H_JSON + [("www-authenticate", 'Bearer realm="double11"')]
# the disk may come back: say when to try again
_H_OF_CODE[Result.storage_unavailable] = _H_JSON + [("retry-after", str(limits.storage_unavailable_retry_after_s))]
_H_BINARY = [("content-type", BINARY_BATCH_TYPE)]
_H_TEXT = [("content-type", "text/plain; version=0.0.4; charset=utf-8")]
_H_SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".json": "application/json", ".png": "image/png",
          ".ico": "image/x-icon", ".woff2": "font/woff2", ".map": "application/json",
          ".txt": "text/plain; charset=utf-8", ".webp": "image/webp", ".jpg": "image/jpeg"}

_ID_MAX = limits.id_max
_BUYER, _CHECKOUT, _OUT_OF_STOCK = int(Role.buyer), int(Op.checkout), int(Result.out_of_stock)
_STATUS_OUT_OF_STOCK = HTTP_STATUS[Result.out_of_stock]
_BODY_MAX = limits.http_body_bytes_max

# route labels (also the metric label and the OpenAPI path)
R_CHECKOUTS = "/v1/checkouts"
R_BATCH = "/v1/batch"
ROUTES: tuple[str, ...] = (
    "/v1/checkouts",
    "/v1/checkouts/{checkout}/pay",
    "/v1/checkouts/{checkout}/cancel",
    "/v1/orders/{order}/confirm",
    "/v1/orders/{order}/refund",
    "/v1/skus/{sku}/restock",
    "/v1/checkouts/{checkout}",
    "/v1/orders/{order}",
    "/v1/skus/{sku}",
    "/v1/skus",
    "/v1/ledger",
    "/v1/stats",
    "/v1/batch",
    "/v1/stats/stream",
    "/v1/coupon-templates",
    "/v1/threshold-discounts",
    "/v1/deals",
    "/v1/coupon-templates/{template}/grants",
    "/v1/skus/{sku}/release",
    "/v1/coupon-templates/{template}/budget",
    "/v1/deals/{deal}/qty",
    "/v1/coupon-templates/{template}",
    "/v1/coupons/{coupon}",
    "/v1/buyers/{buyer}/coupons",
    "/v1/deals/{deal}",
    "/v1/threshold-discounts/{threshold}",
    "/metrics",
    "/healthz",
    "/openapi.json",
    "/",
    "/static/{file}",
)
R_UNMATCHED = "unmatched"


class _Disconnected(Exception):
    pass


class _BodyRefused(Double11Error):
    """A body refused before all of it was read (too large, or a bad
    Content-Length): the answer closes the connection, since what is left of
    the body would be read as the next request."""


_CLOSE = ("connection", "close")


def _error(code: Result, detail: str | None = None) -> tuple[int, bytes, list]:
    return HTTP_STATUS[code], _ENC.encode(error_body(code, detail)), _H_JSON


async def read_body(scope: Any, proto: Any) -> bytes:
    """The whole request body, refused with body_too_large past the limit
    (from Content-Length before reading; a body without one is streamed and
    counted)."""
    length = scope.headers.get("content-length")
    try:
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise _BodyRefused(Result.invalid_request, "bad Content-Length") from None
            if n > _BODY_MAX:
                raise _BodyRefused(Result.body_too_large, f"{n} bytes > {_BODY_MAX}")
            return await proto()
        chunks = []
        size = 0
        async for chunk in proto:
            size += len(chunk)
            if size > _BODY_MAX:
                raise _BodyRefused(Result.body_too_large, f"more than {_BODY_MAX} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except ProtocolClosed:
        raise _Disconnected from None


async def settle_body(scope: Any, proto: Any, headers: list, refused: BaseException | None = None) -> list:
    """The headers of an answer given before its request's body was read (a
    refused path, method or id, or a bug): the body is read and dropped first,
    so the connection stays in step for the client's next request.  Where it
    cannot be (over the limit, or cut off while streaming), the answer says
    Connection: close, so a client reusing the connection knows to open
    another rather than lose its next request.  A body already read is left
    as it is."""
    if isinstance(refused, _BodyRefused):
        return headers + [_CLOSE]
    try:
        await read_body(scope, proto)
    except ProtocolError:  # the body was read already
        pass
    except _BodyRefused:
        return headers + [_CLOSE]
    return headers


# GET /v1/skus's query parameters: (lowest, highest, default); merchant 0 is all merchants
_SKU_PAGE_PARAMS: dict[str, tuple[int, int, int]] = {
    "merchant": (1, _ID_MAX, 0),
    "after": (0, _ID_MAX, 0),
    "limit": (1, limits.sku_list_limit_max, limits.sku_list_limit_default),
}


def sku_page_query(query: str) -> tuple[int, int, int]:
    """(merchant, after, limit) of GET /v1/skus?merchant=&after=&limit=;
    400 invalid_request naming the parameter and its bounds otherwise."""
    given: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _SKU_PAGE_PARAMS:
            raise Double11Error(Result.invalid_request, message=f"unknown query parameter {name[:40]!r} "
                                f"(known: {', '.join(_SKU_PAGE_PARAMS)})")
        if name in given:
            raise Double11Error(Result.invalid_request, message=f"query parameter {name} is given twice")
        given[name] = value
    out = []
    for name, (lowest, highest, default) in _SKU_PAGE_PARAMS.items():
        text = given.get(name)
        if text is None:
            out.append(default)
            continue
        if not (text.isascii() and text.isdigit() and len(text) <= 19 and lowest <= int(text) <= highest):
            raise Double11Error(Result.invalid_request,
                                message=f"{name} must be an integer from {lowest} to {highest}, got {text[:40]!r}")
        out.append(int(text))
    return out[0], out[1], out[2]


@final  # so that `type(handler) is _SingleCommand` tells mypy the other handlers apart
class _SingleCommand:
    """The route of a single command: its op (the App answers it inline)."""

    __slots__ = ("op",)

    def __init__(self, op: Op | int) -> None:
        self.op = op


# a route's handler for a method: a coroutine function (scope, proto, id), or a single command
_Handler = Callable[..., Any] | _SingleCommand


def _parse_id(s: str, label: str) -> int:
    if s.isascii() and s.isdigit() and len(s) <= 19:
        n = int(s)
        if 1 <= n <= _ID_MAX:
            return n
    name = label[label.index("{") + 1:label.index("}")]  # the route's id: checkout, order or sku
    raise Double11Error(Result.invalid_request, message=f"{name} id in the path must be a positive integer "
                                                        f"up to {_ID_MAX}, got {shown(s)}")


def _sent_a_body(scope: Any) -> bool:
    headers = scope.headers
    return headers.get("content-length", "0") != "0" or headers.get("transfer-encoding") is not None


class App:
    """The double11 HTTP API as an RSGI application, over a festival with the
    operations of `link.local.LocalFestival` (that one in-process, or
    `link.remote.RemoteFestival` in the engine process)."""

    def __init__(self, festival: Any, static_dir: str | Path | None = None, verifier: Verifier | None = None,
                 buyer_rates: BuyerRates | None = None) -> None:
        """`verifier`: the festival's tokens (None: no tokens, every route open).
        `buyer_rates`: each buyer token's rate (None: no per-buyer limit)."""
        self.festival = festival
        self._verifier = verifier
        self.buyer_rates = buyer_rates
        # out_of_stock answers, for their retries, and the SKUs sold out (http/flow_control.py)
        self.refused_checkouts = RefusedCheckouts()
        self.sold_out = SoldOutSkus(festival)
        self._rules = policy.ROUTES
        self.static_dir = Path(static_dir) if static_dir is not None else STATIC_DIR
        self.metrics = HttpMetrics()
        self.closing = False
        self._openapi: bytes | None = None
        self._streams: set[asyncio.Future] = set()
        self._single = festival.single
        single = _SingleCommand

        view = festival.view

        def read(which: int):
            async def handler(scope, proto, id_, principal):
                code, body = await view(which, id_ or 0, principal)
                return STATUS_OF_CODE[code], body, _H_OF_CODE[code]
            return handler

        # exact path -> (route label, {method: handler})
        self._exact: dict[str, tuple[str, dict[str, _Handler]]] = {
            "/v1/checkouts": (R_CHECKOUTS, {"POST": single(Op.checkout)}),
            "/v1/batch": (R_BATCH, {"POST": self._batch}),
            "/v1/skus": ("/v1/skus", {"GET": self._sku_page}),
            "/v1/ledger": ("/v1/ledger", {"GET": read(View.LEDGER)}),
            "/v1/stats": ("/v1/stats", {"GET": read(View.STATS)}),
            "/v1/stats/stream": ("/v1/stats/stream", {"GET": self._stream}),
            "/metrics": ("/metrics", {"GET": self._metrics}),
            "/healthz": ("/healthz", {"GET": self._healthz}),
            "/openapi.json": ("/openapi.json", {"GET": self._openapi_doc}),
            "/": ("/", {"GET": self._index}),
        }
        # /v1/<collection>/<id>[/<action>] -> (route label, {method: handler})
        self._by_id: dict[Any, tuple[str, dict[str, _Handler]]] = {
            ("checkouts", "pay"): ("/v1/checkouts/{checkout}/pay", {"POST": single(Op.pay)}),
            ("checkouts", "cancel"): ("/v1/checkouts/{checkout}/cancel",
                                      {"POST": single(Op.cancel)}),
            ("orders", "confirm"): ("/v1/orders/{order}/confirm", {"POST": single(Op.confirm)}),
            ("orders", "refund"): ("/v1/orders/{order}/refund", {"POST": single(Op.refund)}),
            ("skus", "restock"): ("/v1/skus/{sku}/restock", {"POST": single(Op.restock)}),
            "checkouts": ("/v1/checkouts/{checkout}", {"GET": read(View.CHECKOUT)}),
            "orders": ("/v1/orders/{order}", {"GET": read(View.ORDER)}),
            "skus": ("/v1/skus/{sku}", {"GET": read(View.SKU)}),
        }
        # an area's commands, from their declarations: POST /v1/<things> or
        # POST /v1/<things>/{id}/<action>
        for command in areas.COMMANDS:
            if not command.in_args:
                continue
            parts = command.route.split("/")
            if len(parts) == 3:
                self._exact[command.route] = (command.route, {"POST": single(command.number)})
            else:
                self._by_id[(parts[2], parts[4])] = (command.route, {"POST": single(command.number)})
        # an area's views, from their declarations: GET /v1/<things>/{id} or /v1/<things>/{id}/<part>
        for area_read in areas.READS:
            parts = area_read.route.split("/")
            key = parts[2] if len(parts) == 4 else (parts[2], parts[4])
            self._by_id[key] = (area_read.route, {"GET": read(areas.READ_NUMBER[area_read.name])})
        self._static_route = ("/static/{file}", {"GET": self._static})

    # ------------------------------------------------------------------ entry

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        t0 = perf_counter()
        path = scope.path
        route = self._exact.get(path)
        id_: Any = None
        try:
            if route is None:
                route, id_ = self._match(path)
            label, methods = route
            handler = methods.get(scope.method)
            if handler is None:
                status, body, headers = _error(Result.method_not_allowed, f"{scope.method} {label}")
                headers = await settle_body(scope, proto, headers + [("allow", ", ".join(methods))])
            else:
                rule = self._rules.get(label, OPERATOR_ONLY)
                if rule is policy.PUBLIC or self._verifier is None:  # public, or served without tokens (--open)
                    principal = OPERATOR
                else:  # 401 without a valid token, 403 for a role the route does not allow
                    principal = self._verifier.principal(scope.headers.get("authorization"))
                    if not rule.may(principal.role):
                        raise Double11Error(Result.forbidden, message=f"{a_token_of(principal.role)} may not call "
                                                                      f"{scope.method} {label}")
                if type(id_) is str:  # after the token: a caller without one learns nothing of the ids
                    id_ = _parse_id(id_, label)
                if type(handler) is _SingleCommand:
                    # a phone's command: the hot path, so without a coroutine
                    # of its own (each costs microseconds); the body goes to
                    # the engine as it came, parsed there with the rest of its
                    # group commit in one compiled pass
                    if principal[0] == _BUYER and self.buyer_rates is not None:
                        wait_s = self.buyer_rates.wait_s(principal[1], t0)
                        if wait_s:
                            raise RateLimited(self.buyer_rates, principal[1], 1, wait_s)
                    length = scope.headers.get("content-length")
                    if length is not None and length.isascii() and length.isdigit() and int(length) <= _BODY_MAX:
                        body = await proto()
                    else:
                        body = await read_body(scope, proto)
                    kept, sold_out = self.refused_checkouts, self.sold_out
                    if (kept.answers or sold_out.skus) and handler.op == _CHECKOUT:  # after a sell-out
                        again = kept.answer(body, principal)
                        if again is None and sold_out.skus:
                            again = await sold_out.refusal(body, principal)
                            if again is not None:
                                kept.remember(body, principal, again)
                        if again is not None:
                            proto.response_bytes(_STATUS_OUT_OF_STOCK, _H_JSON, again)
                            self.metrics.observe(label, _STATUS_OUT_OF_STOCK, perf_counter() - t0)
                            return
                    answer = await self._single(handler.op, id_ or 0, body, principal)
                    if answer[0] == _OUT_OF_STOCK and handler.op == _CHECKOUT:
                        kept.remember(body, principal, answer[1])
                        sold_out.learn(answer[1])
                    status, body, headers = STATUS_OF_CODE[answer[0]], answer[1], _H_OF_CODE[answer[0]]
                    proto.response_bytes(status, headers, body)
                    self.metrics.observe(label, status, perf_counter() - t0)
                    return
                if scope.method == "GET" and _sent_a_body(scope):  # the views read none
                    await settle_body(scope, proto, [])
                r = await handler(scope, proto, id_, principal)
                if r is None:  # streamed its own response
                    self.metrics.observe(label, 200, perf_counter() - t0)
                    return
                status, body, headers = r
        except Double11Error as e:
            status, body, headers = HTTP_STATUS[e.code], _ENC.encode(e.body()), _H_OF_CODE[e.code]
            if type(e) is RateLimited:
                headers = headers + [("retry-after", str(e.retry_after_s))]
            label = route[0] if route is not None else R_UNMATCHED
            refused: BaseException | None = e
        except (_Disconnected, ProtocolClosed):
            return
        except Exception as e:
            log.exception("unhandled error in %s %s", scope.method, path)
            status, headers = HTTP_STATUS[Result.internal], _H_JSON
            body = _ENC.encode(error_body(Result.internal))
            label = route[0] if route is not None else R_UNMATCHED
            refused = e
        else:
            refused = None
        try:
            if refused is not None:  # refused before its body was read, maybe
                headers = await settle_body(scope, proto, headers, refused)
            proto.response_bytes(status, headers, body)
        except (_Disconnected, ProtocolClosed):  # the client went away: nothing to answer
            return
        self.metrics.observe(label, status, perf_counter() - t0)

    def _match(self, path: str) -> tuple[tuple[str, dict], str | None]:
        parts = path.split("/")
        n = len(parts)
        if (n == 4 or n == 5) and parts[1] == "v1" and parts[3]:
            route = self._by_id.get(parts[2] if n == 4 else (parts[2], parts[4]))
            if route is not None:
                return route, parts[3]
        elif n >= 3 and parts[1] == "static" and parts[2]:
            return self._static_route, None
        raise Double11Error(Result.not_found, path[:200])

    # ------------------------------------------------------------------ handlers

    async def _batch(self, scope, proto, _id, principal):
        binary = (scope.headers.get("content-type") or "").startswith(BINARY_BATCH_TYPE)
        request = await read_body(scope, proto)
        if principal[0] == _BUYER and self.buyer_rates is not None:  # a buyer's own batch: each command counts
            n = batch_commands(request, binary)
            wait_s = self.buyer_rates.wait_s(principal[1], perf_counter(), n)
            if wait_s:
                raise RateLimited(self.buyer_rates, principal[1], n, wait_s)
        code, body, binary = await self.festival.batch(request, binary, principal)
        return STATUS_OF_CODE[code], body, _H_BINARY if binary else _H_OF_CODE[code]

    async def _sku_page(self, scope, proto, _id, principal):
        merchant, after, limit = sku_page_query(scope.query_string)
        if principal.role == Role.merchant:  # a merchant lists its own SKUs
            if merchant not in (0, principal.id):
                raise Double11Error(Result.forbidden,
                                    message=f"a merchant token lists merchant {principal.id}'s skus only")
            merchant = principal.id
        code, body = await self.festival.sku_page(merchant, after, limit)
        return STATUS_OF_CODE[code], body, _H_OF_CODE[code]

    async def _metrics(self, scope, proto, _id, _principal):
        try:
            fm = await self.festival.metrics()
        except Exception:
            log.exception("the festival's metrics failed")
            fm = {}
        return 200, self.metrics.render(fm).encode(), _H_TEXT

    async def _healthz(self, scope, proto, _id, _principal):
        if getattr(self.festival, "lost", False):  # the engine process is gone
            return _error(Result.unavailable)
        code, body = await self.festival.health()  # unhealthy while the log cannot be written
        return STATUS_OF_CODE[code], body, _H_OF_CODE[code]

    async def _openapi_doc(self, scope, proto, _id, _principal):
        if self._openapi is None:
            self._openapi = _ENC.encode(build_openapi(open_access=self._verifier is None))
        return 200, self._openapi, _H_JSON

    async def _index(self, scope, proto, _id, _principal):
        return self._file("index.html")

    async def _static(self, scope, proto, _id, _principal):
        return self._file(scope.path[len("/static/"):])

    def _file(self, name: str):
        parts = name.split("/")
        if (not name or "\\" in name or "\x00" in name
                or any(p in ("", ".", "..") or p.startswith(".") for p in parts)):
            raise Double11Error(Result.not_found, "no such file")
        root = self.static_dir.resolve()
        p = (root / name).resolve()
        if not p.is_relative_to(root) or not p.is_file():
            raise Double11Error(Result.not_found, "no such file")
        ctype = _TYPES.get(p.suffix.lower()) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        return 200, p.read_bytes(), [("content-type", ctype), ("cache-control", "no-cache")]

    def shutdown(self) -> None:
        """End open event streams (call before stopping the server)."""
        self.closing = True
        for f in list(self._streams):
            if not f.done():
                f.set_result(None)

    async def _stream(self, scope, proto, _id, _principal):
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        self._streams.add(stop)

        async def watch_disconnect():
            await proto.client_disconnect()

        watcher = asyncio.ensure_future(watch_disconnect())
        try:
            transport = proto.response_stream(200, _H_SSE)
            while not self.closing:
                try:
                    code, stats = await self.festival.view(View.STATS)
                except Exception:
                    log.exception("the festival's stats failed")
                    code = Result.internal
                chunk = b"data: " + stats + b"\n\n" if code == Result.ok else b": stats unavailable\n\n"
                await transport.send_bytes(chunk)
                done, _ = await asyncio.wait((watcher, stop), timeout=SSE_INTERVAL_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if done:
                    break
        except Exception:  # client went away mid-write
            pass
        finally:
            watcher.cancel()
            self._streams.discard(stop)


class EmptyApp:
    """The benchmark baseline: every request is read and answered 201 `{}`."""

    closing = False

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":
            return
        try:
            await read_body(scope, proto)
        except _Disconnected:
            return
        except Double11Error:
            pass
        proto.response_bytes(201, _H_JSON, b"{}")

    def shutdown(self) -> None:
        self.closing = True


def build_app(festival: Any, empty: bool = False, static_dir: str | Path | None = None,
              verifier: Verifier | None = None, buyer_rates: BuyerRates | None = None):
    """The RSGI app over `festival`; with empty=True, the empty-handler baseline."""
    if empty:
        return EmptyApp()
    return App(festival, static_dir, verifier, buyer_rates)
