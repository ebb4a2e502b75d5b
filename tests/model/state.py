"""An engine's whole state, comparable between engines."""

from __future__ import annotations

import pickle

import numpy as np

from double11.engine.columns import Column, Field, Table
from double11.engine.hashindex import HashIndex
from double11.engine.machine import Engine


def engine_state(engine: Engine) -> dict:
    """Everything an engine holds, but its tables' spare room (a table may
    grow sooner in one engine than in another: apply_all makes room for two
    batches at a time)."""
    out = {}
    for name, value in vars(engine).items():
        if isinstance(value, Field):  # a view of a table's field: the table is compared
            continue
        if isinstance(value, (Table, Column, HashIndex)) or name in ("ledger", "promos"):
            value = {k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in _without_room(value).items()}
        out[name] = pickle.dumps(value)
    return out


def _without_room(value) -> dict:
    if isinstance(value, HashIndex):
        entries = value.table[value.table[:, 0] != 0]
        return {"entries": entries[np.argsort(entries[:, 0])], "size": value.size}
    if isinstance(value, (Table, Column)):
        return {"rows": value._buf[: value.size], "size": value.size}
    return {name: pickle.dumps(_without_room(v) if isinstance(v, (Table, Column, HashIndex)) else v)
            for name, v in vars(value).items()}
