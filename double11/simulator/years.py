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


def profile(year: int) -> YearProfile:
    try:
        return YEARS[year]
    except KeyError:
        raise ValueError(f"no figures for {year}; known years: {sorted(YEARS)}") from None

# The top-selling international brands the 2017 announcements named.
TOP_INTERNATIONAL_2017 = frozenset(
    ("Apple", "Estee Lauder", "Gap", "L'Oreal", "Nike", "Samsung", "Uniqlo", "Zara"))
