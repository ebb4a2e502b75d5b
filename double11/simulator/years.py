"""The festivals we imitate, as data: the published figures (../shared/facts.md) and
the shape of each day's traffic.

Only figures that were announced are comparison targets; the few the model needs but
nobody published (2016's peak moment, its payment count) are derived and marked so.
"""

from __future__ import annotations

from dataclasses import dataclass

FEN_PER_RMB = 100
RMB_BILLION_FEN = 1_000_000_000 * FEN_PER_RMB

# Club thresholds of the 2017 press release, RMB 100M / 500M / 1B, in fen.
CLUB_THRESHOLDS_FEN: tuple[int, ...] = (10_000_000_000, 50_000_000_000, 100_000_000_000)


@dataclass(frozen=True)
class YearProfile:
    year: int
    gmv_fen: int
    previous_year: int
    previous_gmv_fen: int
    mobile_share: float  # of GMV, the whole day
    mobile_share_first_hour: float
    peak_payments_per_s: int
    peak_orders_per_s: int  # accepted checkouts per second at the peak
    peak_second: int  # seconds after midnight of the payment peak
    payments: int  # paid checkouts in the day
    # share of the day's payments by hour (UTC+8), per mille, sums to 1000
    hourly_permille: tuple[int, ...]
    countries: int  # countries and regions buyers came from (at least)
    merchant_clubs: tuple[int, ...] | None  # merchants above CLUB_THRESHOLDS_FEN
    derived: tuple[str, ...] = ()  # names of fields not published, derived by us

    @property
    def growth(self) -> float:
        return self.gmv_fen / self.previous_gmv_fen - 1.0

    @property
    def first_hour_share(self) -> float:
        return self.hourly_permille[0] / 1000.0

    @property
    def mean_payment_fen(self) -> float:
        return self.gmv_fen / self.payments

    @property
    def conversion(self) -> float:
        """Checkouts that get paid, from the two published peaks (orders vs payments)."""
        return self.peak_payments_per_s / self.peak_orders_per_s


# 2017: first hour US$8.5bn of 25.3bn = 33.6%; the rest keeps the shape of the
# previous festival's curve (config.PreviousFestival): a quiet night, a morning climb,
# an afternoon wave, an evening wave and a last-hour rush.
HOURLY_2017 = (
    336, 40, 20, 12, 8, 6, 8, 14, 24, 34, 38, 38,
    36, 34, 32, 30, 30, 30, 32, 36, 40, 44, 36, 42,
)
# config.PreviousFestival's curve, whose last hour is trimmed 50 -> 46 so it sums to 1000
HOURLY_2016 = (
    330, 40, 20, 12, 8, 6, 8, 14, 24, 34, 38, 38,
    36, 34, 32, 30, 30, 30, 32, 36, 40, 44, 38, 46,
)

YEARS: dict[int, YearProfile] = {
    2017: YearProfile(
        year=2017,
        gmv_fen=168_200_000_000 * FEN_PER_RMB,
        previous_year=2016,
        previous_gmv_fen=120_700_000_000 * FEN_PER_RMB,
        mobile_share=0.90,
        mobile_share_first_hour=0.93,
        peak_payments_per_s=256_000,
        peak_orders_per_s=325_000,
        peak_second=5 * 60 + 22,
        payments=1_480_000_000,
        hourly_permille=HOURLY_2017,
        countries=192,
        merchant_clubs=(167, 17, 6),
    ),
    2016: YearProfile(
        year=2016,
        gmv_fen=120_700_000_000 * FEN_PER_RMB,
        previous_year=2015,
        previous_gmv_fen=91_200_000_000 * FEN_PER_RMB,
        mobile_share=0.82,
        mobile_share_first_hour=0.85,
        peak_payments_per_s=120_000,
        peak_orders_per_s=175_000,
        peak_second=5 * 60 + 22,
        # not published here: 2017's mean payment (RMB 113.6) applied to 2016's GMV
        payments=1_062_000_000,
        hourly_permille=HOURLY_2016,
        countries=192,
        merchant_clubs=None,
        derived=("peak_second", "payments", "mobile_share_first_hour", "countries"),
    ),
}

for _profile in YEARS.values():
    assert sum(_profile.hourly_permille) == 1000, _profile.year
    assert len(_profile.hourly_permille) == 24
del _profile


