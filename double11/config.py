"""Configuration of one festival: money rules, clock and the comparison baseline."""

from __future__ import annotations

import msgspec

from double11 import limits

# 2017-11-11 00:00 UTC+8: the day the simulator imitates (`double11 festival`, the bench)
IMITATED_DAY_START_MS = 1_510_329_600_000
# A server's own day starts this many real seconds after its first start: time to start
# `double11 simulate` (which builds its plan first) before the midnight rush, at any speed-up.
OWN_DAY_LEAD_REAL_S = 15
DAY_MS = 86_400_000
UTC8_MS = 8 * 3_600_000


class PreviousFestival(msgspec.Struct, frozen=True):
    """The festival we compare against ("growth against last year")."""

    year: int = 2016
    gmv_fen: int = 120_700_000_000 * 100
    # share of the day's GMV by hour of the festival day (UTC+8), in per mille;
    # used for "growth at the same moment".  Sums to 1000.
    hourly_permille: tuple[int, ...] = (
        330, 40, 20, 12, 8, 6, 8, 14, 24, 34, 38, 38,
        36, 34, 32, 30, 30, 30, 32, 36, 40, 44, 38, 46,
    )


class FestivalConfig(msgspec.Struct, frozen=True):
    payment_timeout_ms: int = limits.payment_timeout_ms_default
    commission_bps: int = 200  # platform commission on settlement, basis points
    # CNY per USD as an exact fraction (6.65 = 665 / 100), so no float touches money
    cny_per_usd_num: int = 665
    cny_per_usd_den: int = 100
    previous: PreviousFestival = PreviousFestival()

    @property
    def scale(self) -> float:
        return self.scale_num / self.scale_den
    # a simulated festival at a fraction of real size (scale_num / scale_den):
    # merchant clubs are counted at thresholds times that fraction
    scale_num: int = 1
    scale_den: int = 1
    # tables are sized for this many checkouts up front (untouched capacity is
    # address space only); past it they grow by doubling, which pauses a batch
    expected_checkouts: int = 1 << 20
    # write every page of those tables at start: a first write to a fresh page
    # costs a page fault, several times the cost of the write itself
    prefault_memory: bool = False
    # the festival day starts at this instant (ms since the Unix epoch), written
    # `festival_start_ms` in a file.  None: the festival runs its own day, which a
    # server fixes at its first start (see own_day); read it as `festival_start_ms`
    start_ms: int | None = msgspec.field(default=None, name="festival_start_ms")
    # how many checkouts the promotions' tables are sized for up front (those
    # with discounts or coupons; coupons granted alike): 0 for a festival that
    # expects few, whose promotions' tables start small and grow.  New fields
    # go last: a format 1 snapshot pickled this struct by position
    expected_discounted_checkouts: int = 0

    @property
    def festival_start_ms(self) -> int:
        """The day's start; the imitated day's when none was fixed (an engine made
        directly, as the tests and the bench make them, replays 2017)."""
        return IMITATED_DAY_START_MS if self.start_ms is None else self.start_ms


def load_config(path: str | None = None, **overrides) -> FestivalConfig:
    """A festival's configuration from a TOML or JSON file (any field may be
    left out), with overrides from the command line on top."""
    from pathlib import Path

    from double11.errors import Double11Error, Result

    config = FestivalConfig()
    if path:
        text = Path(path).read_bytes()
        try:
            decode = msgspec.toml.decode if str(path).endswith(".toml") else msgspec.json.decode
            config = decode(text, type=FestivalConfig)
        except msgspec.ValidationError as exc:
            raise Double11Error(Result.invalid_request, f"{path}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise Double11Error(Result.invalid_request, f"{path}: not valid TOML or JSON: {exc}") from None
    if sum(config.previous.hourly_permille) != 1000 or len(config.previous.hourly_permille) != 24:
        raise Double11Error(Result.invalid_request, "previous.hourly_permille needs 24 values adding up to 1000")
    if config.payment_timeout_ms <= 0 or not 0 <= config.commission_bps <= 10_000:
        raise Double11Error(Result.invalid_request, "payment_timeout_ms must be > 0 and commission_bps in 0..10000")
    if config.cny_per_usd_num <= 0 or config.cny_per_usd_den <= 0:
        raise Double11Error(Result.invalid_request, "cny_per_usd_num and cny_per_usd_den must be positive")
    return msgspec.structs.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def own_day(config: FestivalConfig, clock_start_ms: int | None, now_ms: int,
            speedup: float) -> tuple[FestivalConfig, int | None]:
    """(the configuration, the clock's start) a festival fixes at its first start.

    Given neither a clock start nor a festival start, a server runs its own day, not
    one years ago that its clock would never reach: the day dated by its first start
    (midnight UTC+8, so the hours of the day are the festival's hours, as the live
    figures count them), on a clock that reaches that midnight OWN_DAY_LEAD_REAL_S
    real seconds after the start.  Given a clock start (the festival command and the
    bench set it relative to the imitated day), the imitated day stays; given a
    festival start, it is kept and the clock is real time."""
    if config.start_ms is not None or clock_start_ms is not None:
        return config, clock_start_ms
    midnight = (now_ms + UTC8_MS) // DAY_MS * DAY_MS - UTC8_MS
    lead_ms = int(OWN_DAY_LEAD_REAL_S * 1000 * speedup)
    return msgspec.structs.replace(config, start_ms=midnight), midnight - lead_ms
