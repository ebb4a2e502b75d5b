"""Exact global live figures across a cluster's units (issue 25).

Each unit's primary publishes its **raw cumulative figures** (the counters and
arrays `engine.stats.FestivalStats` holds, not the derived view) with the
position of the last stream record they include, on the subject
`double11.figures.<unit>`, every `limits.figures_publish_s` and once more on
close.  An aggregator keeps each unit's latest publication, sums the raw
figures and derives the view from the sums with FestivalStats' own `view`:
rates, peaks, shares, clubs and top lists are computed from summed figures,
never summed themselves, so the cluster's view is the one an engine holding
every unit's commands would show.

Why the position orders publications: a unit's engine is a deterministic
function of its stream, so its figures at record n are the same whoever
published them (the primary, a promoted standby, a unit reopened from its
stream).  The publication with the highest position wins; an older one
arriving late changes nothing.  The figures are read under the festival's
read barrier, so only what the stream holds is ever published.

Each publication carries everything (cumulative, not deltas): a lost message
costs nothing but staleness, so plain NATS publish is enough (no stream, no
disk).  It is compact: every array in the narrowest integer type that holds
it, then zlib (the per-merchant arrays are catalog-sized and mostly runs of
small numbers or zeros early in the day).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from typing import Any

import msgspec
import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg

from double11 import geo, limits
from double11.catalog.model import Catalog
from double11.cluster.stream_log import LoopThread, check_unit, connect
from double11.config import FestivalConfig
from double11.engine.stats import FestivalStats, PerSecond
from double11.promotions import views as promotion_views
from double11.promotions.spec import DEAL_KINDS
from double11.service.festival import Festival

logger = logging.getLogger("double11.cluster")

SUBJECT_PREFIX = "double11.figures"
# FestivalStats' raw figures, by kind: what a unit publishes and the aggregator sums
SCALARS = ("gmv_fen", "mobile_gmv_fen", "refunded_fen", "settled_fen", "checkouts", "orders", "payments",
           "buyers", "new_buyers")
ARRAYS = ("merchant_gmv", "brand_gmv", "country_gmv", "gmv_by_hour")
PER_SECOND = ("checkouts_per_s", "payments_per_s")
_NARROW = (np.uint8, np.uint16, np.uint32)


def figures_subject(unit: str) -> str:
    return f"{SUBJECT_PREFIX}.{check_unit(unit)}"


class FiguresMismatch(ValueError):
    """A publication that does not fit the aggregator's festival (another catalog, a damaged message)."""


# ------------------------------------------------------------------ the message
class Packed(msgspec.Struct, array_like=True, frozen=True):
    """An integer array as the narrowest type that holds its values."""

    dtype: str
    data: bytes

    @classmethod
    def of(cls, values: np.ndarray) -> Packed:
        values = np.asarray(values, dtype=np.int64)
        dtype: Any = np.int64
        if values.size == 0 or values.min() >= 0:
            top = int(values.max()) if values.size else 0
            dtype = next((t for t in _NARROW if top <= np.iinfo(t).max), np.int64)
        return cls(np.dtype(dtype).str, values.astype(dtype).tobytes())

    def array(self) -> np.ndarray:
        dtype = np.dtype(self.dtype)
        if dtype.kind not in "iu" or len(self.data) % dtype.itemsize:
            raise FiguresMismatch(f"an array of {len(self.data)} bytes of {self.dtype!r} is not integers")
        return np.frombuffer(self.data, dtype=dtype).astype(np.int64)


class Series(msgspec.Struct, array_like=True, frozen=True):
    """A per-second count: its seconds (the first, then the gaps between them) and counts."""

    first: int
    gaps: Packed
    counts: Packed

    @classmethod
    def of(cls, per_second: PerSecond) -> Series:
        n = len(per_second.counts)
        seconds = np.fromiter(per_second.counts.keys(), dtype=np.int64, count=n)
        counts = np.fromiter(per_second.counts.values(), dtype=np.int64, count=n)
        order = np.argsort(seconds, kind="stable")  # in time order already, unless read from a snapshot
        seconds, counts = seconds[order], counts[order]
        return cls(int(seconds[0]) if n else 0, Packed.of(np.diff(seconds)), Packed.of(counts))

    def seconds_and_counts(self) -> tuple[np.ndarray, np.ndarray]:
        counts, gaps = self.counts.array(), self.gaps.array()
        if len(gaps) != max(len(counts) - 1, 0):
            raise FiguresMismatch(f"a per-second series of {len(counts)} counts has {len(gaps)} gaps")
        seconds = self.first + np.concatenate([np.zeros(min(len(counts), 1), dtype=np.int64), np.cumsum(gaps)])
        return seconds, counts


