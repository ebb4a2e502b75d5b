"""The words of every refused command: which field, which line, which bound.

A message names the field as a JSON path (`lines[1].qty`), the line where
there is one, the bound it broke (from double11.limits, never written by
hand) and what it got.  One wording, three callers, so the same bad command
reads the same whichever way it came:

- the JSON edge (`encode.py`) words a command's shape as it checks it
  (a missing field, a wrong type: what only JSON can carry);
- `shape_message` words a batch's columns (a binary batch's, by the rules
  and in the order of `batch.validate`), for gateways (`wire.messages`);
- `state_message` words the engine's refusals from the command and its
  result (`code`, `ref`), which the idempotency table keeps: a retry reads
  as its first try did.

Everything here runs on the error path only.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from double11 import areas, geo, limits
from double11.engine import commands
from double11.engine.batch import Channel, CommandBatch, Op
from double11.errors import Result
from double11.promotions import answers as promotion_answers
from double11.quotas import answers as quota_answers
from double11.quotas.spec import RELEASE
from double11.spec import IDEMPOTENCY_KEY

# the bounds in words, from the commands' declarations (double11/engine/commands.py):
# a bound changed there changes these, the OpenAPI document and docs/api.md together
ID_WANTED = commands.BUYER.wanted  # every id's
AMOUNT_WANTED = commands.AMOUNT_FEN.wanted
KEY_WANTED = IDEMPOTENCY_KEY.wanted
LINE_QTY_WANTED = commands.LINE_QTY.wanted
RESTOCK_QTY_WANTED = commands.RESTOCK_QTY.wanted
LINES_WANTED = commands.LINES.wanted
COUNTRY_WANTED = commands.COUNTRY.wanted
CHANNEL_WANTED = commands.CHANNEL.wanted
OP_WANTED = areas.OP_WANTED
# the field a command's `target` column holds, by op (its declaration's
# path field, else its first id field): encode.py reads this one table
TARGET_FIELD: dict[int, str] = {command.number: command.target.name for command in areas.COMMANDS
                                 if not command.in_args or command.path_fields}
RESULTS = {int(code): code for code in Result}  # Result(n), without the enum's call
OPS = {int(op): op for op in Op}
# the codes of a command's shape, given at the edge (encode.py, batch.validate)
SHAPE_CODES = frozenset({Result.invalid_request, Result.invalid_quantity, Result.invalid_country,
                         Result.invalid_channel, Result.too_many_lines, Result.empty_checkout,
                         Result.invalid_amount, Result.invalid_idempotency_key, Result.unknown_op,
                         Result.invalid_template, Result.invalid_threshold})


def refused_at_the_edge(code: Result, ref: int) -> bool:
    """Whether a refusal is of the command's shape (its words are the
    edge's), not of the state; forbidden is the access check's (its words
    in `notes`, double11/access/commands.py).  invalid_deal is both: the engine's (a price
    not below the list price) carries that price as its ref, the edge's 0."""
    return code in SHAPE_CODES or code == Result.forbidden or (code == Result.invalid_deal and ref == 0)


_SHOWN_CHARS_MAX = 40  # of a value quoted back: enough to recognise it


def shown(value: Any) -> str:
    """A value as the message quotes it back: strings in quotes, the rest as JSON."""
    if type(value) is str:
        text = repr(value[:_SHOWN_CHARS_MAX])
        return text if len(value) <= _SHOWN_CHARS_MAX else text + "..."
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS_MAX else text[:_SHOWN_CHARS_MAX] + "..."


def missing(field: str, wanted: str) -> str:
    return f"{field} is missing ({wanted})"


def wrong(field: str, wanted: str, got: Any) -> str:
    return f"{field} must be {wanted}, got {shown(got)}"


def line_field(line: int, name: str) -> str:
    return f"lines[{line}].{name}"


def key_length(length: int) -> str:
    return f"idempotency_key must be {KEY_WANTED}, got {length} characters"


def line_count(count: int) -> str:
    return f"lines must hold {LINES_WANTED}, got {count}"


def not_object(got: Any) -> str:
    return f"a command must be a JSON object, got {shown(got)}"


# ------------------------------------------------------------ a batch's columns
def first_lines(batch: CommandBatch, stop: int) -> np.ndarray:
    """The index of each command's first line, for commands 0..stop-1."""
    counts = batch.lines[:stop].astype(np.int64)
    return np.cumsum(counts) - counts


