"""Flow control in the HTTP front: a per-buyer rate, and refused checkouts
answered again without the engine.

`BuyerRates`: a token bucket per buyer (a buyer token's id), so that a bot
hammering one hot SKU is answered 429 rate_limited while other buyers are
served.  A bucket holds up to `burst` commands and refills at `per_s`
commands a second; a buyer's batch takes one token per command.  A
gateway's batches and single commands are not counted per buyer: the front
would have to parse every body to know its buyers, and a gateway is trusted
to limit its own users (it is the phones' backend).  Served with `--open`
there are no tokens, so no buyer identity and no per-buyer limit.

`RefusedCheckouts`: the engine's out_of_stock answers to single checkouts,
by the exact body that got them and who sent it.  The engine answers a retry
(same idempotency key, same body) with its first answer, whatever the stock
now, so the front can give that answer itself, byte for byte: a client that
retries a sold-out checkout in a loop never reaches the engine again.  A
checkout with a new body goes to the engine, even one naming a SKU the front
saw sold out: only the engine's idempotency table knows whether its key is
new (a retry of a checkout accepted before the sell-out must get its 201, a
key used before for another command gets idempotency_key_reused), and
whether a deal, a coupon or an unknown SKU on another line comes first.

Both cost nothing on the accepted path but a dict lookup (the buyer's
bucket) and a little arithmetic; the refused checkouts are looked up only
while the front holds some (after a sell-out).
"""

from __future__ import annotations

import itertools
import math

from double11 import limits
from double11.access.roles import Principal
from double11.errors import Double11Error, Result


class BuyerRates:
    """A token bucket per buyer id: `take` says whether a buyer may send
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
