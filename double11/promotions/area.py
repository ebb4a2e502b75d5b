"""The promotions area as the registry sees it (double11/areas.py): its
commands, the engine tables it owns and the views it serves."""

from __future__ import annotations

from double11.access.roles import BUYERS, MERCHANTS
from double11.errors import Result
from double11.promotions import views
from double11.promotions.spec import (
    COUPON_BUDGET,
    COUPON_TEMPLATE,
    DEAL,
    DEAL_QTY,
    GRANT,
    THRESHOLD_DISCOUNT,
    BuyerCoupons,
    CouponView,
    DealView,
    TemplateView,
    ThresholdView,
)
from double11.spec import Area, Read

PROMOTIONS = Area(
    "promotions", (COUPON_TEMPLATE, THRESHOLD_DISCOUNT, DEAL, GRANT, COUPON_BUDGET, DEAL_QTY),
    tables=("coupon_templates", "coupons", "thresholds", "threshold_merchants", "deals", "deal_takers",
            "checkout_coupons", "checkout_promos", "line_promos", "order_promos", "buyer_promos",
            "promotion_figures"),
    reads=(
        Read("coupon_template", "/v1/coupon-templates/{template}", "A coupon template and what its coupons did",
             views.template, Result.unknown_template, TemplateView, MERCHANTS),
        Read("coupon", "/v1/coupons/{coupon}", "A coupon", views.coupon, Result.unknown_coupon, CouponView, BUYERS),
        Read("buyer_coupons", "/v1/buyers/{buyer}/coupons", "A buyer's coupons, newest first",
             views.buyer_coupons, Result.not_found, BuyerCoupons, BUYERS),
        Read("deal", "/v1/deals/{deal}", "A deal and its units", views.deal, Result.unknown_deal, DealView),
        Read("threshold_discount", "/v1/threshold-discounts/{threshold}", "A threshold discount",
             views.threshold, Result.not_found, ThresholdView),
    ))
