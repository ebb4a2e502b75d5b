"""double11: a Singles' Day-scale shopping festival platform."""

from double11.config import FestivalConfig
from double11.service import Festival

__all__ = ["Festival", "FestivalConfig"]
