"""The festival's traffic: a model of the day (pure functions: years, curve, mixes,
plan) and an HTTP client that replays it against a running server (client, cli).

Scale: `--scale s` simulates the share s of the real festival's paying checkouts, at
the catalog's real prices (buyers lean to cheaper items, or buy more units, so the
mean checkout is the year's mean payment: 2017's RMB 168.2bn / 1.48bn = RMB 113.6).
So, with the scale undone (times 1/s):
- amounts and counts (GMV, payments, orders, buyers) estimate the real day's;
- per-second rates (orders/s, payments/s) too, measured in festival seconds: the
  curve puts 2017's 256,000 payments/s * s on 00:05:22;
- shares (mobile 90%, first hour 33.6%, growth) and moments are compared as they are;
- reach (countries and regions) does not scale: every reachable place keeps a few
  buyers, so ~195 are reached at any scale;
- merchant clubs are counted at the thresholds times s (RMB 100M * s, ...).

Promotions: the day runs 2017's (promotions.py: the cross-store threshold, store
coupons, red packets from the games, flash, livestream and group-buy deals), and
GMV is what the buyers pay, so the baskets are worth the discounts more at list
prices (plan.build) and the mean payment is still the year's.
"""

from double11.simulator.curve import payment_curve
from double11.simulator.plan import CatalogView, Plan, build, expected_figures
from double11.simulator.years import YEARS, YearProfile, profile

__all__ = ["YEARS", "CatalogView", "Plan", "YearProfile", "build", "expected_figures", "payment_curve", "profile"]
