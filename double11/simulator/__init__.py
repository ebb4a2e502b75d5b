"""The festival's traffic: a model of the day (pure functions: curve, mixes, plan)
and an HTTP client that replays it against a running server."""

from double11.simulator.curve import payment_curve
from double11.simulator.plan import CatalogView, Plan, build, expected_figures
from double11.simulator.years import YEARS, YearProfile, profile

__all__ = ["YEARS", "CatalogView", "Plan", "YearProfile", "build", "expected_figures", "payment_curve", "profile"]
