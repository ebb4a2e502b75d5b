"""What the server acknowledged, counted as the answers come back."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from double11.simulator.promotions import DISCOUNT_KINDS
from double11.simulator.schedule import lag_warning
from double11.simulator.years import CLUB_THRESHOLDS_FEN


@dataclass
class Tally:
    sent: Counter = field(default_factory=Counter)  # op -> commands sent (first tries)
    answers: Counter = field(default_factory=Counter)  # "op status code" -> count
    checkouts: int = 0
    payments: int = 0
    gmv_fen: int = 0
    mobile_gmv_fen: int = 0
    refunded_fen: int = 0
    settled_orders: int = 0
    gmv_by_hour_fen: list[int] = field(default_factory=lambda: [0] * 24)
    merchant_gmv_fen: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    countries: set[str] = field(default_factory=set)
    buyers: set[int] = field(default_factory=set)
    substitutions: int = 0  # checkouts retried with other items after out_of_stock
    sold_out_avoided: int = 0  # checkouts sent with other items in place of ones seen sold out
    lost_checkouts: int = 0  # out of stock even after substitutions
    retries: int = 0  # requests or commands sent again (overload, transport errors)
    transport_errors: int = 0
    skipped: int = 0  # planned checkouts already in the past when the run began
    max_lag_ms: int = 0  # festival ms between a command's due time and its sending
    hours: float = 24.0  # the first hours of the day replayed
    speedup: float = 0.0  # the server's clock's pace the replay kept to
    # promotions
    promotions_created: int = 0  # threshold, coupon templates and deals the server made
    coupons_granted: int = 0
    coupon_checkouts: int = 0  # accepted checkouts that spent coupons
    coupons_used: int = 0  # coupons of the paid checkouts
    coupons_dropped: int = 0  # refused in a checkout (none should be): its buyer paid without them
    discounts_fen: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DISCOUNT_KINDS, 0))

    def answer(self, op: str, status: int, body: dict) -> None:
        code = body.get("error", {}).get("code", "ok") if isinstance(body, dict) else "?"
        self.answers[f"{op} {status} {code}"] += 1

    def paid(self, amount_fen: int, mobile: bool, country: str, buyer: int, hour: int,
             orders: list[dict]) -> None:
        self.payments += 1
        self.gmv_fen += amount_fen
        self.mobile_gmv_fen += amount_fen if mobile else 0
        self.gmv_by_hour_fen[min(max(hour, 0), 23)] += amount_fen
        self.countries.add(country)
        self.buyers.add(buyer)
        for o in orders:
            self.merchant_gmv_fen[int(o["merchant"])] += int(o["amount_fen"])

    def discounted(self, discounts: dict | None, coupons: int) -> None:
        """A paid checkout's discounts by kind (its answer's; none when it had none)."""
        self.coupons_used += coupons
        for kind, fen in (discounts or {}).items():
            self.discounts_fen[kind] = self.discounts_fen.get(kind, 0) + int(fen)

    def merchant_clubs(self, scale: float) -> list[int]:
        """Merchants above the press release's thresholds, scaled like the traffic."""
        values = self.merchant_gmv_fen.values()
        return [sum(1 for v in values if v >= t * scale) for t in CLUB_THRESHOLDS_FEN]

    def summary(self, scale: float) -> dict:
        return {
            "scale": scale,
            "sent": dict(self.sent),
            "answers": dict(sorted(self.answers.items())),
            "checkouts": self.checkouts,
            "payments": self.payments,
            "gmv_fen": self.gmv_fen,
            "mobile_share": self.mobile_gmv_fen / self.gmv_fen if self.gmv_fen else 0.0,
            "refunded_fen": self.refunded_fen,
            "settled_orders": self.settled_orders,
            "gmv_by_hour_fen": list(self.gmv_by_hour_fen),
            "countries": len(self.countries),
            "buyers": len(self.buyers),
            "merchant_clubs_scaled_thresholds": self.merchant_clubs(scale),
            "promotions": {"created": self.promotions_created, "discounts_fen": dict(self.discounts_fen),
                           "coupons_granted": self.coupons_granted, "coupons_used": self.coupons_used,
                           "coupon_checkouts": self.coupon_checkouts, "coupons_dropped": self.coupons_dropped},
            "substitutions": self.substitutions,
            "sold_out_avoided": self.sold_out_avoided,
            "lost_checkouts": self.lost_checkouts,
            "retries": self.retries,
            "transport_errors": self.transport_errors,
            "skipped": self.skipped,
            "max_lag_ms": self.max_lag_ms,
            "hours": self.hours,
            "speedup": self.speedup,
            "lag_warning": lag_warning(self.max_lag_ms, self.speedup),
        }
