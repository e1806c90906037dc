"""A render pool's dead processes: seen, and a pool they left hanging ended.

`concurrent.futures.ProcessPoolExecutor` notices a dead process itself, most of the time;
these look at its internals (defensively) for the times it does not.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor


def lost_process(pool: ProcessPoolExecutor) -> bool:
    """True when a process of pool has died (killed, out of memory)."""
    processes = getattr(pool, "_processes", None) or {}
    return any(p.exitcode is not None for p in list(processes.values()))


def abandon(pool: ProcessPoolExecutor) -> None:
    """Ends a pool left hanging by a dead process. A process killed while it sends its
    result leaves the executor's manager thread reading the rest of that message forever,
    the result lock held (the other processes wait for it): no job of the pool ever ends,
    and shutting it down waits forever. So its processes are killed and the parent's end
    of the result pipe closed: the manager thread reads the end of the pipe, fails the
    jobs still waiting with BrokenProcessPool and stops. (CPython's executor internals,
    looked up defensively.)"""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()