def shape_message(batch: CommandBatch, i: int, first_line: int) -> tuple[Result, str] | None:
    """Command i's first broken shape rule and its words, from the columns
    alone (None: well formed).  The rules and their order are those of
    `batch._validate` (a test holds the codes equal)."""
    o, n = int(batch.op[i]), int(batch.lines[i])
    target, amount = int(batch.target[i]), int(batch.amount[i])
    area_command = areas.BY_NUMBER.get(o)
    if area_command is None:
        return Result.unknown_op, wrong("op", OP_WANTED, o)
    if batch.key[i] == 0:
        return Result.invalid_idempotency_key, missing("idempotency_key", KEY_WANTED)
    if area_command.in_args:
        if n != 0:
            return Result.invalid_request, f"lines must be empty for {area_command.op}, got {n}"
        from double11.engine.area_commands import args_message

        return args_message(batch, i)
    op = Op(o)
    n_args = int(batch.args[i])
    if op != Op.checkout and n_args != 0:
        return Result.invalid_request, f"{op.name} takes no args, got {n_args}"
    if op == Op.checkout:
        country, channel = int(batch.country[i]), int(batch.channel[i])
        if target <= 0:
            return Result.invalid_request, wrong("buyer", ID_WANTED, target)
        if country >= geo.COUNTRY_SLOTS or not geo.VALID[country]:
            got = geo.decode(country) if country < geo.COUNTRY_SLOTS else country
            return Result.invalid_country, wrong("country", COUNTRY_WANTED, got)
        if channel not in (Channel.mobile, Channel.pc):
            return Result.invalid_channel, wrong("channel", CHANNEL_WANTED, channel)
        if n == 0:
            return Result.empty_checkout, line_count(n)
        if n > limits.checkout_lines_max:
            return Result.too_many_lines, line_count(n)
    elif n != 0:
        return Result.invalid_request, f"lines must be empty for {op.name}, got {n}"
    for k in range(n):
        sku, qty = int(batch.sku[first_line + k]), int(batch.qty[first_line + k])
        if sku <= 0:
            return Result.invalid_request, wrong(line_field(k, "sku"), ID_WANTED, sku)
        if not 1 <= qty <= limits.line_qty_max:
            return Result.invalid_quantity, wrong(line_field(k, "qty"), LINE_QTY_WANTED, qty)
    if op == Op.checkout and n_args:
        start = int(batch.arg_starts()[i])
        coupons = batch.arg[start:start + n_args].tolist()
        if n_args > limits.checkout_coupons_max:
            return Result.invalid_request, f"coupons must be {_wanted_list(commands.COUPONS)}, got {n_args} coupons"
        for p, coupon in enumerate(coupons):
            if coupon <= 0:
                return Result.invalid_request, wrong(f"coupons[{p}]", ID_WANTED, coupon)
            if coupon in coupons[:p]:
                return Result.invalid_request, f"coupons[{p}] repeats coupon {coupon}"
    if op != Op.checkout and target <= 0:
        return Result.invalid_request, wrong(TARGET_FIELD[op], ID_WANTED, target)
    if op == Op.pay and amount <= 0:
        return Result.invalid_amount, wrong("amount_fen", AMOUNT_WANTED, amount)
    if op == Op.restock and not 1 <= amount <= limits.restock_qty_max:
        return Result.invalid_quantity, wrong("qty", RESTOCK_QTY_WANTED, amount)
    return None


# -------------------------------------------------------- the engine's refusals
# out_of_stock's ref: the short line's index + 1 in its low bits, the units its
# SKU had for sale for that line above them (0: not recorded)
OUT_OF_STOCK_LINE_BITS = 8


def short_line(ref: int) -> tuple[int, int] | None:
    """(line index, units for sale) of an out_of_stock ref; None if it holds none."""
    if ref <= 0:
        return None
    return (ref & ((1 << OUT_OF_STOCK_LINE_BITS) - 1)) - 1, ref >> OUT_OF_STOCK_LINE_BITS


