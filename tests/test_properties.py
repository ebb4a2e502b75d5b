"""The engine against the reference model (tests/model/reference.py) on random
command streams: every result, every view and the invariants, after every batch;
and recovery (snapshot + log replay) gives back exactly the same state.

Streams are drawn as abstract recipes and turned into commands against the
model's state when their batch is sent, so "pay with the right amount",
"retry an earlier command" or "reuse an earlier key" mean what they say and
shrink well.  Bad shapes carry exactly one defect each.
"""

from __future__ import annotations

import copy
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model import SMALL_SKUS, T0, UNKNOWN_SKU, cancel, co, confirm, pay, refund, release, restock, small_catalog
from model.reference import STATS_KEYS, ReferenceFestival
from model.state import engine_state

from double11 import Festival
from double11.config import FestivalConfig
from double11.engine.encode import encode_commands
from double11.engine.machine import Engine

CONFIG = FestivalConfig(payment_timeout_ms=60_000, commission_bps=250)
TIMEOUT = CONFIG.payment_timeout_ms
START = T0 + 58 * 60_000  # 10:58 UTC+8: streams often cross into the next hour
SKUS = sorted(SMALL_SKUS)
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

# --- recipes ------------------------------------------------------------------------



def weighted(*pairs):
    """one of the strategies, chosen with the given weights (st.one_of would
    merge repeated branches)."""
    return st.sampled_from([s for w, s in pairs for _ in range(w)]).flatmap(lambda s: s)


sku_choice = st.sampled_from(SKUS * 3 + [UNKNOWN_SKU])
checkout_r = st.tuples(
    st.just("checkout"),
    st.integers(1, 6),  # buyer (1 and 2 are returning buyers)
    st.sampled_from(["CN", "CN", "US", "HK", "JP"]),
    st.sampled_from(["mobile", "pc"]),
    st.lists(st.tuples(sku_choice, weighted((2, st.just(1)), (1, st.integers(1, 3)))), min_size=1, max_size=3),
)
# which checkout / order a command names: 0 = the newest, 1 = the one before, ...;
# past the oldest it names one that does not exist
pick = weighted((3, st.integers(0, 1)), (1, st.integers(0, 6)))
pay_r = st.tuples(st.just("pay"), pick, st.sampled_from(["right", "right", "right", "wrong"]))
cancel_r = st.tuples(st.just("cancel"), pick)
confirm_r = st.tuples(st.just("confirm"), pick)
refund_r = st.tuples(st.just("refund"), pick)
restock_r = st.tuples(st.just("restock"), sku_choice, st.integers(1, 4))
# a quota moved away (double11/quotas): often more than is left for sale
release_r = st.tuples(st.just("release"), sku_choice, st.integers(1, 4))
base_r = weighted((4, checkout_r), (4, pay_r), (1, cancel_r), (2, confirm_r), (2, refund_r), (1, restock_r),
                  (1, release_r))
retry_r = st.tuples(st.just("retry"), st.integers(0, 40))
reuse_r = st.tuples(st.just("reuse"), st.integers(0, 40), base_r)
bad_r = st.tuples(st.just("bad"), base_r, st.integers(0, 1000), st.booleans())
recipe = weighted((12, base_r), (1, retry_r), (1, reuse_r), (2, bad_r))
DELTAS = [0, 0, 0, 1, 1_000, 1_000, 30_000, 30_000, TIMEOUT - 1, TIMEOUT, TIMEOUT + 1, 5 * TIMEOUT, -5_000]
batch_r = st.tuples(st.sampled_from(DELTAS), st.lists(recipe, min_size=1, max_size=8))
stream_r = st.lists(batch_r, min_size=1, max_size=12)