class UnitFigures(msgspec.Struct, array_like=True, frozen=True):
    """One unit's raw cumulative figures as of stream record `seq`."""

    unit: str
    seq: int  # the last stream record the figures include
    now_ms: int  # the unit's festival clock when they were read
    scalars: list[int]  # in SCALARS' order
    arrays: list[Packed]  # in ARRAYS' order
    per_second: list[Series]  # in PER_SECOND's order
    promotions: dict[str, Any]  # promotions/views.figures of the unit
    speedup: float = 1.0  # the unit's festival clock: festival seconds per real second (last: older senders)


def unit_figures(unit: str, seq: int, now_ms: int, stats: FestivalStats,
                 promotions: dict[str, Any] | None = None, speedup: float = 1.0) -> UnitFigures:
    """The figures of `stats` (read while the engine stands still)."""
    return UnitFigures(check_unit(unit), seq, now_ms, [int(getattr(stats, name)) for name in SCALARS],
                       [Packed.of(getattr(stats, name)) for name in ARRAYS],
                       [Series.of(getattr(stats, name)) for name in PER_SECOND], promotions or {}, speedup)


def encode(figures: UnitFigures) -> bytes:
    return zlib.compress(msgspec.msgpack.encode(figures), 1)


def decode(data: bytes) -> UnitFigures:
    try:
        figures = msgspec.msgpack.decode(zlib.decompress(data), type=UnitFigures)
    except (zlib.error, msgspec.DecodeError) as exc:
        raise FiguresMismatch(f"not a unit's figures: {exc}") from None
    if len(figures.scalars) != len(SCALARS) or len(figures.arrays) != len(ARRAYS) or \
            len(figures.per_second) != len(PER_SECOND):
        raise FiguresMismatch(f"unit {figures.unit!r}: {len(figures.scalars)} scalars, {len(figures.arrays)} "
                              f"arrays and {len(figures.per_second)} series; expected {len(SCALARS)}, "
                              f"{len(ARRAYS)} and {len(PER_SECOND)}")
    return figures


def read_figures(festival: Festival, unit: str) -> UnitFigures:
    """A festival's figures and the last record they include, once that record
    is durable (the read barrier: service/reads.py).  The position must be
    exact, so the read waits (holding the state) for a record still on its way
    to the log: at most one record's round trip, once per publication."""
    log = festival.durability.log
    if log is None:
        raise ValueError("only a festival with a log has a position to publish figures at")

    def read() -> tuple[int, int, FestivalStats, dict[str, Any]]:  # under the festival's lock: no batch applies
        on_its_way = festival.durability.unsynced()
        if on_its_way is not None:
            on_its_way.result()  # a failed write raises storage_unavailable: nothing is published
        engine = festival.engine
        now = max(festival.clock.now_ms(), engine.now_ms)
        return log.next_seq - 1, now, copied(engine.stats), unit_promotions(engine)

    seq, now, stats, promotions = festival.reads.at_rest(read)
    return unit_figures(unit, seq, now, stats, promotions, festival.clock.speedup)  # packed once the state goes on


def copied(stats: FestivalStats) -> FestivalStats:
    """The raw figures of `stats` as they are now (the least work under the
    state's lock: copies, no packing)."""
    copy = FestivalStats.__new__(FestivalStats)
    copy.config = stats.config
    for name in SCALARS:
        setattr(copy, name, getattr(stats, name))
    for name in ARRAYS:
        setattr(copy, name, getattr(stats, name).copy())
    for name in PER_SECOND:
        held: PerSecond = getattr(stats, name)
        per_second = PerSecond()
        per_second.counts, per_second.peak, per_second.peak_second = dict(held.counts), held.peak, held.peak_second
        setattr(copy, name, per_second)
    return copy


