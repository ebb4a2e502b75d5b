"""Flow control in the HTTP front: a per-buyer rate, and checkouts of sold-out
SKUs refused without reaching the engine.

`BuyerRates`: a token bucket per buyer (a buyer token's id), so that a bot
hammering one hot SKU is answered 429 rate_limited while other buyers are
served.  A bucket holds up to `burst` commands and refills at `per_s`
commands a second; a buyer's batch takes one token per command.  A
gateway's batches and single commands are not counted per buyer: the front
would have to parse every body to know its buyers, and a gateway is trusted
to limit its own users (it is the phones' backend).  Served with `--open`
there are no tokens, so no buyer identity and no per-buyer limit.

`SoldOutSkus`: the SKUs the engine's out_of_stock answers said have none
for sale.  While some are known, a single checkout naming one is read at the
front, and refused there when the engine would refuse it with the same
words: see the class for when; the facts only the engine has (is the key
new, are there units for sale, a deal, a checkout due to expire) come from
one read of its state per turn of the event loop, for all such checkouts at
once, never a command.  A refusal at the front leaves no trace in the
engine: its key is not used.

`RefusedCheckouts`: out_of_stock answers, the engine's and the front's, by
the exact body that got them and who sent it.  The engine answers a retry
(same idempotency key, same body) with its first answer, whatever the stock
now, so the front gives that answer again itself, byte for byte: a client
that retries a sold-out checkout in a loop is answered at once, and one the
front refused gets the same answer on a retry after a restock (while it is
kept: limits.refused_checkouts_kept_max).

On the accepted path this costs a dict lookup (the buyer's bucket) and a
little arithmetic; bodies are looked up and read only while the front knows
of a sold-out SKU.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
from typing import Any

import msgspec

from double11 import limits
from double11.access.roles import Principal, Role
from double11.engine import refusals
from double11.engine.batch import CommandBatch, Op
from double11.engine.encode import decode_single, encode_commands
from double11.engine.stock_probe import REFUSE, STOCK_BACK
from double11.errors import Double11Error, Result, error_body
from double11.link.frames import STOCK_PROBE_ITEM

log = logging.getLogger("double11.http")
_ENC = msgspec.json.Encoder()


class BuyerRates:
    """A token bucket per buyer id: `wait_s` says whether a buyer may send
    `n` commands now, and if not, how long until it may."""

    __slots__ = ("per_s", "burst", "buckets_max", "_buckets")

    def __init__(self, per_s: float = limits.buyer_commands_per_s_default,
                 burst: int = limits.buyer_burst_commands_default,
                 buckets_max: int = limits.buyer_buckets_max) -> None:
        if not per_s > 0 or burst < 1:
            raise ValueError(f"a buyer's rate must be over 0 commands/s with a burst of at least 1, "
                             f"got {per_s}/s and {burst}")
        self.per_s = float(per_s)
        self.burst = burst
        self.buckets_max = buckets_max
        # buyer -> [tokens, when last counted (s)]: a list, changed in place
        self._buckets: dict[int, list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def wait_s(self, buyer: int, now_s: float, n: int = 1) -> float:
        """0.0 when `buyer` may send `n` commands at `now_s` (their tokens
        are taken), else the seconds until it may (nothing is taken).  A
        batch of more commands than the burst needs a full bucket and leaves
        it in debt, so that it too is paced at `per_s`."""
        bucket = self._buckets.get(buyer)
        if bucket is None:
            if len(self._buckets) >= self.buckets_max:
                self._forget_idle(now_s)
            bucket = self._buckets[buyer] = [float(self.burst), now_s]
        tokens = bucket[0] + (now_s - bucket[1]) * self.per_s
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now_s
        needed = n if n < self.burst else self.burst
        if tokens >= needed:
            bucket[0] = tokens - n
            return 0.0
        bucket[0] = tokens
        return (needed - tokens) / self.per_s

    def _forget_idle(self, now_s: float) -> None:
        """Room for new buyers: the buckets that have filled up again go (a
        full bucket is what a new one would be, so nothing changes for
        them); if that is not a quarter of the cap, the oldest buckets go
        too (those buyers start afresh with a full burst)."""
        buckets = self._buckets
        for buyer in [b for b, (tokens, at) in buckets.items() if tokens + (now_s - at) * self.per_s >= self.burst]:
            del buckets[buyer]
        excess = len(buckets) - (self.buckets_max - self.buckets_max // 4)
        if excess > 0:
            for buyer in list(itertools.islice(buckets, excess)):
                del buckets[buyer]


def retry_after_s(wait_s: float) -> int:
    """Retry-After's whole seconds (RFC 9110 delay-seconds): at least 1."""
    return max(1, math.ceil(wait_s))


