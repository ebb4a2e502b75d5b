"""Whether a process is gone: the cluster tests assert no NATS node outlives them."""

from __future__ import annotations

from pathlib import Path


def gone(pid: int) -> bool:
    """Whether the process is gone (exited and reaped, or a zombie waiting to be)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return status in ("Z", "X")
