"""The life of a checkout and of its orders."""

import enum


class Status(enum.IntEnum):
    reserved = 1  # units held, waiting for payment
    paid = 2
    cancelled = 3
    expired = 4  # not paid within the payment window
    settled = 5  # an order only: the buyer confirmed receipt, the merchant was paid
    refunded = 6  # an order only
