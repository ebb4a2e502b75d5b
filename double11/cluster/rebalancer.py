"""The quota rebalancer: moves stock, coupon budgets and deal units between
units before a unit runs out.

Every `limits.rebalance_period_s` it reads each unit's quotas (quotas.
StockReport) and plans transfers (`plan`, pure), for SKUs, templates and
deals alike (a template's share is coupons it may grant, a deal's units it
may sell: definitions.py): for every SKU that some unit
still holds, each unit is entitled to a share of the units' available stock
in proportion to its recent sales of it plus one unit (equal shares before
any sale, and shares that a sale or two do not swing); a unit below
`limits.rebalance_low_share` of its share gets the difference from the unit
holding most above its own share.  A hot SKU's quota follows its
buyers, so a unit is rarely refused a sale while another still holds stock (a
*stranded* refusal).

A transfer is two logged, idempotent commands, both with the transfer's
idempotency key: `release` on the giving unit (refused if it no longer has the
units: the transfer is dropped), then `restock` on the receiving one (for a
template, `coupon_budget` with -qty then +qty; for a deal, `deal_qty`).  A
round's transfers go together: one batch of releases to each giving unit,
then one of restocks to each taking unit.  They are written to the journal
(`d11-transfers` on a cluster) before the first command and removed after the
last, so a rebalancer that dies between the two finishes them on its next
start: the releases answer their first results and the restocks are sent.
While a transfer is in flight its units are in neither unit's quota; once
every transfer is done the quotas sum to the stock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np

from double11 import limits
from double11.cluster.quotas import StockReport
from double11.engine.encode import encode_commands
from double11.engine.wire import decode_results
from double11.errors import Result

logger = logging.getLogger("double11.cluster.rebalancer")
_OK = int(Result.ok)
# every unit's weight beside its demand (units of recent sales): equal shares before any
# sale, and a SKU selling a unit or two a round no longer swings its shares from one
# unit to the other round after round (a transfer each way), while a hot SKU's shares
# follow its sales
_PRIOR_WEIGHT = 1.0
_DEMAND_DECAY = 0.5  # of the recent sales remembered from one round to the next
_SHARE_TOLERANCE = 1e-6  # units: shares computed alike in floating point may differ by their rounding
_DEMAND_FLOOR = 1e-3  # units of decayed demand below which an item counts as not selling


SKU, TEMPLATE, DEAL = "sku", "template", "deal"  # what a transfer moves


class Transfer(msgspec.Struct, frozen=True):
    key: str  # the idempotency key of both its commands
    sku: int  # the SKU's id, or the template's or deal's (kind)
    giver: int  # unit indexes
    taker: int
    qty: int
    kind: str = SKU

    def commands(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The giving unit's command, then the taking unit's."""
        key = self.key
        if self.kind == TEMPLATE:
            return ({"op": "coupon_budget", "template": self.sku, "count": -self.qty, "idempotency_key": key},
                    {"op": "coupon_budget", "template": self.sku, "count": self.qty, "idempotency_key": key})
        if self.kind == DEAL:
            return ({"op": "deal_qty", "deal": self.sku, "qty": -self.qty, "idempotency_key": key},
                    {"op": "deal_qty", "deal": self.sku, "qty": self.qty, "idempotency_key": key})
        return ({"op": "release", "sku": self.sku, "qty": self.qty, "idempotency_key": key},
                {"op": "restock", "sku": self.sku, "qty": self.qty, "idempotency_key": key})


def plan(available: np.ndarray, demand: np.ndarray,
         low_share: float = limits.rebalance_low_share) -> list[tuple[int, int, int, int]]:
    """(sku_row, giver, taker, qty) moves, at most one per SKU.  `available`
    and `demand` (recent sales, decayed) are (units, skus)."""
    units = available.shape[0]
    if units < 2:
        return []
    total = available.sum(axis=0)
    weight = demand + _PRIOR_WEIGHT  # equal where no unit sold anything yet
    share = total[None, :] * weight / weight.sum(axis=0)[None, :]
    need = share - available  # > 0: below its share
    cols = np.arange(available.shape[1])
    taker = need.argmax(axis=0)
    giver = (-need).argmax(axis=0)
    low = available[taker, cols] < low_share * share[taker, cols]
    # the giver keeps the whole units of its own share; the taker gets up to its share, rounded up
    spare = available[giver, cols] - np.floor(share[giver, cols]).astype(np.int64)
    qty = np.minimum(np.ceil(need[taker, cols]).astype(np.int64), spare)
    # and the giver is left no further below its share than the taker was: two units of equal
    # shares do not pass an odd unit back and forth round after round
    settles = need[taker, cols] > need[giver, cols] + qty + _SHARE_TOLERANCE
    moves = np.flatnonzero(low & settles & (qty > 0) & (taker != giver) & (total > 0))
    if len(moves) > limits.rebalance_transfers_per_round_max:  # the neediest first
        moves = moves[np.argsort(-need[taker[moves], moves])[:limits.rebalance_transfers_per_round_max]]
    return [(int(s), int(giver[s]), int(taker[s]), int(qty[s])) for s in moves]