LINE = {"sku": 101, "qty": 1}
COMMON_DEFECTS = [
    lambda c: ["not", "an", "object"],
    lambda c: {**c, "op": "buy"},
    lambda c: {k: v for k, v in c.items() if k != "op"},
    lambda c: {**c, "idempotency_key": ""},
    lambda c: {k: v for k, v in c.items() if k != "idempotency_key"},
    lambda c: {**c, "idempotency_key": "x" * 129},
    lambda c: {**c, "idempotency_key": 12},
]
DEFECTS = {
    "checkout": [
        lambda c: {**c, "buyer": "7"},
        lambda c: {**c, "buyer": 0},
        lambda c: {**c, "country": "XX"},
        lambda c: {**c, "country": "cn"},
        lambda c: {**c, "channel": "tv"},
        lambda c: {k: v for k, v in c.items() if k != "channel"},
        lambda c: {**c, "lines": []},
        lambda c: {**c, "lines": [LINE] * 17},
        lambda c: {**c, "lines": [*c["lines"], {"sku": 101, "qty": 0}]},
        lambda c: {**c, "lines": [*c["lines"], {"sku": 101, "qty": 1000}]},
        lambda c: {**c, "lines": [*c["lines"], {"sku": 101, "qty": "1"}]},
        lambda c: {**c, "lines": [*c["lines"], {"sku": "101", "qty": 1}]},
        lambda c: {**c, "lines": [*c["lines"], 101]},
    ],
    "pay": [
        lambda c: {**c, "amount_fen": 0},
        lambda c: {**c, "amount_fen": -100},
        lambda c: {**c, "amount_fen": "100"},
        lambda c: {**c, "checkout": "1"},
        lambda c: {k: v for k, v in c.items() if k != "checkout"},
    ],
    "cancel": [lambda c: {**c, "checkout": "1"}, lambda c: {**c, "checkout": 0}],
    "confirm": [lambda c: {**c, "order": "1"}, lambda c: {**c, "order": -3}],
    "refund": [lambda c: {**c, "order": 1.0}, lambda c: {**c, "order": 0}],
    "restock": [
        lambda c: {**c, "qty": 0},
        lambda c: {**c, "qty": 1_000_000_001},
        lambda c: {**c, "sku": "101"},
    ],
    "release": [
        lambda c: {**c, "qty": 0},
        lambda c: {**c, "qty": -1},
        lambda c: {**c, "qty": 1_000_000_001},
        lambda c: {**c, "sku": 0},
        lambda c: {k: v for k, v in c.items() if k != "qty"},
    ],
}


