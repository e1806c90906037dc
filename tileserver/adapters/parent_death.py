"""A child process that dies with its parent, whatever killed the parent (even SIGKILL).

A render process (about 130 MB with Mapnik's maps) whose server or `generate_tiles` was
killed by the OOM killer would otherwise live on forever, orphaned. Linux's parent-death
signal (prctl PR_SET_PDEATHSIG) asks the kernel to signal the child when its parent
exits; elsewhere a watchdog thread polls the parent's pid.

The kernel sends the signal when the *thread* that created the child exits: the render
pools are grown from the event loop's thread (ProcessPoolExecutor.submit), which lives
as long as the process does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

log = logging.getLogger("tileserver.render")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_INTERVAL = 0.5  # seconds between two looks at the parent, where prctl is missing


def _set_parent_death_signal(signum: int) -> bool:
    """True when the kernel will send signum to this process once its parent exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, signum: int) -> None:
    while os.getppid() == parent_pid:
        threading.Event().wait(WATCH_INTERVAL)
    os.kill(os.getpid(), signum)


def die_with_parent(parent_pid: int, signum: int = signal.SIGKILL) -> None:
    """Makes this process get `signum` when the process `parent_pid` (its parent) exits.

    The parent may have died before this call: then its pid is no longer our parent's
    (the orphan was handed to init or a subreaper) and the signal is sent at once.
    """
    if not _set_parent_death_signal(signum):
        threading.Thread(target=_watch, args=(parent_pid, signum), daemon=True).start()
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)
