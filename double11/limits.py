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
# into the next one, up to this many commands (a single binary batch may be
# larger: it is never split).
group_commit_commands_max = 16_384
# Single requests arrive one at a time.  While they keep arriving, the
# committer waits for more in steps of group_commit_gather_step_us (at most
# group_commit_gather_us in all, or until group_commit_gather_commands wait):
# the engine's cost per batch is mostly fixed, so a batch of 200 costs little
# more than one of 20.  A lone request waits one step.
group_commit_gather_us = 2_000
group_commit_gather_step_us = 1_000
group_commit_gather_commands = 256
# batches applied and not yet answered (on their way to disk): with one
# syncing, the next is gathered and applied; a second keeps the engine busy
# while the first one's answers are encoded
group_commit_batches_in_flight_max = 2
# a binary batch this big is decoded on a worker thread, beside the engine
decode_on_worker_bytes_min = 256 * 1024
# a batch this big is applied on the engine thread while the event loop takes
# in the next requests; a smaller one is applied in place (a thread hand-off
# costs more than applying a few hundred commands)
apply_on_worker_commands_min = 2_048
# a batch smaller than this has its log record written and fsynced where it
# was applied, when no record is on its way on the log thread
log_inline_commands_max = apply_on_worker_commands_min
pending_commands_max = 1_000_000  # back-pressure: past this, 429 overloaded
drain_s_max = 60  # closing waits this long for the commands already queued

# Time
payment_timeout_ms_default = 15 * 60 * 1000
# a promotion's window is festival-clock ms since the Unix epoch, up to 2100-01-01
festival_time_ms_max = 4_102_444_800_000

# Promotions (docs/promotions.md)
promotion_fen_max = 10**12  # a discount, a minimum spend, a deal price: as a price
checkout_coupons_max = 8
coupon_budget_count_max = 1_000_000_000
coupon_budget_fen_max = 10**18
coupon_per_buyer_max = 1_000
coupon_source_chars_max = 32
threshold_merchants_max = 64
deal_qty_max = restock_qty_max
deal_per_buyer_max = line_qty_max

# Catalog
# a price cap that keeps every total in int64: price * line_qty_max * checkout_lines_max
sku_price_fen_max = 10**12
catalog_skus_max = 50_000_000
catalog_merchants_max = 10_000_000
# a merchant's, brand's or product's name, in characters
catalog_name_chars_max = 200
# GET /v1/skus: SKUs per page when the request names no limit, and at most
sku_list_limit_default = 20
sku_list_limit_max = 500

# Stats
stats_top_n = 10

# The link between the HTTP front process and the engine process
link_call_bytes_max = http_body_bytes_max  # a call's payload is a request body
# calls the front waits on, a batch counted as its commands; past this it
# answers 429 overloaded whatever the engine's pace (the ceiling of the
# admission bound below, and the bound of batches and reads)
link_calls_in_flight_max = 200_000
# Admission of single requests (link/remote.py, docs/performance.md
# "Admission control"): the front admits a single command while the work in
# flight is under the engine's measured answer rate times this delay, so an
# admitted command waits about this long at most behind the others (half of
# the 100 ms p99 the phones are promised: the other half is the front's own
# turn and the fsync); past it, 429 overloaded with Retry-After
admission_queue_delay_ms_target = 50
# the bound never goes under this many commands: a cold or idle engine has no
# rate to speak of, and a burst of a few group commits (group_commit_gather_commands
# each) must get in to measure one
admission_calls_in_flight_min = 1_024
# the answer rate is measured over windows of this long (the bound follows a
# change of pace within one)
admission_window_ms = 100
# every 429 says to retry after this many seconds (RFC 9110 Retry-After: an
# integer; the smallest that is not "now")
overloaded_retry_after_s = 1
# After a storage fault (the command log could not be written or synced,
# service/durability.py), a festival served by `double11 serve` tries to open
# its data folder again this often; meanwhile every command and read is
# answered 503 storage_unavailable with this Retry-After
storage_retry_s = 1
storage_unavailable_retry_after_s = 2
engine_close_s_max = 600  # closing snapshots the whole state: seconds for a big festival
engine_process_nice = -10  # the engine holds every request's latency: scheduled first
# how long a thread of the engine process may hold the GIL while another
# waits for it (Python's default: 5 ms).  A batch passes through four threads
# there (the event loop, the decoder, the engine thread between its compiled
# passes, the log thread), and each hand-over waited for the holder's turn
# to end: a shorter turn gives the batch load more orders/s at a lower p99
# (docs/performance.md, "Measurements behind the constants")
engine_gil_switch_interval_s = 0.0005
data_dir_lock_wait_s = 120  # a restarted engine waits this long for the last one to let go
# a serving process's cyclic garbage collector (gc_tuning.py): its youngest
# generation is collected after this many new container objects (Python's
# default: 700).  Every request makes a dozen in the front (coroutines, a
# task, futures), so at 700 the collector ran every few dozen requests and
# took a good share of each one's CPU (docs/performance.md, "Measurements
# behind the constants")
gc_young_allocations = 10_000

