"""Looks at processes through /proc: a process's descendants, and whether one is alive;
runs a command whose hang shows where it hangs."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (dead, not yet reaped)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """Every living process below pid: its children, theirs, and so on."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] not in ("Z", "X"):
                parents.setdefault(stat[1], []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def render_processes(pid: int) -> list[int]:
    """The Mapnik render processes below pid (started by multiprocessing's spawn)."""
    return [p for p in descendants(pid) if b"spawn_main" in cmdline(p)]


def run_bounded(
    command: Sequence[str], *, timeout: float, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(command, capture_output=True, text=True)`, where a process still
    running after `timeout` (which only bounds a hang) is sent SIGABRT with Python's
    faulthandler on: the AssertionError shows the stack of each of its threads."""
    env = dict(kwargs.pop("env", None) or os.environ)
    env["PYTHONFAULTHANDLER"] = "1"
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise AssertionError(
                f"{' '.join(command)} still running after {timeout:g} s: a hang; where its "
                f"threads were (faulthandler):\n{err[-20000:]}\nits output:\n{out[-3000:]}"
            ) from None
    return subprocess.CompletedProcess(list(command), proc.returncode, out, err)
