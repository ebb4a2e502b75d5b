"""The cluster's ids in what a unit answers, and the units' views summed:
what a cluster's HTTP front (front_link.py) does to the units' JSON so that
it reads as one festival's.

A unit numbers its checkouts and orders from 1; the cluster's ids carry the
unit's index above them (slots.global_ids).  A unit's answer names its own
ids: a checkout's id and its orders' (a checkout's answer and view, each of
its lines' order), an order's and its checkout's, in fields named
`checkout` and `order`, and in the words of a refusal (`checkout 5 does not
exist`).  Unit 0's ids are the cluster's unchanged, so its answers pass as
they are.

A coupon lives in its buyer's unit and is numbered there: its id is the
unit's too (`coupon` fields, `coupon 5` in words).  Templates, threshold
discounts and deals have the same id in every unit (definitions.py).

A SKU's stock is split into quotas (quotas.py), so its view is the units'
views with their counts added (what is for sale, reserved, sold and stocked
everywhere); so are a template's budget and a deal's units (definitions.py):
their views are summed likewise.  The ledger is the units' ledgers added up,
account by account.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import numpy as np

from double11.cluster.slots import ID_BITS, global_ids, local_ids

_ENC = msgspec.json.Encoder()
_ID_FIELDS = ("checkout", "order", "coupon")
_NAMED_ID = re.compile(r"\b(checkout|order|coupon) (\d+)\b")
_LOCAL_ID_END = 1 << ID_BITS
SKU_COUNTS = ("stock", "reserved", "sold", "stocked")  # a SKU's figures in each unit's view


def cluster_id(unit: int, local: int) -> int:
    """One id of unit number `unit` as the cluster's."""
    return int(global_ids(unit, np.array(local, dtype=np.int64)))


def unit_id(cluster: int) -> int:
    """One id of the cluster's as its unit's own."""
    return int(local_ids(np.array(cluster, dtype=np.int64)))


def with_cluster_ids(unit: int, value: Any) -> Any:
    """A unit's decoded JSON answer with its ids as the cluster's (in place)."""
    if unit == 0:
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _ID_FIELDS and type(item) is int and 0 < item < _LOCAL_ID_END:
                value[key] = cluster_id(unit, item)
            elif key == "message" and type(item) is str:
                value[key] = _NAMED_ID.sub(lambda m: _named(unit, m), item)
            elif isinstance(item, (dict, list)):
                with_cluster_ids(unit, item)
    elif isinstance(value, list):
        for item in value:
            with_cluster_ids(unit, item)
    return value


def _named(unit: int, match: re.Match[str]) -> str:
    local = int(match[2])
    return f"{match[1]} {cluster_id(unit, local) if 0 < local < _LOCAL_ID_END else local}"


def answer_with_cluster_ids(unit: int, body: bytes) -> bytes:
    """A unit's JSON answer (bytes) in the cluster's ids."""
    if unit == 0:
        return body
    return _ENC.encode(with_cluster_ids(unit, msgspec.json.decode(body)))


def summed_skus(views: list[dict[str, Any]]) -> dict[str, Any]:
    """One SKU's view from its view in every unit: the counts added up."""
    total = dict(views[0])
    for name in SKU_COUNTS:
        total[name] = sum(int(view[name]) for view in views)
    return total


def summed_pages(pages: list[dict[str, Any]]) -> dict[str, Any]:
    """A page of SKUs (GET /v1/skus) from the same page in every unit."""
    first = pages[0]
    skus = [summed_skus([page["skus"][k] for page in pages]) for k in range(len(first["skus"]))]
    return {"skus": skus, "next_after": first["next_after"]}


def summed_ledgers(ledgers: list[dict[str, Any]]) -> dict[str, Any]:
    """The ledger of the whole cluster: every unit's, account by account."""
    accounts: dict[str, int] = {}
    for ledger in ledgers:
        for name, fen in ledger["accounts"].items():
            accounts[name] = accounts.get(name, 0) + int(fen)
    return {"accounts": accounts, "sum": sum(int(ledger["sum"]) for ledger in ledgers),
            "transfers": sum(int(ledger["transfers"]) for ledger in ledgers)}


_TEMPLATE_COUNTS = ("granted", "used", "discount_given_fen", "budget_count", "budget_count_left")
_DEAL_COUNTS = ("qty", "sold", "reserved", "left")


def summed_template(views: list[dict[str, Any]]) -> dict[str, Any]:
    """A coupon template's view (or its creation's answer) from every unit's:
    its budget's shares and what they did, added up."""
    total = dict(views[0])
    for name in _TEMPLATE_COUNTS:
        total[name] = sum(int(view[name]) for view in views)
    if total.get("budget_fen") is not None:
        total["budget_fen_left"] = int(total["budget_fen"]) - total["granted"] * int(total["discount_fen"])
    return total


def summed_deal(views: list[dict[str, Any]]) -> dict[str, Any]:
    """A deal's view from every unit's: its units' shares added up; sold out
    when every unit's share is, at the last unit's time."""
    total = dict(views[0])
    for name in _DEAL_COUNTS:
        total[name] = sum(int(view[name]) for view in views)
    times = [int(view["sold_out_at"]) for view in views if view.get("sold_out_at") is not None]
    total["sold_out_at"] = max(times) if total["left"] == 0 and times else None
    return total
