"""`tileserver check-config` and `tileserver serve` on broken configurations."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.server import STYLE, TileServer, demo_config

Change = Callable[[dict[str, Any]], None]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tileserver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, data: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_check_config_accepts_the_demo_config() -> None:
    result = run("check-config", "config/demo.yaml.mako")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "osm, osm_lv95" in result.stdout


def _set(path: str, value: Any) -> Change:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def _delete(path: str) -> Change:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]

    return change


MISTAKES: list[tuple[str, Change, str]] = [
    (
        "unknown grid",
        _set("layers.osm.grid", "swissgrid"),
        "layers.osm.grid: unknown grid 'swissgrid' (defined: epsg3857, epsg2056)",
    ),
    (
        "typo in a key",
        _set("layers.osm.meta_sise", 4),
        "layers.osm: unknown key; did you mean 'meta_size'?",
    ),
    (
        "wrong type",
        _set("layers.osm.meta_size", "eight"),
        "layers.osm.meta_size: expected an integer, got str 'eight'",
    ),
    (
        "missing required key",
        _delete("grids.epsg2056.resolutions"),
        "grids.epsg2056.resolutions: missing required key",
    ),
    (
        "unsorted resolutions",
        _set("grids.epsg2056.resolutions", [10, 20, 5]),
        "grids.epsg2056.resolutions: resolutions must be sorted from the largest to the smallest",
    ),
    (
        "bbox with three numbers",
        _set("layers.osm.bbox", [1, 2, 3]),
        "layers.osm.bbox: expected 4 numbers [minx, miny, maxx, maxy], got 3",
    ),
    (
        "unknown CRS",
        _set("grids.epsg2056.srs", "EPSG:999999"),
        "grids.epsg2056.srs: unknown CRS 'EPSG:999999'",
    ),
    (
        "unreadable Mapnik file",
        _set("layers.osm.mapfile", "/nonexistent/style.xml"),
        "layers.osm.mapfile: cannot read Mapnik file '/nonexistent/style.xml': no such file",
    ),
    (
        "undefined cache",
        _set("layers.osm.cache", "s3-prod"),
        "layers.osm.cache: unknown cache 's3-prod' (defined: none)",
    ),
    (
        "default layer that does not exist",
        _set("generation.default_layers", ["osm", "roads"]),
        "generation.default_layers[1]: unknown layer 'roads' (defined: osm, osm_lv95)",
    ),
    (
        "extension and mime type disagree",
        _set("layers.osm.mime_type", "image/jpeg"),
        "layers.osm.mime_type: 'image/jpeg' does not match extension 'png'",
    ),
    (
        "mistake inherited from layer_default",
        _set("layer_default.expires", -1),
        "layers.osm.expires: must be greater than 0, got -1 (set in layer_default)",
    ),
    (
        "bad memcached address",
        _set("memcached.servers", ["localhost"]),
        "memcached.servers[0]: expected 'host:port', got 'localhost'",
    ),
    (
        "unknown answer for a missing pre-generated tile",
        _set("layers.osm.missing_tile", "404"),
        "layers.osm.missing_tile: expected one of render, no_content, transparent, got '404'",
    ),
    (
        "unknown layer type",
        _set("layers.osm.type", "tms"),
        "layers.osm.type: unknown layer type 'tms' (supported: mapnik, wms)",
    ),
]


@pytest.mark.parametrize(("what", "change", "message"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_check_config_names_each_mistake(
    tmp_path: Path, what: str, change: Change, message: str
) -> None:
    data = demo_config("127.0.0.1:1")
    change(data)
    result = run("check-config", str(write(tmp_path, data)))
    assert result.returncode == 1
    assert result.stdout == ""
    if "; did you mean" in message:
        head, tail = message.split("; ")
        assert head.replace(": unknown key", ".meta_sise: unknown key") in result.stderr
        assert tail in result.stderr
    else:
        assert message in result.stderr, result.stderr


def test_several_mistakes_are_reported_together(tmp_path: Path) -> None:
    data = demo_config("127.0.0.1:1")
    data["layers"]["osm"]["grid"] = "nope"
    data["layers"]["osm_lv95"]["meta_buffer"] = -3
    data["server"]["port"] = "eighty"
    result = run("check-config", str(write(tmp_path, data)))
    assert result.returncode == 1
    # Sections are checked before the layers that reference them.
    assert "server.port: expected an integer, got str 'eighty'" in result.stderr
    data["server"]["port"] = 8080
    result = run("check-config", str(write(tmp_path, data)))
    assert "layers.osm.grid: unknown grid 'nope'" in result.stderr
    assert "layers.osm_lv95.meta_buffer: must be at least 0, got -3" in result.stderr


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("grids:\n  a: [1, 2\nlayers: {}\n")
    result = run("check-config", str(path))
    assert result.returncode == 1
    assert "invalid YAML" in result.stderr
    assert "line 3" in result.stderr


def test_mapfile_that_mapnik_cannot_load(tmp_path: Path) -> None:
    bad_style = tmp_path / "bad.xml"
    bad_style.write_text("<Map><Layer name='x'><Datasource><Parameter name='type'>nope")
    data = demo_config("127.0.0.1:1", osm={"mapfile": str(bad_style)})
    path = write(tmp_path, data)
    result = run("check-config", str(path))
    assert result.returncode == 1
    assert "layers.osm.mapfile: Mapnik cannot load it" in result.stderr
    # The server refuses to start, with the same message.
    served = run("serve", "--config", str(path), "--port", "0")
    assert served.returncode == 1
    assert "layers.osm.mapfile: Mapnik cannot load it" in served.stderr


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    data = demo_config(None, osm={"grid": "swissgrid"})
    result = run("serve", "--config", str(write(tmp_path, data)), "--port", "0")
    assert result.returncode == 1
    assert "layers.osm.grid: unknown grid 'swissgrid'" in result.stderr


def test_mako_config_rendered_with_the_environment(tmp_path: Path) -> None:
    data = demo_config(None)
    text = yaml.safe_dump(data, sort_keys=False).replace(str(STYLE), "${env['STYLE_PATH']}")
    template = tmp_path / "config.yaml.mako"
    template.write_text(text)
    env_missing = run("check-config", str(template))
    assert env_missing.returncode == 1
    assert "the environment variable STYLE_PATH is not set" in env_missing.stderr
    assert "STYLE_PATH" in env_missing.stderr
    result = subprocess.run(
        [sys.executable, "-m", "tileserver", "check-config", str(template)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**__import__("os").environ, "STYLE_PATH": str(STYLE)},
    )
    assert result.returncode == 0, result.stderr


def test_every_command_prints_the_configurations_warnings_once_when_it_starts(
    tmp_path: Path,
) -> None:
    """TileCloud-chain keys without effect here: said by check-config, and by serve (once,
    whatever --workers), generate_tiles and generate_controller when they start."""
    data = demo_config(None)
    data["apache"] = {"location": "/tiles"}
    data["caches"] = {"local": {"type": "filesystem", "folder": str(tmp_path / "tiles")}}
    data["generation"] = {"default_cache": "local"}
    path = write(tmp_path, data)
    said = "apache: TileCloud-chain's `apache` has no effect in tileserver; ignored"
    checked = run("check-config", str(path))
    assert checked.returncode == 0 and checked.stderr.count(said) == 1, checked.stderr
    bin_dir = Path(sys.executable).parent
    for command in (
        [str(bin_dir / "generate_tiles"), "-c", str(path), "-l", "osm", "-z", "3", "--dry-run"],
        [str(bin_dir / "generate_controller"), "-c", str(path), "--dump-config"],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stderr.count(f"warning: {said}") == 1, (command, result.stderr)
    quiet = subprocess.run(
        [str(bin_dir / "generate_tiles"), "-c", str(path), "-l", "osm", "-z", "3", "--dry-run",
         "-q"], capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert quiet.returncode == 0 and said not in quiet.stderr
    server = TileServer(data, tmp_path, workers=2)
    server.start()
    try:
        assert server.log().count(f"configuration: {said}") == 1, server.log()
    finally:
        server.stop()
