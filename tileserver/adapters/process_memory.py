"""glibc's allocator in the render processes: large buffers go back to the system.

A metatile's image is large (2112 x 2112 RGBA: 17.8 MB, and its copy for cutting). glibc
maps such a buffer apart and unmaps it when freed, but after the first one is freed it
raises its mmap threshold (up to 32 MB), so every later metatile buffer comes from the
heap and stays resident after its render: a render process's RSS steps up by a metatile's
size at any time, which looks like a leak to whoever watches it (the soak benchmark, an
operator's dashboard). A fixed threshold keeps them mapped and returned once freed.

The smaller allocations of a render (Mapnik's geometries and scanlines, Pillow's rows)
come from the heap, whose free pages glibc keeps when they are not at its top: the RSS
then creeps up by a few MB now and then under a steady load of renders. `malloc_trim`
before each job gives the pages the last job freed back (a fraction of a millisecond).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def return_large_buffers(threshold: int = 1 << 20) -> bool:
    """Buffers of `threshold` bytes or more are mapped apart and unmapped once freed (a
    fixed threshold: glibc no longer raises it). False where the C library is not glibc."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, threshold))


_TRIM: list[Callable[[int], int] | None] = []  # glibc's malloc_trim, looked up once


def release_free_memory() -> bool:
    """Gives the heap's free pages back to the system (glibc's malloc_trim); False where
    the C library is not glibc, or nothing was released."""
    if not _TRIM:
        _TRIM.append(getattr(_libc(), "malloc_trim", None))
    trim = _TRIM[0]
    return trim is not None and bool(trim(0))
