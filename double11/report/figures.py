"""The end-of-day figures, side by side with the year's published ones.

Pure: a stats dict (GET /v1/stats), optionally the simulator's summary, the scale,
the year and the hours run in; rows out.  Amounts and counts are multiplied by
1/scale before they are compared; shares, moments and reach are compared as they
are.  A run of the day's first hours is compared with the same hours of the year's
day (years.targets), never with its whole day.
"""

from __future__ import annotations

from dataclasses import dataclass

from double11.simulator.curve import format_clock
from double11.simulator.schedule import hours_text, lag_warning
from double11.simulator.years import CLUB_THRESHOLDS_FEN, TOP_INTERNATIONAL_2017, YearProfile, profile, targets

FEN_PER_BN = 100 * 1_000_000_000
CNY_PER_USD_2017 = 6.65  # the rate the 2017 figures were announced at (US$25.3bn)


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


def report_hours(stats: dict, summary: dict | None = None, hours: float | None = None) -> float:
    """The hours of the day the figures cover: the caller's word, then the simulator's
    (a replay of the first hours), else the server's day so far (all of it once over)."""
    for source in (hours, (summary or {}).get("hours")):
        if source:
            return min(float(source), 24.0)
    elapsed_h = (int(stats.get("at", 0)) - int(stats.get("festival_start", 0))) / 3_600_000
    return min(elapsed_h, 24.0) if elapsed_h > 0 else 24.0


def lag_note(summary: dict | None) -> str | None:
    """The simulator's warning when it fell behind its schedule (see schedule.lag_warning)."""
    if not summary:
        return None
    return lag_warning(int(summary.get("max_lag_ms") or 0), summary.get("speedup"))


def rows(stats: dict, year: int | YearProfile = 2017, scale: float | None = None,
         summary: dict | None = None, hours: float | None = None) -> list[Row]:
    """The figures next to the year's for the same hours of its day (Targets)."""
    y = profile(year) if isinstance(year, int) else year
    t = targets(y, report_hours(stats, summary, hours))
    s = effective_scale(stats, scale, summary)
    up = 1.0 / s
    lagged = lag_note(summary) is not None
    partial = "" if t.whole_day else f"{y.year}'s {hours_text(t.hours)}, from its hourly shares"
    gmv = int(stats.get("gmv_fen", 0))
    usd_cents = int(stats.get("gmv_usd_cents", 0))
    by_hour = stats.get("gmv_by_hour_fen") or [0] * 24
    out = [
        Row("gmv", "GMV", _rmb(gmv), _bn(gmv * up), _bn(t.gmv_fen), _ratio(gmv * up, t.gmv_fen), partial),
        Row("gmv_usd", "GMV in US$", f"US$ {usd_cents / 100:,.0f}", f"US$ {usd_cents / 100 * up / 1e9:,.1f} bn",
            f"US$ {t.gmv_fen / 100 / CNY_PER_USD_2017 / 1e9:,.1f} bn",
            _ratio(usd_cents * up, t.gmv_fen / CNY_PER_USD_2017)),
    ]
    growth = gmv * up / t.previous_gmv_fen - 1 if gmv else -1.0
    out.append(Row("growth", f"growth against {t.previous_year}", "", f"{growth * 100:+.0f}%",
                   f"{t.growth * 100:+.0f}%", _ratio(1 + growth, 1 + t.growth),
                   f"against {t.previous_year}'s {_bn(t.previous_gmv_fen)}"
                   + ("" if t.whole_day else f" in {hours_text(t.hours)}") + "; ratio of GMV to it"))
    mobile = float(stats.get("mobile_share", 0.0))
    out.append(Row("mobile", "paid on mobile", _pct(mobile), "", _pct(t.mobile_share), _ratio(mobile, t.mobile_share)))
    if t.hours > 1:  # a run of an hour or less is all first hour
        first = by_hour[0] / gmv if gmv else 0.0
        out.append(Row("first_hour", "first hour's share of GMV", _pct(first), "", _pct(t.first_hour_share),
                       _ratio(first, t.first_hour_share),
                       "" if t.whole_day else f"its share of the GMV of {hours_text(t.hours)}"))
    unreliable = "not reliable: the simulator fell behind its schedule (see the warning)"
    for key, label, target in (("peak_payments_per_s", "peak payments per second", t.peak_payments_per_s),
                               ("peak_orders_per_s", "peak orders per second", t.peak_orders_per_s)):
        peak = stats.get(key) or {}
        value = int(peak.get("value") or 0)
        note = unreliable if lagged else ("derived, not published" if key in t.derived else "")
        out.append(Row(key, label, f"{_count(value)} at {_moment(stats, peak)}", _count(value * up),
                       _count(target), None if lagged else _ratio(value * up, target), note))
    out.append(Row("peak_moment", "moment of the payment peak", _moment(stats, stats.get("peak_payments_per_s") or {}),
                   "", format_clock(t.peak_second), None,
                   unreliable if lagged else ("derived, not published" if "peak_second" in t.derived else "")))
    payments = int(stats.get("payments", 0))
    out.append(Row("payments", "payments in the day" if t.whole_day else f"payments in {hours_text(t.hours)}",
                   _count(payments), _count(payments * up), _count(t.payments), _ratio(payments * up, t.payments),
                   "derived, not published" if "payments" in t.derived else ""))
    clubs, source = merchant_clubs(stats, summary, s)
    names = ("RMB 100 million", "RMB 500 million", "RMB 1 billion")
    whole_day_only = f"{y.year} published it for the whole day only"
    for k, name in enumerate(names):
        club_target = t.merchant_clubs[k] if t.merchant_clubs else None
        ours = "-" if clubs is None else _count(clubs[k])
        note = (f"at {_rmb(CLUB_THRESHOLDS_FEN[k] * s)} (threshold times scale), from the {source}"
                if clubs is not None else source)
        out.append(Row(f"club_{k}", f"merchants above {name}", ours, "",
                       _count(club_target) if club_target else "-",
                       _ratio(clubs[k], club_target) if clubs is not None and club_target else None,
                       note if t.whole_day or y.merchant_clubs is None else f"{note}; {whole_day_only}"))
    countries = int(stats.get("countries", 0))
    out.append(Row("countries", "countries and regions", _count(countries), "",
                   f"at least {t.countries}" if t.countries else "-",
                   _ratio(countries, t.countries) if t.countries else None, "" if t.countries else whole_day_only))
    buyers, new = int(stats.get("buyers", 0)), int(stats.get("new_buyers", 0))
    out.append(Row("buyers", "buyers", _count(buyers), _count(buyers * up), "-", None))
    out.append(Row("new_buyers", "new buyers", f"{_count(new)} ({_pct(new / buyers if buyers else 0)})",
                   _count(new * up), "-", None, "first purchase ever"))
    return out + promotion_rows(stats, s)