@dataclass(frozen=True)
class Targets:
    """A year's figures for the first `hours` of its day: what a run of that many hours
    is compared with.  All 24 hours: the published figures themselves.  Fewer: the
    day's curve (the published hourly shares, and the midnight rush shaped on the
    published peak) says how much of each figure those hours held; `derived` names
    those nobody published as such."""

    year: int
    hours: float
    gmv_fen: float
    previous_year: int
    previous_gmv_fen: float  # the previous festival's, in the same hours of its day
    payments: float
    mobile_share: float
    first_hour_share: float  # of these hours' GMV
    peak_payments_per_s: float
    peak_orders_per_s: float
    peak_second: int
    countries: int | None  # reach and clubs were published for the whole day only
    merchant_clubs: tuple[int, ...] | None
    hourly_permille: tuple[float, ...]  # each hour's share of the day, per mille, for the hours run
    derived: tuple[str, ...] = ()

    @property
    def whole_day(self) -> bool:
        return self.hours >= 24

    @property
    def growth(self) -> float:
        return self.gmv_fen / self.previous_gmv_fen - 1.0


def share_of_day(year: YearProfile, hours: float) -> float:
    """The share of the day's payments (and GMV) in its first `hours`."""
    from double11.simulator.curve import payment_curve  # the curve is built from this module's profiles

    if hours >= 24:
        return 1.0
    whole = int(hours)
    done = sum(year.hourly_permille[:whole]) / 1000
    if hours == whole:
        return done
    curve = payment_curve(year)
    hour = curve[whole * 3600:(whole + 1) * 3600]
    # within the hour the curve's shape: the midnight rush is far from even
    return done + float(hour[: int(round((hours - whole) * 3600))].sum())


def targets(year: YearProfile, hours: float = 24.0) -> Targets:
    """What the first `hours` of the year's day held (see Targets)."""
    hours = min(max(hours, 0.0), 24.0)
    if hours >= 24:
        return Targets(year.year, 24.0, year.gmv_fen, year.previous_year, year.previous_gmv_fen, year.payments,
                       year.mobile_share, year.first_hour_share, year.peak_payments_per_s, year.peak_orders_per_s,
                       year.peak_second, year.countries, year.merchant_clubs,
                       tuple(float(p) for p in year.hourly_permille), year.derived)
    from double11.simulator.curve import payment_curve

    share = share_of_day(year, hours)
    previous = YEARS.get(year.previous_year)
    # the previous festival's same hours: its own curve where we have it, else this year's shape
    previous_share = share_of_day(previous, hours) if previous else share
    first = share_of_day(year, min(hours, 1.0))
    # as the plan draws it (mixes.mobile_flags): the first hour more mobile, the rest making up the day
    later_mobile = ((year.mobile_share - year.first_hour_share * year.mobile_share_first_hour)
                    / (1 - year.first_hour_share))
    mobile = (first * year.mobile_share_first_hour + (share - first) * later_mobile) / share
    derived = {"gmv_fen", "previous_gmv_fen", "payments", "mobile_share", *year.derived}
    window_s = max(1, int(round(hours * 3600)))
    if year.peak_second < window_s:
        peak_pay, peak_orders, peak_second = (float(year.peak_payments_per_s), float(year.peak_orders_per_s),
                                              year.peak_second)
    else:  # the run ends before the published peak: the busiest second of the curve before its end
        curve = payment_curve(year)[:window_s]
        peak_second = int(curve.argmax())
        peak_pay = float(curve[peak_second]) * year.payments
        peak_orders = peak_pay / year.conversion
        derived |= {"peak_payments_per_s", "peak_orders_per_s", "peak_second"}
    whole = int(hours)
    hourly = [float(p) for p in year.hourly_permille[:whole]]
    if hours > whole:
        hourly.append(1000 * (share - sum(year.hourly_permille[:whole]) / 1000))
    return Targets(year.year, hours, year.gmv_fen * share, year.previous_year, year.previous_gmv_fen * previous_share,
                   year.payments * share, mobile, first / share, peak_pay, peak_orders, peak_second, None, None,
                   tuple(hourly), tuple(sorted(derived)))


def profile(year: int) -> YearProfile:
    try:
        return YEARS[year]
    except KeyError:
        raise ValueError(f"no figures for {year}; known years: {sorted(YEARS)}") from None

# The top-selling international brands the 2017 announcements named.
TOP_INTERNATIONAL_2017 = frozenset(
    ("Apple", "Estee Lauder", "Gap", "L'Oreal", "Nike", "Samsung", "Uniqlo", "Zara"))
