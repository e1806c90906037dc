"""A fixed mmap threshold returns large freed buffers to the system: a process that
allocates and frees a metatile-sized buffer a few times keeps it resident without it,
and not with it (each case in a fresh interpreter: the setting lasts for the process)."""

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
