"""benchmarks/soak.py, CI-sized: 20 s of wrk over the benchmark's tiles, with tiles
expiring every few seconds, must pass every check (no RSS growth beyond 10 %, no more file
descriptors, no process died, no error answer, nothing logged as an error)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.daemons import find_binary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "benchmarks" / "soak.py"


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_passes_every_check(tmp_path: Path) -> None:
    find_binary("wrk", "wrk")
    run = subprocess.run(
        [sys.executable, str(SOAK), "--duration", "20", "--interval", "0.5", "--warmup", "6",
         "--tail", "6", "--expires", "0.003", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=ROOT, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    for check in ("rss", "fds", "procs", "http", "log"):
        assert f"PASS {check}:" in run.stdout
    [result] = tmp_path.glob("soak-*/result.json")
    report = json.loads(result.read_text())
    assert report["wrk"]["requests"] > 1000
    assert report["wrk"]["non2xx"] == report["wrk"]["socket_errors"] == 0
    # The cold metatiles (20) and the warm set's, then again as the tiles expire (11 s).
    assert report["renders"] > 25
    roles = [p["role"] for p in report["processes"]]
    assert roles.count("worker") == 2 and roles.count("render") == 2
    assert {"master", "memcached"} <= set(roles)
    assert all(p["rss_start_mb"] > 5 and p["fds_end"] > 0 for p in report["processes"])


def test_the_checks_fail_on_growth_a_dead_process_and_errors() -> None:
    soak = soak_module()
    grown = soak.Row("worker", 10, 100.0, 115.0, 120.0, 15.0, 40, 45, 45)
    flat = soak.Row("render", 11, 90.0, 91.0, 91.0, 1.1, 11, 11, 11)
    wrk = {"requests": 1000, "non2xx": 3, "socket_errors": 0}
    log = "2026-01-01 00:00:00 [10] ERROR tileserver.server: render failed for /x\n"
    results = soak.checks([grown, flat], 10.0, ({10, 11, 12}, {10, 11}), wrk, log)
    assert {name: ok for name, (ok, _) in results.items()} == {
        "rss": False, "fds": False, "procs": False, "http": False, "log": False,
    }  # fmt: skip
    assert results["rss"][1] == "worker 10 +15.0 %"
    assert results["fds"][1] == "worker 10 40 -> 45"
    assert results["procs"][1] == "appeared or gone: 12"
    fine = soak.checks([flat], 10.0, ({11}, {11}), {**wrk, "non2xx": 0}, "")
    assert all(ok for ok, _ in fine.values())
