"""The catalog: marketplaces, merchants, brands and SKUs."""

from double11.catalog.files import load_catalog, save_catalog
from double11.catalog.generate import generate_catalog, popularity_weights
from double11.catalog.model import MARKETPLACES, Catalog

__all__ = ["MARKETPLACES", "Catalog", "generate_catalog", "load_catalog", "popularity_weights", "save_catalog"]
