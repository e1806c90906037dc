"""wrk's output, read in one place for every benchmark: wrk's own summary (the answers it
counted, its socket errors, the non-2xx answers) and the WRKJSON line that wrk_paths.lua
prints (rate, latency percentiles, error counts), when the run used that script; and what
a server's pauses do to wrk's latency percentiles."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)$", re.MULTILINE
)
_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses: (\d+)$", re.MULTILINE)
_SCRIPT = "WRKJSON "


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: `requests` answered (wrk counts an answer whatever its status),
    `non2xx` of them, `socket_errors` (connect, read, write, timeout: no answer), and
    `script`, wrk_paths.lua's figures (None without the script)."""

    requests: int
    non2xx: int
    socket_errors: int
    script: dict[str, Any] | None

    def figures(self) -> dict[str, Any]:
        """wrk_paths.lua's figures with `non2xx` and `socket_errors`, as the benchmarks
        report them; ValueError for a run without the script."""
        if self.script is None:
            raise ValueError("wrk ran without wrk_paths.lua: no WRKJSON line")
        return {**self.script, "non2xx": self.non2xx, "socket_errors": self.socket_errors}


def parse_wrk(output: str) -> WrkResult:
    """The result in wrk's standard output; ValueError when it holds none (wrk failed)."""
    requests = _REQUESTS.search(output)
    if requests is None:
        raise ValueError(f"no result in wrk's output:\n{output[-2000:]}")
    errors = _SOCKET_ERRORS.search(output)
    non2xx = _NON2XX.search(output)
    script = None
    for line in output.splitlines():
        if line.startswith(_SCRIPT):
            script = json.loads(line.removeprefix(_SCRIPT))
    return WrkResult(
        requests=int(requests[1]),
        non2xx=int(non2xx[1]) if non2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        script=script,
    )


def samples_from_pauses(
    pauses: list[tuple[float, float]], connections: int, interval_ms: float, at_least_ms: float
) -> int:
    """The latency samples of `at_least_ms` or more that the server workers' pauses alone
    put in wrk's histogram; `pauses`: (D ms, the share of wrk's `connections` that the
    paused worker held). A pause of D ms leaves each connection of its worker with one
    answer of about D ms, and wrk corrects each answer longer
    than twice the mean interval between a connection's requests for coordinated
    omission (wrk.c, `stats_correct`): it adds samples at D - interval, D - 2 interval...
    down to the interval. A few pauses of 100-250 ms so make the p99 of a 10-second run."""
    found = 0.0
    for ms, share in pauses:
        if ms >= at_least_ms:
            found += share * connections * (1 + int((ms - at_least_ms) // interval_ms))
    return round(found)