# each kind of discount as the report names it (docs/promotions.md's kinds)
DISCOUNT_LABELS = {"deal": "deals (flash, livestream, group buy)", "store_coupon": "store coupons",
                   "threshold": "cross-store threshold", "platform_coupon": "red packets (platform coupons)"}


def promotion_rows(stats: dict, scale: float) -> list[Row]:
    """The discount given, by kind, and the coupons granted and used, from the stats'
    `promotions` (none from a server without them).  2017 published no such figures:
    they are shown, with the scale undone, and compared with nothing."""
    promotions = stats.get("promotions")
    if not promotions:
        return []
    up = 1.0 / scale
    discounts = {kind: int(fen) for kind, fen in (promotions.get("discounts_fen") or {}).items()}
    total = sum(discounts.values())
    listed = int(stats.get("gmv_fen", 0)) + total  # what the paid checkouts were worth at list prices
    out = [Row("discounts", "discount given", _rmb(total), _bn(total * up), "-", None,
               f"{_pct(total / listed if listed else 0)} of the list value of what was paid for; GMV is what was paid")]
    for kind, label in DISCOUNT_LABELS.items():
        fen = discounts.get(kind, 0)
        out.append(Row(f"discount_{kind}", f"  by {label}", _rmb(fen), _bn(fen * up), "-", None,
                       f"{_pct(fen / total if total else 0)} of the discount"))
    granted, used = int(promotions.get("coupons_granted", 0)), int(promotions.get("coupons_used", 0))
    out.append(Row("coupons", "coupons granted / used", f"{_count(granted)} / {_count(used)}",
                   f"{_count(granted * up)} / {_count(used * up)}", "-", None,
                   f"{_pct(used / granted if granted else 0)} of those granted were used"))
    out.append(Row("deals_sold_out", "deals sold out", _count(int(promotions.get("deals_sold_out", 0))), "", "-",
                   None))
    return out


def deals_sold_out(stats: dict) -> list[dict]:
    """The deals that sold out last, newest first, each with `moment`: the festival
    clock when it sold out."""
    latest = (stats.get("promotions") or {}).get("deals_sold_out_latest") or []
    start = int(stats.get("festival_start", 0))
    return [dict(d, moment=format_clock((int(d["sold_out_at"]) - start) / 1000)) for d in latest]


def top_brands(stats: dict) -> list[dict]:
    """The day's top brands; international ones marked, and whether 2017 named them."""
    return [dict(b, named_in_2017=b.get("name") in TOP_INTERNATIONAL_2017) for b in stats.get("top_brands") or []]
