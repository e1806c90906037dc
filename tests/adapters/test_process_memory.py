"""A fixed mmap threshold returns large freed buffers to the system: a process that
allocates and frees a metatile-sized buffer a few times keeps it resident without it,
and not with it; and `release_free_memory` gives back the free pages a heap full of
holes keeps (each case in a fresh interpreter: the settings last for the process)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from tileserver.adapters.process_memory import return_large_buffers

def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))

if sys.argv[1] == "fixed":
    assert return_large_buffers()
before = rss_kb()
for _ in range(3):
    buffer = bytearray(20 * 1024 * 1024)  # zero-filled: every page touched, as an image's
    del buffer
print(rss_kb() - before)
"""


@pytest.mark.parametrize(("mode", "resident"), [("default", True), ("fixed", False)])
def test_a_freed_metatile_buffer_stays_resident_only_without_the_fixed_threshold(
    mode: str, resident: bool
) -> None:
    run = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    grown_kb = int(run.stdout)
    if resident:  # glibc raised its threshold after the first free: the heap kept it
        assert grown_kb > 15 * 1024, grown_kb
    else:
        assert grown_kb < 4 * 1024, grown_kb


TRIM_PROBE = """
import sys
from tileserver.adapters.process_memory import release_free_memory, return_large_buffers

def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))

return_large_buffers()
before = rss_kb()
chunks = [bytes(4000) for _ in range(10000)]  # 40 MB of heap chunks, below the threshold
kept = chunks[::50]  # a few stay in use, scattered: the heap's top cannot shrink
del chunks
held = rss_kb() - before
released = release_free_memory() if sys.argv[1] == "trim" else False
print(held, rss_kb() - before, released, len(kept))
"""


@pytest.mark.parametrize("mode", ["keep", "trim"])
def test_the_free_pages_of_a_heap_with_holes_go_back_only_when_released(mode: str) -> None:
    run = subprocess.run([sys.executable, "-c", TRIM_PROBE, mode], capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    held_kb, after_kb, released, kept = run.stdout.split()
    assert int(held_kb) > 30 * 1024 and int(kept) == 200  # the freed chunks stayed resident
    if mode == "keep":
        assert int(after_kb) > 30 * 1024 and released == "False", run.stdout
    else:
        assert int(after_kb) < 8 * 1024 and released == "True", run.stdout