class RateLimited(Double11Error):
    """429 rate_limited: a buyer over its rate; the answer says Retry-After."""

    def __init__(self, rates: BuyerRates, buyer: int, n: int, wait_s: float) -> None:
        self.retry_after_s = retry_after_s(wait_s)
        asked = "a command" if n == 1 else f"a batch of {n} commands"
        super().__init__(Result.rate_limited, message=(
            f"buyer {buyer} sent {asked} over its rate of {rates.per_s:g} commands/s (burst {rates.burst}); "
            f"retry after {self.retry_after_s} s with the same idempotency_key"))


class RefusedCheckouts:
    """The engine's out_of_stock answers to single checkouts, by body: the
    answer a retry of the same body by the same principal gets again.  At
    most `entries_max`, the oldest forgotten first (a forgotten one only
    goes to the engine, which answers the same)."""

    __slots__ = ("entries_max", "answers")

    def __init__(self, entries_max: int = limits.refused_checkouts_kept_max) -> None:
        self.entries_max = entries_max
        # body -> (who sent it, the engine's answer); empty until a sell-out,
        # so the front tests it before looking a body up
        self.answers: dict[bytes, tuple[Principal, bytes]] = {}

    def __len__(self) -> int:
        return len(self.answers)

    def answer(self, body: bytes, principal: Principal) -> bytes | None:
        """The engine's answer to this body from this principal, if it refused it out_of_stock."""
        known = self.answers.get(body)
        if known is None or known[0] != principal:
            return None
        return known[1]

    def remember(self, body: bytes, principal: Principal, answer: bytes) -> None:
        answers = self.answers
        if body not in answers and len(answers) >= self.entries_max:
            for old in list(itertools.islice(answers, max(1, self.entries_max // 4))):
                del answers[old]
        answers[body] = (principal, answer)


# out_of_stock's words when the short line's SKU has none for sale (refusals.state_message)
_SOLD_OUT_WORDS = re.compile(rb"sku (\d+) has 0 for sale")
_CHECKOUT = int(Op.checkout)
_ONE_LINE_NONE_LEFT = 1  # out_of_stock's ref: line 0, 0 for sale (refusals.short_line)
# a stock probe's checkouts per call, within a call's payload
_PROBED_PER_CALL_MAX = limits.link_call_bytes_max // STOCK_PROBE_ITEM.size


class SoldOutSkus:
    """The SKUs the engine said are sold out, and the refusal of a new
    checkout naming one, given at the front when the engine's state says it
    would give the same (engine/stock_probe.py): a checkout of one line, no
    coupons, well formed (the engine's own checks, encode.py), allowed to its
    sender, whose key is new and whose SKU has no units for sale, no deal,
    and no unpaid checkout due to expire.  Anything else goes to the engine.

    The checkouts asked about in one turn of the event loop go to the engine
    process in one read (a few bytes each, between two batches): no command
    is applied, logged or remembered for them.  A SKU with units for sale
    again is forgotten at its next checkout, so a restock, a cancel or an
    expiry makes it sellable at once."""

    def __init__(self, festival: Any, skus_max: int = limits.sold_out_skus_kept_max) -> None:
        self.festival = festival
        self.skus_max = skus_max
        # sku -> None: an ordered set (the oldest forgotten first at the cap);
        # empty until a sell-out, so the front tests it before parsing a body
        self.skus: dict[int, None] = {}
        # (key, sku, role, actor) of the checkouts asked about this turn, and their futures
        self._asked: list[tuple[tuple[int, int, int, int], asyncio.Future]] = []

    def learn(self, answer: bytes) -> None:
        """Notes the SKU an out_of_stock answer says has none for sale."""
        found = _SOLD_OUT_WORDS.search(answer)
        if found is None:
            return
        sku = int(found.group(1))
        if sku not in self.skus and len(self.skus) >= self.skus_max:
            for old in list(itertools.islice(self.skus, max(1, self.skus_max // 4))):
                del self.skus[old]
        self.skus[sku] = None

    async def refusal(self, body: bytes, principal: Principal) -> bytes | None:
        """The out_of_stock answer the engine would give this checkout, or
        None: it goes to the engine."""
        batch = self._checkout(body, principal)
        if batch is None:
            return None
        sku = int(batch.sku[0])
        verdict = await self._verdict((int(batch.key[0]), sku, int(principal.role), principal.id))
        if verdict == STOCK_BACK:
            self.skus.pop(sku, None)
        if verdict != REFUSE:
            return None
        words = refusals.state_message(Result.out_of_stock, _ONE_LINE_NONE_LEFT, batch, 0, 0)
        return _ENC.encode(error_body(Result.out_of_stock, message=words))

    def _checkout(self, body: bytes, principal: Principal) -> CommandBatch | None:
        """The checkout as the engine reads it, if it may be refused here:
        one line naming a SKU sold out, no coupons, well formed, its sender's."""
        try:
            cmd = decode_single(body, _CHECKOUT, 0)
        except Double11Error:
            return None
        lines = cmd.get("lines")
        if type(lines) is not list or len(lines) != 1 or type(lines[0]) is not dict:
            return None
        sku = lines[0].get("sku")
        if type(sku) is not int or sku not in self.skus:
            return None
        if principal.role not in (Role.buyer, Role.gateway, Role.operator):
            return None
        batch = encode_commands([cmd])
        if batch.invalid[0] or batch.lines[0] != 1 or batch.args[0]:
            return None
        if principal.role == Role.buyer and int(batch.target[0]) != principal.id:
            return None  # the engine's access check answers it
        return batch

    def _verdict(self, item: tuple[int, int, int, int]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._asked:
            loop.call_soon(self._ask)
        self._asked.append((item, future))
        return future

    def _ask(self) -> None:
        asked, self._asked = self._asked, []
        for start in range(0, len(asked), _PROBED_PER_CALL_MAX):
            part = asked[start:start + _PROBED_PER_CALL_MAX]
            payload = b"".join([STOCK_PROBE_ITEM.pack(*item) for item, _ in part])
            answered = asyncio.ensure_future(self.festival.stock_probe(payload))
            answered.add_done_callback(lambda f, part=part: _settle(part, f))


def _settle(asked: list[tuple[tuple[int, int, int, int], asyncio.Future]], answered: asyncio.Future) -> None:
    """Hands each checkout its verdict; where the engine could not say (it
    is behind, or gone), each goes to the engine, which answers for itself."""
    verdicts = b""
    if not answered.cancelled():
        if answered.exception() is not None:
            if not isinstance(answered.exception(), Double11Error):
                log.error("a stock probe failed", exc_info=answered.exception())
        else:
            code, verdicts = answered.result()
            if code != Result.ok:
                verdicts = b""
    for i, (_, future) in enumerate(asked):
        if not future.done():
            future.set_result(verdicts[i] if i < len(verdicts) else 0)
