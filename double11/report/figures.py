"""The end-of-day figures, side by side with the year's published ones.

Pure: a stats dict (GET /v1/stats), optionally the simulator's summary, the scale
and the year in; rows out.  Amounts and counts are multiplied by 1/scale before
they are compared; shares, moments and reach are compared as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from double11.simulator.curve import format_clock
from double11.simulator.years import CLUB_THRESHOLDS_FEN, TOP_INTERNATIONAL_2017, YearProfile, profile

FEN_PER_BN = 100 * 1_000_000_000


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    ours: str  # as measured (raw, at the simulated scale)
    full: str  # scale undone
    target: str  # the year's published figure
    ratio: float | None  # full / target (None when not comparable)
    note: str = ""


def _bn(fen: float) -> str:
    return f"RMB {fen / FEN_PER_BN:,.1f} bn"


def _rmb(fen: float) -> str:
    return f"RMB {fen / 100:,.0f}"


def _count(x: float) -> str:
    return f"{x:,.0f}"


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _moment(stats: dict, peak: dict) -> str:
    if not peak or peak.get("at") is None:
        return "-"
    return format_clock((int(peak["at"]) - int(stats["festival_start"])) / 1000)


def _ratio(full: float, target: float | None) -> float | None:
    return full / target if target else None


def effective_scale(stats: dict, scale: float | None, summary: dict | None = None) -> float:
    """The scale the figures were made at: the server's word first, then the
    simulator's, then the caller's, else 1 (a real-size festival)."""
    for source in (stats.get("scale"), (summary or {}).get("scale"), scale):
        if source:
            return float(source)
    return 1.0


def merchant_clubs(stats: dict, summary: dict | None, scale: float) -> tuple[list[int] | None, str]:
    """Merchants above RMB 100M / 500M / 1B times scale, and where the counts came from."""
    clubs = stats.get("merchant_clubs") or []
    thresholds = [int(c["threshold_fen"]) for c in clubs]
    wanted = [int(round(t * scale)) for t in CLUB_THRESHOLDS_FEN]
    if thresholds == wanted:
        return [int(c["merchants"]) for c in clubs], "server"
    if summary and summary.get("merchant_clubs_scaled_thresholds"):
        return list(summary["merchant_clubs_scaled_thresholds"]), "simulator"
    return None, "the server's clubs are at full-size thresholds; pass the simulator's summary"


def rows(stats: dict, year: int | YearProfile = 2017, scale: float | None = None,
         summary: dict | None = None) -> list[Row]:
    y = profile(year) if isinstance(year, int) else year
    s = effective_scale(stats, scale, summary)
    up = 1.0 / s
    gmv = int(stats.get("gmv_fen", 0))
    by_hour = stats.get("gmv_by_hour_fen") or [0] * 24
    out = [
        Row("gmv", "GMV", _rmb(gmv), _bn(gmv * up), _bn(y.gmv_fen), _ratio(gmv * up, y.gmv_fen)),
        Row("gmv_usd", "GMV in US$", f"US$ {int(stats.get('gmv_usd_cents', 0)) / 100:,.0f}",
            f"US$ {int(stats.get('gmv_usd_cents', 0)) / 100 * up / 1e9:,.1f} bn",
            f"US$ {y.gmv_fen / 100 / 6.65 / 1e9:,.1f} bn",
            _ratio(int(stats.get("gmv_usd_cents", 0)) * up, y.gmv_fen / 6.65)),
    ]
    growth = gmv * up / y.previous_gmv_fen - 1 if gmv else -1.0
    out.append(Row("growth", f"growth against {y.previous_year}", "", f"{growth * 100:+.0f}%",
                   f"{y.growth * 100:+.0f}%", _ratio(1 + growth, 1 + y.growth),
                   f"against {y.previous_year}'s {_bn(y.previous_gmv_fen)}; ratio of GMV to it"))
    out.append(Row("mobile", "paid on mobile", _pct(float(stats.get("mobile_share", 0.0))), "",
                   _pct(y.mobile_share), _ratio(float(stats.get("mobile_share", 0.0)), y.mobile_share)))
    first = by_hour[0] / gmv if gmv else 0.0
    out.append(Row("first_hour", "first hour's share of GMV", _pct(first), "", _pct(y.first_hour_share),
                   _ratio(first, y.first_hour_share)))
    for key, label, target in (("peak_payments_per_s", "peak payments per second", y.peak_payments_per_s),
                               ("peak_orders_per_s", "peak orders per second", y.peak_orders_per_s)):
        peak = stats.get(key) or {}
        value = int(peak.get("value") or 0)
        out.append(Row(key, label, f"{_count(value)} at {_moment(stats, peak)}", _count(value * up),
                       _count(target), _ratio(value * up, target)))
    out.append(Row("peak_moment", "moment of the payment peak", _moment(stats, stats.get("peak_payments_per_s")),
                   "", format_clock(y.peak_second), None,
                   "derived, not published" if "peak_second" in y.derived else ""))
    payments = int(stats.get("payments", 0))
    out.append(Row("payments", "payments in the day", _count(payments), _count(payments * up),
                   _count(y.payments), _ratio(payments * up, y.payments),
                   "derived, not published" if "payments" in y.derived else ""))
    clubs, source = merchant_clubs(stats, summary, s)
    names = ("RMB 100 million", "RMB 500 million", "RMB 1 billion")
    for k, name in enumerate(names):
        target = y.merchant_clubs[k] if y.merchant_clubs else None
        ours = "-" if clubs is None else _count(clubs[k])
        out.append(Row(f"club_{k}", f"merchants above {name}", ours, "", _count(target) if target else "-",
                       _ratio(clubs[k], target) if clubs is not None else None,
                       (f"at {_rmb(CLUB_THRESHOLDS_FEN[k] * s)} (threshold times scale), from the {source}"
                        if clubs is not None else source)))
    countries = int(stats.get("countries", 0))
    out.append(Row("countries", "countries and regions", _count(countries), "", f"at least {y.countries}",
                   _ratio(countries, y.countries)))
    buyers, new = int(stats.get("buyers", 0)), int(stats.get("new_buyers", 0))
    out.append(Row("buyers", "buyers", _count(buyers), _count(buyers * up), "-", None))
    out.append(Row("new_buyers", "new buyers", f"{_count(new)} ({_pct(new / buyers if buyers else 0)})",
                   _count(new * up), "-", None, "first purchase ever"))
    return out


def top_brands(stats: dict) -> list[dict]:
    """The day's top brands; international ones marked, and whether 2017 named them."""
    return [dict(b, named_in_2017=b.get("name") in TOP_INTERNATIONAL_2017) for b in stats.get("top_brands") or []]
