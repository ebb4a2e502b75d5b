"""Stock quotas: the commands that move a SKU's stock between the units of a
cluster (issue 25; docs/cluster.md, "Stock quotas").

On a cluster each unit sells from its own share (quota) of every SKU's
stock, and the shares sum to the whole stock, so no unit can sell what
another holds.  A rebalancer moves a share from one unit to another in two
logged commands, each with its own idempotency key: `release` on the giving
unit takes unsold units out of the SKU's stock, then `restock` (a core
command) on the receiving unit adds them.  A release takes only units for
sale (neither reserved by an unpaid checkout nor sold), all or none, and
lowers the SKU's stocked figure with them, so on every unit sold <= stocked
still holds and the units' stocked figures still sum to the whole.

- `spec.py`: the command, declared (its field, bounds, answer, who may
  call it: the operator, as whom the rebalancer runs) and the area.
- `kernels.py`: the command, compiled, called from the engine's batch loop
  (double11/engine/transitions.py) in batch order.
- `answers.py`: its answer on success and the words of its refusals.

It owns no table: a release changes the SKU's units for sale and its stocked
units, which the engine keeps (double11/engine/machine.py).  A retry with the
same key answers the first result (the engine's idempotency), the stock it
left included.
"""