class Driver:
    """Turns recipes into commands (against the model's state), sends each batch
    to the engine and the model, and checks results, views and invariants."""

    def __init__(self, engine, model: ReferenceFestival):
        self.engine = engine
        self.model = model
        self.now = START
        self.keys = 0
        self.history: list = []  # every command sent, in order
        self.log: list = []  # (now, commands) of every batch, for repro messages

    # recipes -> commands
    def new_key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    def _pick(self, known: int, p: int) -> int:
        return known - p if p < known else known + 1 + (p - known)

    def build(self, r, pending: dict, key: str | None = None) -> dict:
        key = key or self.new_key()
        kind = r[0]
        m = self.model
        if kind == "checkout":
            _, buyer, country, channel, lines = r
            if all(s in SMALL_SKUS for s, _ in lines):
                pending["amounts"].append(sum(q * SMALL_SKUS[s][2] for s, q in lines))
                pending["orders"] += len({SMALL_SKUS[s][0] for s, _ in lines})
            return co(key, lines, buyer=buyer, country=country, channel=channel)
        if kind in ("pay", "cancel"):
            known = len(m.checkouts) + len(pending["amounts"])
            cid = self._pick(known, r[1])
            if kind == "cancel":
                return cancel(key, cid)
            if cid in m.checkouts:
                amount = m.checkouts[cid]["amount_fen"]
            elif 0 < cid - len(m.checkouts) <= len(pending["amounts"]):
                amount = pending["amounts"][cid - len(m.checkouts) - 1]
            else:
                amount = 100
            return pay(key, cid, amount if r[2] == "right" else amount + 1)
        if kind in ("confirm", "refund"):
            oid = self._pick(len(m.orders) + pending["orders"], r[1])
            return (confirm if kind == "confirm" else refund)(key, oid)
        if kind == "restock":
            return restock(key, r[1], r[2])
        if kind == "release":
            return release(key, r[1], r[2])
        raise AssertionError(kind)

    def concrete(self, r, pending: dict):
        kind = r[0]
        if kind == "retry":
            if not self.history:
                return cancel(self.new_key(), 1)
            return copy.deepcopy(self.history[-1 - r[1] % len(self.history)])
        if kind == "reuse":
            keyed = [c for c in self.history if isinstance(c, dict) and isinstance(c.get("idempotency_key"), str)]
            key = keyed[-1 - r[1] % len(keyed)]["idempotency_key"] if keyed else None
            return self.build(r[2], pending, key=key or None)
        if kind == "bad":
            _, inner, which, old_key = r
            keyed = [c for c in self.history
                     if isinstance(c, dict) and isinstance(c.get("idempotency_key"), str) and c["idempotency_key"]]
            key = keyed[which % len(keyed)]["idempotency_key"] if old_key and keyed else None
            cmd = self.build(inner, {"amounts": [], "orders": 0}, key=key)
            defects = COMMON_DEFECTS + DEFECTS[cmd["op"]]
            return defects[which % len(defects)](cmd)
        return self.build(r, pending)

    # sending and checking
    def send(self, batch) -> None:
        delta, recipes = batch
        self.now += delta
        pending = {"amounts": [], "orders": 0}
        cmds = [self.concrete(r, pending) for r in recipes]
        self.history.extend(copy.deepcopy(cmds))
        self.log.append((self.now, copy.deepcopy(cmds)))
        got = self.engine.execute(copy.deepcopy(cmds), self.now)
        want = self.model.execute(copy.deepcopy(cmds), self.now)
        assert len(got) == len(cmds), self.repro("result count")
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert norm(g) == norm(w), self.repro(
                f"command {i} of the last batch {cmds[i]!r}: engine {g!r}, model {w!r}")
            if g["status"] >= 400:
                assert set(g["body"]) == {"error"} and isinstance(g["body"]["error"].get("message"), str)
        self.check_views()

    def repro(self, what: str) -> str:
        lines = [f"mismatch at {what}", "stream (now_ms, commands):"]
        lines += [f"  {now}: {cmds!r}" for now, cmds in self.log]
        return "\n".join(lines)

    def check_views(self) -> None:
        got, want = views(self.engine, self.model), views(self.model, self.model)
        for name in want:
            assert got[name] == want[name], self.repro(f"view {name}: engine {got[name]!r}, model {want[name]!r}")
        check_invariants(got)


def norm(result: dict):
    if result["status"] >= 400:
        return result["status"], result["body"]["error"]["code"]
    return result["status"], result["body"]


def views(f, model: ReferenceFestival) -> dict:
    """Every view of f, for every id the model knows and one past them."""
    out = {}
    for s in [*SKUS, UNKNOWN_SKU]:
        out[f"sku({s})"] = f.sku(s)
    for c in range(1, len(model.checkouts) + 2):
        out[f"checkout({c})"] = f.checkout(c)
    for o in range(1, len(model.orders) + 2):
        out[f"order({o})"] = f.order(o)
    out["ledger"] = f.ledger()
    stats = f.stats()
    out["stats"] = {k: stats.get(k) for k in STATS_KEYS}
    return out


def check_invariants(v: dict) -> None:
    for s in SKUS:
        sku = v[f"sku({s})"]
        assert min(sku["stock"], sku["reserved"], sku["sold"]) >= 0, sku
        assert sku["stock"] + sku["reserved"] + sku["sold"] == sku["stocked"], sku
        assert sku["sold"] <= sku["stocked"], sku
    ledger = v["ledger"]
    assert ledger["sum"] == 0 == sum(ledger["accounts"].values()), ledger
    assert ledger["accounts"]["escrow"] >= 0 and ledger["accounts"]["buyers"] <= 0, ledger
    assert ledger["accounts"]["merchants"] >= 0 and ledger["accounts"]["platform"] >= 0, ledger
    stats = v["stats"]
    for k in STATS_KEYS:
        values = stats[k] if k == "gmv_by_hour_fen" else [stats[k]]
        assert all(x >= 0 for x in values), (k, stats[k])
    checkouts = [c for k, c in v.items() if k.startswith("checkout(") and c is not None]
    assert stats["gmv_fen"] == sum(c["amount_fen"] for c in checkouts if c["status"] == "paid")
    assert stats["gmv_fen"] == sum(stats["gmv_by_hour_fen"])
    for c in checkouts:
        assert (c["amount_fen"] == sum(line["amount_fen"] for line in c["lines"])
                == sum(o["amount_fen"] for o in c["orders"]))
    # reserved units, recounted from the unpaid checkouts themselves
    held: dict[int, int] = {}
    for c in checkouts:
        if c["status"] == "reserved":
            for line in c["lines"]:
                held[line["sku"]] = held.get(line["sku"], 0) + line["qty"]
    for s in SKUS:
        assert v[f"sku({s})"]["reserved"] == held.get(s, 0), (s, v[f"sku({s})"], held)