# ------------------------------------------------------------------ the sum
class FiguresSum:
    """The latest figures of each unit, and their sum as one festival's view
    (pure: no NATS, no clock)."""

    def __init__(self, catalog: Catalog, config: FestivalConfig) -> None:
        self.catalog, self.config = catalog, config
        self._latest: dict[str, UnitFigures] = {}
        self._decoded: dict[str, tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]] = {}
        self._summed: FestivalStats | None = None  # until a publication changes it
        self._sizes = {"merchant_gmv": catalog.merchants, "brand_gmv": catalog.brands,
                       "country_gmv": geo.COUNTRY_SLOTS, "gmv_by_hour": 24}

    def take(self, figures: UnitFigures) -> bool:
        """Keeps `figures` if they are the unit's latest (a higher position, or
        the same one read later); whether they were kept.  Raises FiguresMismatch
        for figures of another catalog."""
        held = self._latest.get(figures.unit)
        if held is not None and (figures.seq, figures.now_ms) <= (held.seq, held.now_ms):
            return False
        arrays = [packed.array() for packed in figures.arrays]
        for name, array in zip(ARRAYS, arrays):
            if len(array) != self._sizes[name]:
                raise FiguresMismatch(f"unit {figures.unit!r}: {name} has {len(array)} entries, "
                                      f"the catalog {self._sizes[name]}")
        self._decoded[figures.unit] = (arrays, [series.seconds_and_counts() for series in figures.per_second])
        self._latest[figures.unit] = figures
        self._summed = None
        return True

    def positions(self) -> dict[str, int]:
        """The stream position each unit's figures are at."""
        return {unit: figures.seq for unit, figures in sorted(self._latest.items())}

    def now_ms(self) -> int:
        """The latest clock any unit published (the festival's start before any did)."""
        return max((f.now_ms for f in self._latest.values()), default=self.config.festival_start_ms)

    def stats(self) -> FestivalStats:
        """A FestivalStats holding the sum of every unit's raw figures."""
        if self._summed is None:
            self._summed = self._sum()
        return self._summed

    def _sum(self) -> FestivalStats:
        total = FestivalStats(self.catalog, self.config)
        for k, name in enumerate(SCALARS):
            setattr(total, name, sum(f.scalars[k] for f in self._latest.values()))
        for k, name in enumerate(ARRAYS):
            summed = getattr(total, name)
            for arrays, _ in self._decoded.values():
                summed += arrays[k]
        for k, name in enumerate(PER_SECOND):
            parts = [series[k] for _, series in self._decoded.values()]
            setattr(total, name, summed_per_second(parts))
        return total

    def view(self, now_ms: int | None = None) -> dict[str, Any]:
        """What GET /v1/stats shows for one engine holding every unit's figures
        (`at` now_ms; by default the latest clock a unit published)."""
        now = self.now_ms() if now_ms is None else now_ms
        view = self.stats().view(self.catalog, now)
        view["promotions"] = summed_promotions([f.promotions for f in self._latest.values()])
        return view


