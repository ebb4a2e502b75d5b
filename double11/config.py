"""Configuration of one festival: money rules, clock and the comparison baseline."""

from __future__ import annotations

import msgspec

from double11 import limits


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
    # the festival day starts at this instant (ms since the Unix epoch); 2017-11-11 00:00 UTC+8
    festival_start_ms: int = 1_510_329_600_000


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