class Planner:
    """One kind's plans, round after round: each unit's demand (what it
    used since the last round, plus half the demand before), and `plan` on
    the items whose plan may differ from the last round's.  The moves are
    those of `plan` on every item, as plan is a function of each item's
    column; but a catalog is mostly still between two rounds, and planning
    100,000 SKUs ten times a second cost a quarter of a core."""

    def __init__(self) -> None:
        self.last_used: np.ndarray | None = None  # (units, items), as last read
        self.last_left: np.ndarray | None = None
        self.demand: np.ndarray | None = None
        self.again = np.zeros(0, dtype=np.int64)  # items planned next round whatever changes

    def moves(self, left: np.ndarray, used: np.ndarray) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
        """This round's moves (row, giver, taker, qty), from what each unit
        has left and has used (units, items); and the items planned: what
        changed, what has or just had demand (decaying, it shifts the
        shares), what the last round did not finish; all of them the first time."""
        last, last_left = self.last_used, self.last_left
        seen = last is not None and last_left is not None and last.shape == used.shape
        # used may fall (a checkout expired, a coupon's checkout cancelled): only what rose is demand
        recent = np.maximum(used - last, 0).astype(np.float64) if seen else np.zeros(used.shape)
        before = self.demand if self.demand is not None and self.demand.shape == used.shape else np.zeros(used.shape)
        demand = recent + _DEMAND_DECAY * before
        demand[demand < _DEMAND_FLOOR] = 0.0  # long gone: the item's weights are equal again
        self.last_used, self.last_left, self.demand = used, left, demand
        if seen:
            planned = ((used != last).any(axis=0) | (left != last_left).any(axis=0)
                       | (demand > 0).any(axis=0) | (before > 0).any(axis=0))
            planned[self.again[self.again < len(planned)]] = True
            items = np.flatnonzero(planned)
        else:
            items = np.arange(left.shape[1])
        moves = plan(left[:, items], demand[:, items])
        return [(int(items[column]), giver, taker, qty) for column, giver, taker, qty in moves], items


class Units(Protocol):
    """The units as the rebalancer reaches them (over NATS, or in-process in tests)."""

    def count(self) -> int: ...
    def stock(self, unit: int) -> StockReport: ...
    def send(self, unit: int, batch: bytes) -> bytes: ...  # a binary batch -> its binary results


class Journal(Protocol):
    """Rounds of transfers begun and not yet finished, kept where a restart finds them."""

    def put(self, key: str, transfers: list[Transfer]) -> None: ...
    def remove(self, key: str) -> None: ...
    def unfinished(self) -> list[list[Transfer]]: ...


class MemoryJournal:
    def __init__(self) -> None:
        self.open: dict[str, list[Transfer]] = {}

    def put(self, key: str, transfers: list[Transfer]) -> None:
        self.open[key] = list(transfers)

    def remove(self, key: str) -> None:
        self.open.pop(key, None)

    def unfinished(self) -> list[list[Transfer]]:
        return list(self.open.values())


@dataclass
class RoundDone:
    moved: int  # transfers done
    dropped: int  # releases refused (the giver sold the units meanwhile)
    units_moved: int