def state_message(code: Result, ref: int, batch: CommandBatch, i: int, first_line: int,
                  total_fen: int | None = None) -> str | None:
    """The words of an engine refusal of command i (`code`, `ref`: its result;
    `total_fen`: the checkout's total, for amount_mismatch).  None: the code's
    plain message says it all."""
    if int(batch.op[i]) not in OPS:  # an area's command
        return _area_message(code, ref, batch, i)
    op, target = OPS[int(batch.op[i])], int(batch.target[i])
    if code in _ABOUT_COUPON:
        return coupon_message(code, ref)
    if code in _ABOUT_DEAL:
        return f"deal {ref}: {_ABOUT_DEAL[code]}"
    if code == Result.unknown_sku:
        if op == Op.restock:
            return f"sku {target} is not in the catalog"
        skus = batch.sku[first_line:first_line + int(batch.lines[i])].tolist()
        line = skus.index(ref) if ref in skus else None  # the first line naming it is the first unknown one
        where = line_field(line, "sku") if line is not None else "sku"
        return f"{where} {ref} is not in the catalog"
    if code == Result.out_of_stock:
        short = short_line(ref)
        if short is None or not 0 <= short[0] < int(batch.lines[i]):
            return None
        line, for_sale = short
        sku, qty = int(batch.sku[first_line + line]), int(batch.qty[first_line + line])
        return f"lines[{line}]: sku {sku} has {for_sale} for sale, line asks {qty}; nothing was reserved"
    if code == Result.amount_mismatch:
        total = "" if total_fen is None else f": the total is {total_fen}"
        return f"amount_fen must equal the total of checkout {target}{total}, got {int(batch.amount[i])}"
    about = _ABOUT.get(code)
    return about.format(TARGET_FIELD[op], target) if about else None


_ABOUT = {
    Result.unknown_checkout: "{} {} does not exist",
    Result.unknown_order: "{} {} does not exist",
    Result.already_paid: "{} {} is already paid",
    Result.expired: "{} {} expired before it was paid; its stock went back on sale",
    Result.cancelled: "{} {} was cancelled",
    Result.not_paid: "{} {} is not paid",
    Result.already_settled: "{} {} is already settled to the merchant",
    Result.already_refunded: "{} {} is already refunded",
}

_ABOUT_COUPON = {
    Result.unknown_coupon: "no such coupon",
    Result.not_your_coupon: "it belongs to another buyer",
    Result.coupon_not_held: "it is reserved by another checkout or already used",
    Result.not_in_window: "its use window has not opened yet",
    Result.coupon_expired: "its use window has closed",
    Result.coupon_merchant_not_in_checkout: "its merchant has no line in this checkout",
    Result.two_store_coupons: "an earlier coupon of the list is a store coupon of the same merchant",
    Result.min_spend_not_met: "the lines it applies to do not reach its minimum spend",
}
# the refusals of a checkout whose ref is one of its coupons' ids (a cluster's router maps it)
COUPON_REF_CODES = frozenset(_ABOUT_COUPON)


def coupon_message(code: Result, coupon: int) -> str:
    """The words of a checkout's refusal naming one of its coupons."""
    return f"coupon {coupon}: {_ABOUT_COUPON[code]}"

_ABOUT_DEAL = {
    Result.deal_sold_out: "fewer units left than the checkout asks for",
    Result.deal_buyer_limit: "the buyer would pass its per-buyer limit",
}


def _wanted_list(field: Any) -> str:
    return f"a list of {field.low}..{field.high} {field.unit}"


def _area_message(code: Result, ref: int, batch: CommandBatch, i: int) -> str | None:
    """The words of a refused operator command or grant."""
    from double11.engine.area_commands import values_of

    command = areas.BY_NUMBER[int(batch.op[i])]
    start = int(batch.arg_starts()[i])
    values = values_of(command, batch.arg[start:start + int(batch.args[i])])
    target = int(batch.target[i])
    if command is RELEASE:
        return quota_answers.refused(code, target, values["qty"], ref)
    if command.op in promotion_answers.REFUSED:
        return promotion_answers.REFUSED[command.op](code, target, values, ref)
    if code == Result.unknown_template:
        return f"template {target} does not exist"
    if code == Result.not_in_window:
        return f"template {target} grants only from its grant_from until its grant_until"
    if code == Result.budget_exhausted:
        return f"template {target} has granted all its budget allows"
    if code == Result.buyer_limit_reached:
        return f"buyer {values.get('buyer')} already holds per_buyer_max coupons of template {target}"
    if code == Result.unknown_merchant:
        merchants = values.get("merchants")
        if merchants is not None and 1 <= ref <= len(merchants):
            return f"merchants[{ref - 1}]: merchant {merchants[ref - 1]} is not in the catalog"
        return f"merchant {values.get('merchant')} is not in the catalog"
    if code == Result.unknown_sku:
        return f"sku {values.get('sku')} is not in the catalog"
    if code == Result.invalid_deal:
        return f"price_fen must be below the SKU's list price {ref}, got {values.get('price_fen')}"
    if code == Result.window_overlaps:
        return f"its window meets that of {command.op.replace('_discount', '')} {ref}"
    return None