# --- properties ---------------------------------------------------------------------


@settings(SETTINGS, max_examples=150)
@given(stream=stream_r)
def test_engine_matches_model(stream):
    run_against_model(stream)


def run_against_model(stream) -> Driver:
    """The stream through an in-memory festival and the model, checked batch by batch."""
    engine = Festival.open(small_catalog(), config=CONFIG)
    try:
        d = Driver(engine, ReferenceFestival(small_catalog(), CONFIG))
        for batch in stream:
            d.send(batch)
    finally:
        engine.close()
    return d


@settings(SETTINGS, max_examples=20)
@given(before=stream_r, after=st.lists(batch_r, min_size=1, max_size=4), snapshot_at=st.integers(-1, 12))
def test_recovery_is_deterministic(before, after, snapshot_at):
    with tempfile.TemporaryDirectory() as data_dir:
        engine = Festival.open(small_catalog(), data_dir=data_dir, config=CONFIG)
        d = Driver(engine, ReferenceFestival(small_catalog(), CONFIG))
        try:
            for i, batch in enumerate(before):
                d.send(batch)
                if i == snapshot_at:
                    engine.snapshot()
            closed = views(engine, d.model)
        finally:
            engine.close()
        for _ in range(2):
            engine = Festival.open(small_catalog(), data_dir=data_dir, config=CONFIG)
            try:
                reopened = views(engine, d.model)
                for name in closed:
                    assert reopened[name] == closed[name], d.repro(
                        f"recovery, view {name}: before close {closed[name]!r}, after {reopened[name]!r}")
            finally:
                engine.close()
        # the idempotency table and the clock came back too: go on against the model
        engine = Festival.open(small_catalog(), data_dir=data_dir, config=CONFIG)
        try:
            d.engine = engine
            for batch in after:
                d.send(batch)
        finally:
            engine.close()


@settings(SETTINGS, max_examples=40)
@given(stream=stream_r)
def test_applying_batches_side_by_side_matches_one_after_another(stream):
    """Engine.apply_all (each batch's lookups beside the main loop of the one
    before) gives apply()'s results and state, byte for byte, with tables
    sized for 16 checkouts, so that they grow between batches; and it reads
    each batch only once the results of the batches two before it are out."""
    d = run_against_model(stream)
    batches = [(encode_commands(copy.deepcopy(cmds)), now) for now, cmds in d.log]
    small = FestivalConfig(payment_timeout_ms=CONFIG.payment_timeout_ms, commission_bps=CONFIG.commission_bps,
                           expected_checkouts=16)
    one_by_one, side_by_side = Engine(small_catalog(), small), Engine(small_catalog(), small)
    want = [one_by_one.apply(batch, now) for batch, now in batches]
    got: list = []

    def read():
        for i, item in enumerate(batches):
            assert len(got) >= i - 1, f"apply_all read batch {i} before the results of batch {i - 2}"
            yield item

    for code, ref in side_by_side.apply_all(read()):
        got.append((code.copy(), ref.copy()))
    assert len(got) == len(want)
    for i, ((wc, wr), (gc, gr)) in enumerate(zip(want, got)):
        assert wc.tolist() == gc.tolist() and wr.tolist() == gr.tolist(), f"batch {i}"
    assert engine_state(side_by_side) == engine_state(one_by_one)