class Rebalancer:
    def __init__(self, units: Units, journal: Journal, sku_ids: np.ndarray, epoch: str,
                 on_transfer: Callable[[Transfer, bool], None] | None = None) -> None:
        self.units, self.journal, self.sku_ids, self.epoch = units, journal, sku_ids, epoch
        self.on_transfer = on_transfer
        self.transfers = 0
        self._planners: dict[str, Planner] = {}  # by kind
        self.finish_unfinished()

    def finish_unfinished(self) -> None:
        for transfers in self.journal.unfinished():
            self.carry_out_all(transfers)

    def round(self) -> RoundDone:
        reports = [self.units.stock(u) for u in range(self.units.count())]
        transfers: list[Transfer] = []
        planned: list[tuple[Planner, np.ndarray, bool]] = []
        for kind in (SKU, TEMPLATE, DEAL):
            transfers += self._transfers_of(kind, reports, planned)
        moved = self.carry_out_all(transfers)
        for planner, items, capped in planned:  # planned again next round only if the round was capped
            planner.again = items if capped else items[:0]
        return RoundDone(sum(moved), len(moved) - sum(moved),
                         sum(t.qty for t, ok in zip(transfers, moved) if ok))

    def _transfers_of(self, kind: str, reports: list[StockReport],
                      planned: list[tuple[Planner, np.ndarray, bool]]) -> list[Transfer]:
        """One kind's transfers, planned on its columns of the reports."""
        left, used = _columns(kind, reports)
        if left.shape[1] == 0:
            return []
        planner = self._planners.setdefault(kind, Planner())
        moves, items = planner.moves(left, used)
        planner.again = items  # planned again next round unless every move is carried out
        planned.append((planner, items, len(moves) >= limits.rebalance_transfers_per_round_max))
        transfers = []
        for row, giver, taker, qty in moves:
            self.transfers += 1
            item = int(self.sku_ids[row]) if kind == SKU else row + 1
            transfers.append(Transfer(f"{self.epoch}-{self.transfers}", item, giver, taker, qty, kind))
        return transfers

    def carry_out(self, transfer: Transfer) -> bool:
        """One transfer, to its end: True if its units moved."""
        return self.carry_out_all([transfer])[0]

    def carry_out_all(self, transfers: list[Transfer]) -> list[bool]:
        """Transfers, each to its end: whether its units moved.  A round's
        transfers are one journal entry, one batch of releases for each giving
        unit, then one batch of restocks for each taking unit: a few logged
        requests however many transfers there are (one at a time, a transfer
        cost four replicated writes in turn, and a round of thousands took
        minutes).  A rerun after a crash answers each release its first result."""
        if not transfers:
            return []
        key = f"round-{transfers[0].key}"  # a transfer's key is the cluster's only: so is its round's
        self.journal.put(key, transfers)
        released = self._send_each(transfers, 0)
        moved = [code == _OK for code in released]
        taken = [t for t, ok in zip(transfers, moved) if ok]
        for transfer, code in zip(taken, self._send_each(taken, 1)):
            if code != _OK:  # the item is in every unit: only a bug gets here
                raise RuntimeError(f"transfer {transfer.key}: unit {transfer.taker} refused "
                                   f"{transfer.commands()[1]['op']} ({Result(code).name}); the journal keeps it")
        self.journal.remove(key)
        if self.on_transfer is not None:
            for transfer, ok in zip(transfers, moved):
                self.on_transfer(transfer, ok)
        return moved

    def _send_each(self, transfers: list[Transfer], step: int) -> list[int]:
        """Each transfer's command of `step` (0: the giver's, 1: the taker's)
        sent to its unit, one batch to each unit; their result codes, in order."""
        codes = [0] * len(transfers)
        by_unit: dict[int, list[int]] = {}
        for i, transfer in enumerate(transfers):
            by_unit.setdefault(transfer.taker if step else transfer.giver, []).append(i)
        for unit, places in by_unit.items():
            batch = encode_commands([transfers[i].commands()[step] for i in places])
            answer = decode_results(self.units.send(unit, batch.to_bytes()))
            for i, code in zip(places, answer["code"].tolist()):
                codes[i] = int(code)
        return codes


def _columns(kind: str, reports: list[StockReport]) -> tuple[np.ndarray, np.ndarray]:
    """(left, used), each (units, items), of one kind.  Units may report a
    different number of templates or deals (a definition reaching them one
    after another): the items all of them hold."""
    if kind == SKU:  # used: reserved and sold (a transfer moves stocked and available alike)
        pairs = [(r.available, r.stocked - r.available) for r in reports]
    elif kind == TEMPLATE:
        pairs = [(r.coupons_left, r.granted) for r in reports]
    else:
        pairs = [(r.deal_left, r.deal_taken) for r in reports]
    n = min(len(left) for left, _ in pairs)
    return np.stack([left[:n] for left, _ in pairs]), np.stack([used[:n] for _, used in pairs])
