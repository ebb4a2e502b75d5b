"""Countries and regions: ISO 3166 alpha-2 codes packed into small integers.

The engine stores a country as uint16 ((c1 - 'A') * 26 + (c2 - 'A')), so a
table of 676 flags says which codes exist.  pycountry is the source of truth.
"""

from __future__ import annotations

import numpy as np
import pycountry

COUNTRY_SLOTS = 26 * 26
ALPHA2: tuple[str, ...] = tuple(sorted(c.alpha_2 for c in pycountry.countries))
NAMES: dict[str, str] = {c.alpha_2: getattr(c, "common_name", c.name) for c in pycountry.countries}

VALID = np.zeros(COUNTRY_SLOTS, dtype=bool)


def encode(alpha2: str) -> int:
    """Country code as uint16, or -1 if it is not an ISO 3166 alpha-2 code."""
    if not isinstance(alpha2, str) or len(alpha2) != 2:
        return -1
    a, b = ord(alpha2[0]) - 65, ord(alpha2[1]) - 65
    if not (0 <= a < 26 and 0 <= b < 26):
        return -1
    code = a * 26 + b
    return code if VALID[code] else -1


def decode(code: int) -> str:
    return chr(65 + code // 26) + chr(65 + code % 26)


for _alpha2 in ALPHA2:
    VALID[(ord(_alpha2[0]) - 65) * 26 + ord(_alpha2[1]) - 65] = True
del _alpha2
