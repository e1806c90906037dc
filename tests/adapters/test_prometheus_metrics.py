"""PrometheusMetrics over several processes: each process writes its values to files in
PROMETHEUS_MULTIPROC_DIR and `exposition`, in any of them, reads them all. The variable
must be set before prometheus_client is imported, so each process here is a fresh
interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

_PROCESS = """
import sys
from tileserver.adapters.prometheus_metrics import PrometheusMetrics

metrics = PrometheusMetrics()
for _ in range(int(sys.argv[1])):
    metrics.tile("osm", "render")
metrics.rendered("osm", 0.25)
metrics.fold()
sys.stdout.write(metrics.exposition().decode())
"""


def _run(directory: Path, tiles: int) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _PROCESS, str(tiles)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sample(exposition: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} in:\n{exposition}")


def test_the_exposition_sums_the_values_of_every_process(tmp_path: Path) -> None:
    _run(tmp_path, tiles=3)
    both = _run(tmp_path, tiles=4)

    assert _sample(both, "tileserver_tiles_total", layer="osm", source="render") == 7
    assert _sample(both, "tileserver_renders_total", layer="osm") == 2
    assert _sample(both, "tileserver_render_duration_seconds_sum", layer="osm") == 0.5


def test_a_value_file_created_but_not_sized_yet_is_read_as_no_values(tmp_path: Path) -> None:
    # A process first writing a metric creates its file, then sizes it: a scrape in
    # between finds it empty, and so do all scrapes after a process killed right then.
    _run(tmp_path, tiles=2)
    (tmp_path / "counter_4194303.db").touch()
    (tmp_path / "histogram_4194303.db").touch()

    exposition = _run(tmp_path, tiles=1)

    assert _sample(exposition, "tileserver_tiles_total", layer="osm", source="render") == 3
    assert _sample(exposition, "tileserver_render_duration_seconds_count", layer="osm") == 2
