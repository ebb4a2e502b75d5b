"""Promotions and deals: coupons (store and platform), the cross-store
threshold discount, and time-boxed deals on SKUs (docs/promotions.md).

- `spec.py`: the commands, declared (fields, bounds, answers): the four
  that create and grant, and the two that move a template's budget and a
  deal's units (`coupon_budget`, `deal_qty`).
- `tables.py`: the records the engine keeps for them.
- `kernels.py`: the compiled commands (create, grant, move) and the coupon
  and deal bookkeeping a checkout's life makes (reserve, use, release).
- `answers.py`: the moves' answers and the words of their refusals.
- `pricing.py`: a checkout priced: deal, store coupons, threshold, platform
  coupons, each allocated to the lines pro rata.
- `views.py`: what the routes and the Python API read.
"""
