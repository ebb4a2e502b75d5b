"""The transaction core's service: `Festival` (festival.py) composes the
engine with its clock (clock.py), its command log and snapshots
(durability.py), the one write path (writes.py), the group commit
(group_commit.py) and the reads between batches (reads.py)."""

from double11.service.festival import Festival
from double11.service.group_commit import SingleRun, refusal

__all__ = ["Festival", "SingleRun", "refusal"]
