"""Which unit serves a buyer, and which unit an id belongs to.

Units split the festival by buyer, as Alibaba's LDC units did: a buyer hashes
into one of `limits.cluster_slots` slots, and the slot map says which unit
owns each slot.  A checkout and its payment, its orders, its idempotency keys
and the buyer's coupons therefore never leave one unit, and no command needs
two units (stock is split into quotas instead: quotas.py).

Ids: each unit's engine numbers its checkouts and orders from 1 (rows + 1).
The ids the cluster hands out carry the unit's index above
`limits.unit_id_bits`, so a pay, cancel, confirm or refund, which names a
checkout or an order and not a buyer, goes to the unit that made it.  Unit 0's
ids are its local ids unchanged.

The map lives in the JetStream KV bucket `d11-slots` (key `map`), written once
when the cluster is made; moving slots between units (a live re-split) is not
built yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import nats.js.errors
import numpy as np
from nats.aio.client import Client

from double11 import limits
from double11.cluster.buckets import open_bucket
from double11.cluster.stream_log import ask_cluster, check_unit, when_ready

ID_BITS = limits.unit_id_bits
LOCAL_ID_MASK = (1 << ID_BITS) - 1
SLOTS_BUCKET, SLOTS_KEY = "d11-slots", "map"


def slot_of(buyers: np.ndarray, slots: int = limits.cluster_slots) -> np.ndarray:
    """Each buyer's slot: a 64-bit mix of the id (splitmix64's finalizer), so
    consecutive ids spread over every slot, modulo the slot count."""
    x = buyers.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(slots)).astype(np.int64)


def global_ids(unit_index: int | np.ndarray, local: np.ndarray) -> np.ndarray:
    """A unit's local ids as the cluster's ids."""
    return (np.asarray(unit_index, dtype=np.int64) << ID_BITS) | local


def unit_of_id(ids: np.ndarray) -> np.ndarray:
    """The unit index an id of the cluster's carries (ids <= 0: -1)."""
    return np.where(ids > 0, ids >> ID_BITS, -1)


def local_ids(ids: np.ndarray) -> np.ndarray:
    return ids & LOCAL_ID_MASK


class SlotMapWire(msgspec.Struct, forbid_unknown_fields=True):
    units: list[str]
    owner: list[int]  # by slot: an index into units


@dataclass(frozen=True, eq=False)
class SlotMap:
    """The units, in their fixed order (a unit's index is in its ids), and the
    unit that owns each slot."""

    units: tuple[str, ...]
    owner: np.ndarray  # int64, one per slot

    def __post_init__(self) -> None:
        if not 1 <= len(self.units) <= limits.cluster_units_max:
            raise ValueError(f"a cluster has 1..{limits.cluster_units_max} units, got {len(self.units)}")
        if len(set(self.units)) != len(self.units):
            raise ValueError(f"unit names must differ, got {list(self.units)}")
        for unit in self.units:
            check_unit(unit)
        if len(self.owner) == 0 or self.owner.min() < 0 or self.owner.max() >= len(self.units):
            raise ValueError("every slot must be owned by one of the units")

    @classmethod
    def even(cls, units: list[str] | tuple[str, ...], slots: int = limits.cluster_slots) -> SlotMap:
        """Slots dealt round the units in turn: each unit a near-equal share."""
        return cls(tuple(units), np.arange(slots, dtype=np.int64) % len(units))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self.units == other.units and np.array_equal(self.owner, other.owner)

    __hash__ = None  # type: ignore[assignment]  # a map holds an array

    @property
    def slots(self) -> int:
        return len(self.owner)

    def unit_of_buyer(self, buyers: np.ndarray) -> np.ndarray:
        """The index of the unit serving each buyer."""
        return self.owner[slot_of(buyers, self.slots)]

    def index(self, unit: str) -> int:
        return self.units.index(unit)

    def to_bytes(self) -> bytes:
        return msgspec.json.encode(SlotMapWire(list(self.units), self.owner.tolist()))

    @classmethod
    def from_bytes(cls, data: bytes) -> SlotMap:
        wire = msgspec.json.decode(data, type=SlotMapWire)
        return cls(tuple(wire.units), np.asarray(wire.owner, dtype=np.int64))


def save_slot_map(urls: list[str], slot_map: SlotMap) -> None:
    """Writes the cluster's map once: a second, different map is refused (the
    units' ids and their buyers follow the first)."""
    async def save(nc: Client) -> None:
        bucket = await open_bucket(nc, SLOTS_BUCKET)

        async def create_or_read() -> SlotMap | None:
            try:
                await bucket.create(SLOTS_KEY, slot_map.to_bytes())
                return None
            except nats.js.errors.KeyWrongLastSequenceError:
                return SlotMap.from_bytes((await bucket.get(SLOTS_KEY)).value or b"")

        # A bucket just made may not answer puts yet (no responders while its
        # stream is placed, on a busy machine): tried again, as the streams are.
        held = await when_ready(nc, create_or_read)
        if held is not None and held != slot_map:
            raise ValueError(f"the cluster already has a slot map, for units {list(held.units)}")

    ask_cluster(urls, "double11-slots", save)


async def read_slot_map(nc: Client) -> SlotMap:
    """The cluster's map, read on `nc` (LookupError when it has none yet)."""
    bucket = await open_bucket(nc, SLOTS_BUCKET)
    try:
        entry = await when_ready(nc, lambda: bucket.get(SLOTS_KEY))
    except nats.js.errors.KeyNotFoundError:
        raise LookupError("the cluster has no slot map yet (double11 cluster up makes it)") from None
    return SlotMap.from_bytes(entry.value or b"")


def load_slot_map(urls: list[str]) -> SlotMap:
    return ask_cluster(urls, "double11-slots", read_slot_map)
