"""Child processes (workers, media processes) end when the process that started them ends."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (even by SIGKILL); elsewhere nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
