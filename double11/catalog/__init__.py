"""The catalog: marketplaces, merchants, brands and SKUs."""

from double11.catalog.model import MARKETPLACES, Catalog

__all__ = ["MARKETPLACES", "Catalog"]
