"""glibc's allocator in the render processes: large buffers go back to the system.

A metatile's image is large (2112 x 2112 RGBA: 17.8 MB, and its copy for cutting). glibc
maps such a buffer apart and unmaps it when freed, but after the first one is freed it
raises its mmap threshold (up to 32 MB), so every later metatile buffer comes from the
heap and stays resident after its render: a render process's RSS steps up by a metatile's
size at any time, which looks like a leak to whoever watches it (the soak benchmark, an
operator's dashboard). A fixed threshold keeps them mapped and returned once freed.
"""

from __future__ import annotations

import ctypes

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def return_large_buffers(threshold: int = 1 << 20) -> bool:
    """Buffers of `threshold` bytes or more are mapped apart and unmapped once freed (a
    fixed threshold: glibc no longer raises it). False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
