"""Every limit of the platform, in one place, with its unit in its name.

Bad input past any of these gets a 4xx with a clear code; nothing is ever
truncated silently.  TigerBeetle's rule: put a limit on everything.
"""

# Requests
http_body_bytes_max = 32 * 1024 * 1024
checkout_lines_max = 16
batch_commands_max = 65_536
batch_lines_max = 4 * batch_commands_max
line_qty_max = 999
restock_qty_max = 1_000_000_000
idempotency_key_chars_max = 128
id_max = 2**63 - 1

# Group commit: whatever is waiting when the previous batch is applied goes
# into the next one (no timer: the disk's latency sets the batch size), up to
# this many commands (a single binary batch may be larger: it is never split).
group_commit_commands_max = 16_384
pending_commands_max = 1_000_000  # back-pressure: past this, 503 overloaded

# Time
payment_timeout_ms_default = 15 * 60 * 1000

# Catalog
# a price cap that keeps every total in int64: price * line_qty_max * checkout_lines_max
sku_price_fen_max = 10**12
catalog_skus_max = 50_000_000
catalog_merchants_max = 10_000_000

# Stats
stats_top_n = 10