def summed_per_second(parts: list[tuple[np.ndarray, np.ndarray]]) -> PerSecond:
    """The units' per-second counts added second by second.  Its peak is the
    earliest second holding the most: where an engine's own PerSecond, whose
    clock never goes back, leaves it (a later second only equal to it does
    not move it)."""
    total = PerSecond()
    if not parts:
        return total
    seconds = np.concatenate([s for s, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    unique, at = np.unique(seconds, return_inverse=True)
    sums = np.zeros(len(unique), dtype=np.int64)
    np.add.at(sums, at, counts)  # in int64 (bincount's weights would add in float64)
    kept = sums > 0
    unique, sums = unique[kept], sums[kept]
    total.counts = dict(zip(unique.tolist(), sums.tolist()))
    if len(sums):
        top = int(np.argmax(sums))  # the first of the largest: the earliest second
        total.peak, total.peak_second = int(sums[top]), int(unique[top])
    return total


def unit_promotions(engine: Any) -> dict[str, Any]:
    """A unit's promotion figures (promotions/views.figures) and, for the
    deals sold out on the cluster, every deal's units left in this unit's
    share and when that share sold out (`DEALS_LEFT`)."""
    figures = promotion_views.figures(engine)
    deals = engine.promos.deals
    rows = deals.rows[:deals.size]
    sku = engine.catalog.sku_id[rows["sku"]]
    figures[DEALS_LEFT] = np.stack([rows["qty"] - rows["taken"], rows["sold_out_at"], sku, rows["kind"]],
                                   axis=1).tolist()
    return figures


# by deal row: [units left in the unit's share, when that share sold out (or -1), the SKU's id, the kind's index]
DEALS_LEFT = "deals_left"


def summed_promotions(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The units' promotion figures added up (promotions/views.figures): counts
    and amounts summed, by kind where they are by kind.  A deal's units are
    shares too (cluster/definitions.py): it has sold out once every unit's
    share has, at the last unit's time, so the deals sold out and the latest
    of them come from every unit's `DEALS_LEFT`."""
    total: dict[str, Any] = {}
    lefts = [part[DEALS_LEFT] for part in parts if DEALS_LEFT in part]
    for part in parts:
        for key, value in part.items():
            if key == DEALS_LEFT:
                continue
            if isinstance(value, dict):
                into = total.setdefault(key, {})
                for kind, amount in value.items():
                    into[kind] = into.get(kind, 0) + amount
            elif isinstance(value, list):
                total.setdefault(key, []).extend(value)
            else:
                total[key] = total.get(key, 0) + value
    if lefts and len(lefts) == len(parts):
        total["deals_sold_out"], total["deals_sold_out_latest"] = _sold_out_everywhere(lefts)
    latest = total.get("deals_sold_out_latest")
    if latest is not None:
        latest.sort(key=lambda deal: -deal["sold_out_at"])
        del latest[limits.stats_top_n:]
    return total


def _sold_out_everywhere(lefts: list[list[list[int]]]) -> tuple[int, list[dict[str, Any]]]:
    """(how many deals have sold out in every unit's share, the latest of
    them at the last unit's time, newest first)."""
    deals = min(len(left) for left in lefts)  # a unit that has not applied the newest definition yet
    if deals == 0:
        return 0, []
    table = np.array([left[:deals] for left in lefts], dtype=np.int64).reshape(len(lefts), deals, 4)
    at = table[:, :, 1].max(axis=0)
    out = np.flatnonzero((table[:, :, 0].sum(axis=0) == 0) & (at >= 0))
    latest = out[np.argsort(-at[out], kind="stable")][:limits.stats_top_n]
    first = table[0]
    return len(out), [{"deal": int(row) + 1, "sku": int(first[row, 2]), "kind": DEAL_KINDS[int(first[row, 3])],
                       "sold_out_at": int(at[row])} for row in latest.tolist()]


# ------------------------------------------------------------------ over NATS
class FiguresPublisher:
    """Publishes a unit's figures every `period_s` from a thread of its own,
    and once more on close (close it before the festival)."""

    def __init__(self, festival: Festival, urls: list[str], unit: str,
                 period_s: float = limits.figures_publish_s) -> None:
        self.festival, self.unit, self.subject = festival, check_unit(unit), figures_subject(unit)
        self.period_s = period_s
        self.published = 0
        self.last: UnitFigures | None = None  # the last figures sent
        self._io = LoopThread(f"double11-figures-{unit}")
        try:
            self._nc: Client = self._io.call(connect(urls), limits.stream_connect_s_max)
        except BaseException as exc:
            self._io.close()
            raise ConnectionError(f"unit {unit} cannot publish its figures: no NATS server answered at "
                                  f"{', '.join(urls)} ({type(exc).__name__}: {exc})") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._every_period, name=f"double11-figures-{unit}", daemon=True)
        self._thread.start()

    def _every_period(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.publish()
            except Exception as exc:  # noqa: BLE001 (a storage fault, a node away: the next period tries again)
                logger.warning("unit %s: figures not published (%s); trying again in %g s",
                               self.unit, exc, self.period_s)

    def publish(self) -> UnitFigures:
        """Reads the festival's figures and publishes them now."""
        figures = read_figures(self.festival, self.unit)
        data = encode(figures)
        if len(data) > limits.nats_payload_bytes_max:
            raise ValueError(f"the figures of unit {self.unit} take {len(data):,} bytes, over "
                             f"{limits.nats_payload_bytes_max:,} (limits.nats_payload_bytes_max)")
        self._io.call(self._send(data), limits.stream_ack_wait_s)
        self.last, self.published = figures, self.published + 1
        return figures

    async def _send(self, data: bytes) -> None:
        await self._nc.publish(self.subject, data)
        await self._nc.flush(timeout=math.ceil(limits.stream_ack_wait_s))

    def close(self) -> None:
        """Stops the periodic publication and publishes the final figures."""
        self._stop.set()
        self._thread.join()
        try:
            self.publish()
        except Exception as exc:  # noqa: BLE001 (said; the unit's stream still holds everything)
            logger.warning("unit %s: its final figures were not published (%s)", self.unit, exc)
        finally:
            try:
                self._io.call(self._nc.close(), limits.nats_stop_s_max)
            finally:
                self._io.close()


class FiguresAggregator:
    """Follows every unit's figures on the cluster at `urls` and sums them."""

    def __init__(self, urls: list[str], catalog: Catalog, config: FestivalConfig) -> None:
        self.sum = FiguresSum(catalog, config)
        self.received = 0  # publications taken in, kept or not
        self.refused = 0  # publications that did not fit this festival
        self._changed = threading.Condition()
        # the latest clock a unit published: (its now_ms, time.monotonic() when it came, its speedup)
        self._clock: tuple[int, float, float] | None = None
        self._io = LoopThread("double11-figures-aggregator")
        try:
            self._nc: Client = self._io.call(self._subscribe(urls), limits.stream_connect_s_max)
        except BaseException as exc:
            self._io.close()
            raise ConnectionError(f"no NATS server answered at {', '.join(urls)} for the units' figures "
                                  f"({type(exc).__name__}: {exc})") from None

    async def _subscribe(self, urls: list[str]) -> Client:
        nc = await connect(urls)
        await nc.subscribe(f"{SUBJECT_PREFIX}.*", cb=self._on_message)
        await nc.flush()
        return nc

    async def _on_message(self, msg: Msg) -> None:
        self.take(msg.data)

    def take(self, data: bytes) -> bool:
        """Takes one publication (as it came on the wire); whether it moved the figures."""
        kept = False
        try:
            figures = decode(data)  # outside the lock: views go on meanwhile
            with self._changed:
                kept = self.sum.take(figures)
                if kept and (self._clock is None or figures.now_ms >= self._clock[0]):
                    self._clock = (figures.now_ms, time.monotonic(), figures.speedup)
        except FiguresMismatch as exc:
            logger.warning("figures ignored: %s", exc)
            with self._changed:
                self.refused += 1
        with self._changed:
            self.received += 1
            self._changed.notify_all()
        return kept

    def positions(self) -> dict[str, int]:
        with self._changed:
            return self.sum.positions()

    def view(self, now_ms: int | None = None) -> dict[str, Any]:
        with self._changed:
            return self.sum.view(now_ms)

    def speedup(self) -> float:
        """The units' clocks' pace, as their latest figures say it (1.0 before any)."""
        with self._changed:
            return self._clock[2] if self._clock is not None else 1.0

    def clock_ms(self) -> int:
        """The units' festival clock now: the latest one published, run on at
        its pace since it came.  A publication is up to limits.figures_publish_s
        old, minutes of festival time at a replay's speedup: a client pacing
        itself on the stats' `at` would fall that far behind."""
        with self._changed:
            if self._clock is None:
                return self.sum.now_ms()
            published_ms, came, speedup = self._clock
            return published_ms + int((time.monotonic() - came) * 1000 * speedup)

    def wait_received(self, count: int, timeout_s: float) -> bool:
        """Whether `count` publications were taken in (kept or not) within timeout_s."""
        with self._changed:
            return self._changed.wait_for(lambda: self.received >= count, timeout_s)

    def wait_for(self, positions: dict[str, int], timeout_s: float) -> bool:
        """Whether every unit named reached its position within timeout_s."""
        def reached() -> bool:
            held = self.sum.positions()
            return all(held.get(unit, -1) >= seq for unit, seq in positions.items())

        with self._changed:
            return self._changed.wait_for(reached, timeout_s)

    def close(self) -> None:
        try:
            self._io.call(self._nc.close(), limits.nats_stop_s_max)
        finally:
            self._io.close()
