"""Result codes: every outcome a command can have, with a stable number.

Numbers are part of the compact wire format and of the command log's
idempotency table, so they never change; new codes are appended.
Each code carries a message template; its HTTP status is the edge's
business (double11/statuses.py).
"""

from __future__ import annotations

import enum


class Result(enum.IntEnum):
    ok = 0
    # malformed or out-of-bounds input (nothing about state)
    invalid_request = 1
    invalid_quantity = 2
    invalid_country = 3
    invalid_channel = 4
    too_many_lines = 5
    empty_checkout = 6
    invalid_amount = 7
    invalid_idempotency_key = 8
    batch_too_large = 9
    body_too_large = 10
    unknown_op = 11
    invalid_template = 12
    invalid_threshold = 13
    invalid_deal = 14
    # references to things that do not exist
    unknown_sku = 20
    unknown_checkout = 21
    unknown_order = 22
    unknown_merchant = 23
    unknown_template = 24
    unknown_coupon = 25
    unknown_deal = 26
    # state conflicts
    out_of_stock = 30
    amount_mismatch = 31
    already_paid = 32
    expired = 33
    cancelled = 34
    not_paid = 35
    already_settled = 36
    already_refunded = 37
    idempotency_key_reused = 38
    # promotions' conflicts (docs/promotions.md)
    budget_exhausted = 39
    buyer_limit_reached = 40
    not_in_window = 41
    not_your_coupon = 42
    coupon_not_held = 43
    coupon_expired = 44
    two_store_coupons = 45
    coupon_merchant_not_in_checkout = 46
    min_spend_not_met = 47
    deal_sold_out = 48
    deal_buyer_limit = 49
    window_overlaps = 54
    created = 55  # done, and a new thing exists (an answer, never a refusal)
    # access (double11/access)
    unauthenticated = 56
    forbidden = 57
    rate_limited = 58  # a buyer over its rate (http/flow_control.py)
    storage_unavailable = 59  # the command log cannot be written (service/durability.py)
    # platform
    overloaded = 50
    not_found = 51
    method_not_allowed = 52
    unavailable = 53  # the engine process is not running
    internal = 60  # a bug of ours, never an answer to bad input
    not_on_cluster = 61  # what a cluster's front does not serve (double11/cluster/front_link.py)


# a code's message where nothing more is known; a refused command's answer
# says more (double11/engine/refusals.py: the field, the line, the bound).
# No bound is written here: the commands' declarations (double11/engine/
# commands.py) hold them, and the detailed messages quote them from there
MESSAGES: dict[Result, str] = {
    Result.invalid_request: "the request is malformed",
    Result.invalid_quantity: "qty is missing or out of its bounds",
    Result.invalid_country: "country is missing or not a country code the platform knows",
    Result.invalid_channel: "channel is missing or not a channel the platform knows",
    Result.too_many_lines: "the checkout has too many lines",
    Result.empty_checkout: "the checkout has no lines",
    Result.invalid_amount: "amount_fen is missing or out of its bounds",
    Result.invalid_idempotency_key: "idempotency_key is missing or out of its bounds",
    Result.batch_too_large: "the batch has too many commands",
    Result.body_too_large: "the request body is too large",
    Result.unknown_op: "op is missing or not an op the platform knows",
    Result.invalid_template: "a field of the coupon template is missing, out of its bounds or impossible",
    Result.invalid_threshold: "a field of the threshold discount is missing, out of its bounds or impossible",
    Result.invalid_deal: "a field of the deal is missing, out of its bounds or impossible",
    Result.unknown_sku: "no such sku",
    Result.unknown_checkout: "no such checkout",
    Result.unknown_order: "no such order",
    Result.unknown_merchant: "no such merchant",
    Result.unknown_template: "no such coupon template",
    Result.unknown_coupon: "no such coupon",
    Result.unknown_deal: "no such deal",
    Result.out_of_stock: "not enough stock for a line of the checkout; nothing was reserved",
    Result.amount_mismatch: "amount_fen does not equal the checkout's total",
    Result.already_paid: "the checkout is already paid",
    Result.expired: "the checkout expired before it was paid; its stock went back on sale",
    Result.cancelled: "the checkout was cancelled",
    Result.not_paid: "the order is not paid",
    Result.already_settled: "the order is already settled to the merchant",
    Result.already_refunded: "the order is already refunded",
    Result.idempotency_key_reused: "this idempotency_key was used with a different request",
    Result.budget_exhausted: "the coupon template's budget is spent",
    Result.buyer_limit_reached: "the buyer already holds as many coupons of this template as one buyer may",
    Result.not_in_window: "the promotion's window is not open at this time",
    Result.not_your_coupon: "the coupon belongs to another buyer",
    Result.coupon_not_held: "the coupon is reserved by another checkout or already used",
    Result.coupon_expired: "the coupon's use window has closed",
    Result.two_store_coupons: "at most one store coupon per merchant in a checkout",
    Result.coupon_merchant_not_in_checkout: "the store coupon's merchant has no line in the checkout",
    Result.min_spend_not_met: "the checkout does not reach the coupon's minimum spend",
    Result.deal_sold_out: "the deal has fewer units left than the checkout asks for",
    Result.deal_buyer_limit: "the buyer would pass the deal's per-buyer limit",
    Result.window_overlaps: "another promotion of the same kind is open in part of this window",
    Result.overloaded: "the platform is at capacity; retry with the same idempotency_key",
    Result.unauthenticated: "a valid token is needed (Authorization: Bearer <token>)",
    Result.forbidden: "the token's role may not do this",
    Result.rate_limited: "the buyer sent commands faster than its rate; retry with the same idempotency_key",
    Result.not_found: "no such resource",
    Result.method_not_allowed: "method not allowed",
    Result.unavailable: "the engine is not running; retry with the same idempotency_key once it is back",
    Result.storage_unavailable: ("the command log cannot be written (a full or failing disk, or a log stream "
                                 "without its majority): nothing of this request was applied; retry with the "
                                 "same idempotency_key"),
    Result.internal: "internal error; the request may be retried with the same idempotency_key",
    Result.not_on_cluster: ("a cluster does not serve this: its rebalancer moves quotas between units (release, "
                            "coupon_budget, deal_qty); a festival on one machine (double11 serve) does"),
}


# a member's .name is a descriptor call, slow enough to show in a sell-out's
# thousands of out_of_stock answers
NAMES: dict[int, str] = {int(code): code.name for code in Result}


def error_body(code: Result, detail: str | None = None, message: str | None = None) -> dict:
    """The body of a refusal: `message` whole, or the code's message with `detail` after it."""
    if message is None:
        message = MESSAGES[code] if detail is None else f"{MESSAGES[code]}: {detail}"
    return {"error": {"code": NAMES[code], "message": message}}


class Double11Error(Exception):
    """Raised at the edges (catalog files, HTTP bodies) for input that is refused."""

    def __init__(self, code: Result, detail: str | None = None, message: str | None = None):
        self.code = code
        self.detail = detail
        self.message = message  # the whole message, where it says all (the field and the bound)
        super().__init__(error_body(code, detail, message)["error"]["message"])

    def body(self) -> dict:
        return error_body(self.code, self.detail, self.message)
