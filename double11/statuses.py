"""The HTTP status of each result code.

The domain (the engine, the areas) answers with `errors.Result` codes; a
status is how an edge says one: the HTTP API, and the Python API, whose
results read as HTTP's do ({"status", "body"}).  The engine process sends
codes down the link, and the front turns them into statuses.
"""

from __future__ import annotations

from double11.errors import Result

HTTP_STATUS: dict[Result, int] = {
    Result.ok: 200,
    Result.created: 201,
    Result.invalid_request: 400,
    Result.invalid_quantity: 400,
    Result.invalid_country: 400,
    Result.invalid_channel: 400,
    Result.too_many_lines: 400,
    Result.empty_checkout: 400,
    Result.invalid_amount: 400,
    Result.invalid_idempotency_key: 400,
    Result.batch_too_large: 413,
    Result.body_too_large: 413,
    Result.unknown_op: 400,
    Result.invalid_template: 400,
    Result.invalid_threshold: 400,
    Result.invalid_deal: 400,
    Result.unknown_sku: 404,
    Result.unknown_checkout: 404,
    Result.unknown_order: 404,
    Result.unknown_merchant: 404,
    Result.unknown_template: 404,
    Result.unknown_coupon: 404,
    Result.unknown_deal: 404,
    Result.out_of_stock: 409,
    Result.amount_mismatch: 409,
    Result.already_paid: 409,
    Result.expired: 409,
    Result.cancelled: 409,
    Result.not_paid: 409,
    Result.already_settled: 409,
    Result.already_refunded: 409,
    Result.idempotency_key_reused: 409,
    Result.budget_exhausted: 409,
    Result.buyer_limit_reached: 409,
    Result.not_in_window: 409,
    Result.not_your_coupon: 409,
    Result.coupon_not_held: 409,
    Result.coupon_expired: 409,
    Result.two_store_coupons: 409,
    Result.coupon_merchant_not_in_checkout: 409,
    Result.min_spend_not_met: 409,
    Result.deal_sold_out: 409,
    Result.deal_buyer_limit: 409,
    Result.window_overlaps: 409,
    Result.unauthenticated: 401,
    Result.forbidden: 403,
    Result.overloaded: 429,
    Result.rate_limited: 429,
    Result.not_found: 404,
    Result.method_not_allowed: 405,
    Result.unavailable: 503,
    Result.storage_unavailable: 503,
    Result.internal: 500,
    Result.not_on_cluster: 501,  # Not Implemented: the cluster lacks the function, a retry will not help
}

# by code number, for the hot path (a list index, not a dict of enum members)
STATUS_OF_CODE: list[int] = [0] * (max(Result) + 1)
for _code, _status in HTTP_STATUS.items():
    STATUS_OF_CODE[_code] = _status


def answer(code: int, body: object) -> dict[str, object]:
    """A Python API result: {"status": the code's HTTP status, "body": body}."""
    return {"status": STATUS_OF_CODE[code], "body": body}
