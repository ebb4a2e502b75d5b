"""Keeping Python's cyclic garbage collector off the request path.

A process that serves holds a large heap made once (modules, the app, a
catalog's names), and the collector's full passes walk all of it while every
thread of the process waits: 63 ms once in a 30 s batch load in the engine
process, about a tenth of the front's CPU at Python's defaults.  What exists
once a process is set up is frozen out of the collector's sight, and the
youngest generation is collected every limits.gc_young_allocations new
containers (Python's default: 700).
"""

from __future__ import annotations

import gc

from double11 import limits


def freeze_what_exists() -> None:
    """Call once the process is set up, before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(limits.gc_young_allocations, *gc.get_threshold()[1:])
