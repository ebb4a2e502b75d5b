"""Promotions and deals: coupons (store and platform), the cross-store
threshold discount, and time-boxed deals on SKUs (docs/promotions.md).

- `spec.py`: the four commands, declared (fields, bounds, answers).
- `tables.py`: the records the engine keeps for them.
- `kernels.py`: the compiled commands (create, grant) and the coupon and
  deal bookkeeping a checkout's life makes (reserve, use, release).
- `pricing.py`: a checkout priced: deal, store coupons, threshold, platform
  coupons, each allocated to the lines pro rata.
- `views.py`: what the routes and the Python API read.
"""
