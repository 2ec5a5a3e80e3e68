"""This process's id without a system call per use, refreshed in a forked child.

A batch asks for it about a dozen times (each metric value checks it for a fork, as
does the store's per-thread client), and os.getpid() is a system call every time.
"""

import os

_pid = os.getpid()


def _refresh() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh)


def current() -> int:
    """os.getpid(), as of the last fork."""
    return _pid