# Access (double11/access)
token_ttl_s_max = 366 * 86400  # a token lives at most a year
# verified tokens remembered by the HTTP front (each about 400 bytes): a
# festival's phones reuse theirs; past this, the oldest quarter is forgotten
token_cache_entries_max = 200_000

# Flow control in the HTTP front (http/flow_control.py, docs/api.md "Flow control")
# a buyer token's commands: refilled at this rate, up to a burst (serve
# --buyer-commands-per-s, --buyer-burst); past it, 429 rate_limited
buyer_commands_per_s_default = 20
buyer_burst_commands_default = 40
buyer_commands_per_s_max = 1_000_000
# buyers with a bucket (each about 200 bytes); past this, the buckets that
# have filled up again are dropped (a full bucket is a new one), then the oldest
buyer_buckets_max = 500_000
# single checkouts the engine refused out_of_stock, kept by body (each about
# as big as its body) to answer their retries again at the front
refused_checkouts_kept_max = 100_000
# SKUs the front knows sold out, to refuse new checkouts of at the front
# (each a few dozen bytes); past this, the oldest quarter is forgotten
sold_out_skus_kept_max = 100_000

# A unit's command log on a NATS JetStream cluster (double11/cluster)
nats_start_s_max = 60  # a local cluster's nodes listening and a JetStream meta leader elected
nats_stop_s_max = 10  # a node's clean exit after SIGTERM, before it is killed
nats_payload_bytes_max = 8 * 1024 * 1024  # a log record (one batch) as one message; the server's max_payload
stream_replicas = 3  # copies of each unit's stream, each on its own node (a Raft group: a majority acks)
# one publish ack waited for before the record is sent again (with the same
# message id, which the stream's dedup drops if the first one landed)
stream_ack_wait_s = 2.0
# a record's publish retried across a stream leader's election (Raft election
# timeouts are 4-9 s) before the log says a storage fault
stream_retry_s_max = 30.0
stream_dedup_window_s = 120  # retried publishes within this window are dropped as duplicates
stream_connect_s_max = 20  # the client's first connection to the cluster and the stream's creation
stream_replay_wait_s = 5.0  # one fetch of records while a stream is read back
stream_replay_fetch_records_max = 256  # records asked for in one fetch while reading back
# a standby's wait for new records before it looks again, and whether to stop: a promotion
# waits for it, once its primary, dead, sends no more
standby_fetch_wait_s = 0.25
# A unit's snapshots in the cluster's object store (double11/cluster/snapshots.py).
# Snapshots kept per unit; the stream is trimmed below the oldest.  Two, so a
# machine that fetched the latest can still replay the stream after it while
# the next one is published
unit_snapshots_kept = 2
# one chunk (message) of a snapshot in the object store: the client sends a
# chunk once the one before is acknowledged, so bigger chunks mean fewer round
# trips (docs/cluster.md: the rates measured); under nats_payload_bytes_max
unit_snapshot_chunk_bytes = 1024 * 1024
unit_snapshot_chunk_ack_wait_s = 10.0  # one chunk's acknowledgement (a majority of the bucket's replicas)
# a snapshot's put or fetch slower than this is taken as stalled: one try may
# last stream_connect_s_max plus the snapshot's size at this rate
unit_snapshot_bytes_per_s_min = 4 * 1024 * 1024
# a put or fetch that failed (a node went away, a leader election) is tried
# again for this long before the error is said
unit_snapshot_retry_s_max = 60.0
# A unit's primary lease (double11/cluster/lease.py): a key in a JetStream KV
# bucket whose entries the cluster drops this long after their last write
unit_lease_ttl_s = 3.0
# between the primary's renewals: a third of the TTL, so one renewal may go
# unanswered before the primary stops (at TTL - guard)
unit_lease_renew_s = 1.0
# the primary stops taking commands this long before its lease could expire
# (counted from the moment it sent its last renewal that was answered), so no
# batch of its is appended once a standby may hold the lease
unit_lease_guard_s = 1.0
unit_lease_poll_s = 0.2  # a standby's tries to take a lease that is held
unit_failover_s_max = 10.0  # a unit's standby serving after its primary died (issue 25's bound)
# A unit's raw cumulative figures published for the cluster's global view
# (double11/cluster/figures.py): the big screen's staleness on a cluster
figures_publish_s = 0.5
# A unit's node on NATS (double11/cluster: unit_service.py, unit_requests.py)
# and a cluster on one machine (local_cluster.py, `double11 cluster`)
# an asker's wait for a unit's answer: a batch may wait out a stream leader's
# election (stream_retry_s_max) before it is answered or refused
unit_request_s_max = 60.0
# askers of `d11.cluster.status` gather replies this long (less once every node answered)
cluster_status_wait_s = 1.0
# a primary's start waits this long for its unit's lease: a new cluster's
# lease bucket may still be electing its leader, and the lease of a primary
# that just died lapses within unit_lease_ttl_s
unit_primary_lease_wait_s = 2 * unit_lease_ttl_s
# `cluster up`: every unit's nodes serving (imports, kernels compiled first
# after an engine edit, a stream replayed)
cluster_start_s_max = 300.0
# a unit node's clean close after SIGTERM (requests in flight answered, last figures
# published, its snapshot put in the object store at about 60 MB/s, lease given up)
# before it is killed
unit_stop_s_max = 120.0
# `cluster down`: the supervisor stopping the standbys, the primaries, then NATS
cluster_stop_s_max = 2 * unit_stop_s_max + nats_stop_s_max + 20
# `cluster up` on one machine: each unit is two engine processes
local_cluster_nodes_max = 9
local_cluster_units_max = 16
# Units by buyer (double11/cluster/slots.py): buyers hash into this many slots,
# each owned by one unit; a map of slots moves a range of buyers by moving slots
cluster_slots = 4096
# a unit's local ids (rows + 1) below 2**this; the unit's index rides above them
# in the ids the cluster hands out (checkouts, orders), so a pay finds its unit
unit_id_bits = 48
cluster_units_max = 2 ** (63 - unit_id_bits)
# The quota rebalancer (double11/cluster/rebalancer.py), off the hot path
rebalance_period_s = 0.1  # between two reads of every unit's stock
# a unit is running low on a SKU below this share of what its demand entitles
# it to (its part of the units' recent sales), and gets quota moved to it
rebalance_low_share = 0.5
rebalance_transfers_per_round_max = 4096  # quota transfers sent in one round (each a release and a restock)
# a unit's last stock reports kept (quotas.ReportsSent), so that each asker (the rebalancer, a
# watcher), asking every rebalance_period_s, is sent only what changed since its last one
stock_reports_kept = 4
# the cluster's client (double11/cluster/client.py): one try's wait for a unit's
# answer, and how long it sends a part again while the unit fails over
unit_answer_s_max = 5.0
# an answer later than this: the client asks whether the unit still has a primary (a SIGKILL
# leaves a request unanswered; client.answer_while_alive)
unit_alive_check_s = 1.0
cluster_retry_s_max = 60.0
# a cluster's HTTP front (double11/cluster/front_link.py): a request waits this
# long for its unit (a failover: unit_failover_s_max) before its 503; a unit's
# primary answers /healthz within front_health_s_max or the front is not healthy
front_unit_wait_s_max = 15.0
front_health_s_max = 2.0
# between a unit primary's snapshots to the object store (and on close); each
# pauses the unit while it is written (about 1 s per 400 MB of state)
unit_snapshot_every_s = 600.0
# a local cluster's supervisor looks this often for unit nodes that died, and
# starts each again as its unit's standby (cluster/local_cluster.py)
unit_revive_poll_s = 0.5
rebalance_retry_s = 1.0  # after a round that failed (a unit failing over, a bucket electing its leader)
