"""The transaction core's pure domain: a deterministic state machine over columns.

`machine.Engine.apply(batch, now_ms)` is the whole of it; the rest are its data
structures (columns, hash index, scarce counters, ledger, stats) and its edges
(batch wire format, JSON encoding, result views).
"""
