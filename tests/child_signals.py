"""For tests that stop a command with SIGINT or SIGHUP, as a terminal would.

A test run started in the background from a script (`cmd &` ignores SIGINT)
or under nohup (SIGHUP) hands those signals on ignored, and our commands keep
ignoring what they were started ignoring (lifecycle.stop_signals): the test
would wait for a stop that never comes.  Its child starts with them at their
defaults instead, as from a terminal."""

from __future__ import annotations

import signal


def default_stop_signals() -> None:
    """subprocess.Popen's preexec_fn: SIGINT and SIGHUP at their defaults in the child."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
