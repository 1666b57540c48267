"""The OS name of a thread (what `top -H`, `ps -L` and /proc/PID/task/TID/comm show). Python before 3.14 leaves
every thread named after the process; streamer's threads name themselves so that the CPU each one takes can
be read from outside (`streamer bench --idle-live-s`, a user's `top -H`)."""

from __future__ import annotations

import sys
import threading

#: Linux keeps 15 bytes of a thread's name.
OS_NAME_BYTES = 15
_PR_SET_NAME = 15


def name_this_thread(name: str | None = None) -> None:
    """Give the calling OS thread `name` (default: its Python thread's name). Linux only; a no-op elsewhere
    and when the C library refuses."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        raw = (name or threading.current_thread().name).encode("ascii", "replace")[:OS_NAME_BYTES]
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0)
    except (OSError, AttributeError):
        pass
