"""`generate_controller` / `tileserver controller`: the static Capabilities written into a
folder and into S3 (a real SeaweedFS), the OpenLayers page of a folder store in headless
Chromium, --dump-config, --cost, and the errors of a command without the settings it needs."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree
from pyproj import Transformer

from tests.support.browser import load_page
from tests.support.daemons import free_port, stop_process, wait_port
from tests.support.s3 import SeaweedS3
from tests.support.schemas import validate_capabilities
from tests.support.server import ROOT, demo_config
from tests.support.waiting import wait_until
from tileserver.config import parse_config
from tileserver.config_loader import load_config

pytestmark = pytest.mark.e2e

NS = {"wmts": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
HTTP_URL = "https://tiles.example.org/monaco"
# Levels the OpenLayers page shows at 800x600, fitted to each demo layer's bbox.
SHOWN_LEVELS = {
    "osm": ("epsg3857", "12-14", 9.554628535647032),
    "osm_lv95": ("epsg2056", "18-20", 10),
}
TO_LONLAT = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)


# --- helpers -------------------------------------------------------------------------------


def write_config(
    workdir: Path, cache: dict[str, Any] | None = None, layers: dict[str, Any] | None = None,
    **top: Any,
) -> Path:  # fmt: skip
    """The demo configuration with a `tiles` cache (a folder in workdir unless given) that
    is the default cache, and both demo layers as default layers."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = demo_config(None, **(layers or {}))
    folder = {"type": "filesystem", "folder": str(workdir / "tiles"), "http_url": HTTP_URL}
    data["caches"] = {"tiles": cache or folder}
    data["generation"] = {"default_cache": "tiles", "default_layers": ["osm", "osm_lv95"]}
    data.update(top)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tileserver ARGS...`."""
    return subprocess.run(
        [sys.executable, "-m", "tileserver", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def controller(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("controller", "--config", str(config), *args)


def resource_templates(document: bytes) -> dict[str, list[str]]:
    """The tile ResourceURL templates of every layer."""
    found: dict[str, list[str]] = {}
    for layer in etree.fromstring(document).iterfind(".//wmts:Contents/wmts:Layer", NS):
        name = layer.findtext("ows:Identifier", namespaces=NS)
        assert name is not None
        found[name] = [r.get("template", "") for r in layer.iterfind("wmts:ResourceURL", NS)]
    return found


def expected_templates(base: str) -> dict[str, list[str]]:
    rest = "{Style}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.png"
    return {name: [f"{base}/1.0.0/{name}/{rest}"] for name in ("osm", "osm_lv95")}


# --- the Capabilities ----------------------------------------------------------------------


def test_capabilities_written_into_a_folder_point_at_its_http_url(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = controller(config, "--generate-wmts-capabilities")
    assert result.returncode == 0, result.stderr
    assert f"({HTTP_URL}/1.0.0/WMTSCapabilities.xml) into cache tiles" in result.stderr

    document = (tmp_path / "tiles" / "1.0.0" / "WMTSCapabilities.xml").read_bytes()
    validate_capabilities(document)
    assert resource_templates(document) == expected_templates(HTTP_URL)
    assert b"KVP" not in document  # a folder behind a web server has no KVP endpoint
    assert b"/wmts/1.0.0" not in document
    # Only the Capabilities were written: the tiles come from generate_tiles.
    assert [p.name for p in (tmp_path / "tiles").rglob("*") if p.is_file()] == [
        "WMTSCapabilities.xml"
    ]


def test_capabilities_and_page_written_into_s3(seaweed: SeaweedS3, tmp_path: Path) -> None:
    folder = f"run-{uuid.uuid4().hex[:8]}/tiles"
    cache = {"type": "s3", "bucket": seaweed.bucket, "folder": folder,
             "endpoint_url": seaweed.endpoint_url, "http_urls": [HTTP_URL + "/", HTTP_URL],
             "wmtscapabilities_file": "/wmts/caps.xml",
             "cache_control": "public, max-age=600"}  # fmt: skip
    config = write_config(tmp_path, cache)
    env = {
        **SeaweedS3.env(),
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    # The console script, as TileCloud-chain users call it.
    script = Path(sys.executable).parent / "generate_controller"
    result = subprocess.run(
        [str(script), "-c", str(config), "--capabilities", "--openlayers"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    client = seaweed.client()
    try:
        caps = client.get_object(Bucket=seaweed.bucket, Key=f"{folder}/wmts/caps.xml")
        document = caps["Body"].read()
        assert caps["ContentType"] == "application/xml"
        assert caps["CacheControl"] == "public, max-age=600"
        page = client.get_object(Bucket=seaweed.bucket, Key=f"{folder}/index.html")
        assert page["ContentType"] == "text/html; charset=utf-8"
        # Read to the end: an unread body keeps its connection out of the client's pool,
        # open until a later garbage collection (a ResourceWarning in another test).
        assert b"openlayers/vendor/ol.js" in page["Body"].read()
        script_text = client.get_object(Bucket=seaweed.bucket, Key=f"{folder}/openlayers/demo.js")
        assert b'var CAPABILITIES_URL = "wmts/caps.xml";' in script_text["Body"].read()
        listed = client.list_objects_v2(Bucket=seaweed.bucket, Prefix=f"{folder}/")
        keys = {item["Key"][len(folder) + 1 :] for item in listed["Contents"]}
    finally:
        client.close()
    validate_capabilities(document)
    templates = resource_templates(document)
    # One ResourceURL per public URL (clients spread their requests over them).
    assert templates == {name: [t, t] for name, (t,) in expected_templates(HTTP_URL).items()}
    assert f'xlink:href="{HTTP_URL}/wmts/caps.xml"'.encode() in document
    assert keys >= {"wmts/caps.xml", "index.html", "openlayers/vendor/ol.js"}


# --- the OpenLayers page in a browser ------------------------------------------------------


@pytest.fixture
def static_http(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A plain static HTTP server (python -m http.server) over tmp_path/tiles on a free
    loopback port, as a web server or a bucket would serve the store; its access log."""
    folder = tmp_path / "tiles"
    folder.mkdir()
    port = free_port()
    log = tmp_path / "http.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(folder)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        assert wait_port(port, 10, proc), log.read_text()
        yield port, log
    finally:
        stop_process(proc)


def requests(log: Path) -> list[tuple[str, int]]:
    return [
        (path, int(status))
        for path, status in re.findall(r'"GET (\S+) HTTP/1\.[01]" (\d{3})', log.read_text())
    ]


def test_openlayers_page_shows_every_layer_from_the_store_in_chromium(
    tmp_path: Path, static_http: tuple[int, Path]
) -> None:
    port, log = static_http
    base = f"http://127.0.0.1:{port}"
    layers = {name: {"min_resolution_seed": seed} for name, (_, _, seed) in SHOWN_LEVELS.items()}
    config = write_config(tmp_path, {"type": "filesystem", "folder": str(tmp_path / "tiles"),
                                     "http_url": base}, layers)  # fmt: skip
    for name, (_, zooms, _) in SHOWN_LEVELS.items():
        generated = run("generate", "-c", str(config), "--layer", name, "--zoom", zooms)
        assert generated.returncode == 0, generated.stderr
    written = controller(config, "--generate-wmts-capabilities", "--openlayers-test")
    assert written.returncode == 0, written.stderr
    assert f"OpenLayers page at index.html ({base}/index.html)" in written.stderr

    for name, (matrix_set, _, _) in SHOWN_LEVELS.items():
        before = len(requests(log))
        page = load_page(
            f"{base}/index.html#layer={name}&matrixset={matrix_set}",
            tmp_path / name,
            expect=f"/1.0.0/{name}/",
        )
        # The static server logs a request before answering it: every request the page
        # saw finish is in the log.
        asked = before + sum(1 for url in page.urls if url.startswith(base))
        wait_until(lambda asked=asked: len(requests(log)) >= asked, "the access log")
        served = requests(log)[before:]
        assert page.console == [], "\n".join(page.console)
        assert [r for r in served if r[1] != 200] == [], served
        paths = [path for path, _ in served]
        assert "/1.0.0/WMTSCapabilities.xml" in paths
        assert "/openlayers/vendor/ol.js" in paths
        tiles = [p for p in paths if p.startswith(f"/1.0.0/{name}/default/{matrix_set}/")]
        assert len(tiles) >= 2, paths
        # The map (left of the panel) is drawn from the tiles: a blank map has about a
        # hundred colours (controls, scale line, attribution), the rendered map thousands.
        colours = page.image.crop((0, 0, 450, 600)).getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 500, f"{name}: {len(colours or [])}"


# --- --dump-config ---------------------------------------------------------------------------


def test_dump_config_prints_the_resolved_configuration(tmp_path: Path) -> None:
    template = ROOT / "config" / "demo.yaml.mako"
    env = {"TILESERVER_TILES": str(tmp_path / "demo-tiles"), "MEMCACHED_SERVERS": "mc:11311"}
    result = run("controller", "-c", str(template), "--dump-config", env=env)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert "layer_default" not in data
    osm = data["layers"]["osm"]
    assert osm["mapfile"] == str(ROOT / "config" / "styles" / "osm.xml")  # resolved
    assert (osm["meta_size"], osm["expires"], osm["cache"]) == (8, 4.0, "local")
    assert data["caches"]["local"]["folder"] == env["TILESERVER_TILES"]  # Mako rendered
    assert data["memcached"]["servers"] == ["mc:11311"]
    # It reads back into the same configuration, the layers included.
    expected = load_config(template, {**os.environ, **env})
    again = parse_config(data, base_dir=tmp_path)
    assert again.layers == expected.layers
    assert again == replace(expected, source=None)


# --- --cost ------------------------------------------------------------------------------------


def slippy_tiles(z: int, bbox: tuple[float, float, float, float]) -> set[tuple[int, int]]:
    """(row, col) of the tiles that intersect bbox (EPSG:3857), from lon/lat."""
    west, south = TO_LONLAT.transform(bbox[0], bbox[1])
    east, north = TO_LONLAT.transform(bbox[2], bbox[3])
    n = 2**z

    def tile(lon: float, lat: float) -> tuple[int, int]:
        x = int((lon + 180) / 360 * n)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
        return y, x

    top, left = tile(west, north)
    bottom, right = tile(east, south)
    return {(r, c) for r in range(top, bottom + 1) for c in range(left, right + 1)}


COST_LINE = re.compile(
    r"^  zoom (\d+): (\d+) metatiles, (\d+) tiles, (\d+):(\d\d):(\d\d), S3 PUT \$([\d.,]+)$",
    re.MULTILINE,
)


def test_cost_counts_tiles_and_metatiles_from_grid_math(tmp_path: Path) -> None:
    harbour = (826300, 5425000, 826900, 5425600)  # the port of Monaco: one tile at z15
    osm_bbox = (824000, 5421800, 829500, 5428000)
    cost = {
        "metatile_generation_time": 2000, "tile_generation_time": 500,
        "tileonly_generation_time": 3000, "tile_size": 16, "requests_per_month": 1_000_000,
        "s3": {"put": 0.01, "get": 0.001, "storage": 0.05, "download": 0.1},
    }  # fmt: skip
    layers = {"harbour": {"title": "Port", "grid": "epsg3857", "bbox": list(harbour),
                          "meta": False, "min_resolution_seed": 2.3}}  # fmt: skip
    config = write_config(tmp_path, layers=layers, cost=cost)
    result = controller(config, "--cost", "--layer", "osm", "--layer", "harbour", "-z", "13-16")
    assert result.returncode == 0, result.stderr

    blocks = re.split(r"^layer ", result.stdout, flags=re.MULTILINE)[1:]
    assert [b.split(" ", 1)[0] for b in blocks] == ["osm", "harbour"]
    assert blocks[0].startswith("osm (grid epsg3857, 8x8 metatiles), zooms 13-16:")
    assert blocks[1].startswith("harbour (grid epsg3857, no metatiles), zooms 13-16:")
    all_tiles = all_metatiles = 0
    all_seconds = 0.0
    for block, bbox, meta in ((blocks[0], osm_bbox, True), (blocks[1], harbour, False)):
        lines = COST_LINE.findall(block)
        assert [int(line[0]) for line in lines] == [13, 14, 15, 16]
        for z_text, metatiles, tiles, h, m, s, put in lines:
            z = int(z_text)
            expected = slippy_tiles(z, bbox)
            expected_meta = {(r // 8, c // 8) for r, c in expected} if meta else set()
            seconds = len(expected_meta) * 2 + len(expected) * 0.5 if meta else len(expected) * 3
            assert (int(metatiles), int(tiles)) == (len(expected_meta), len(expected)), z
            assert int(h) * 3600 + int(m) * 60 + int(s) == round(seconds)
            assert float(put) == pytest.approx(len(expected) * 0.01 / 1000, abs=5e-5)
            all_tiles += len(expected)
            all_metatiles += len(expected_meta)
            all_seconds += seconds
    total = re.search(
        r"^total: (\d+) metatiles, (\d+) tiles, generation (\d+):(\d\d):(\d\d) on one process, "
        r"S3 PUT \$([\d.]+); a month: storage \$([\d.]+), GET \$([\d.]+), "
        r"download \$([\d.]+), \$([\d.]+) in all$",
        result.stdout,
        re.MULTILINE,
    )
    assert total is not None, result.stdout
    metatiles, tiles, h, m, s, put, storage, get, download, monthly = total.groups()
    assert (int(metatiles), int(tiles)) == (all_metatiles, all_tiles)
    assert int(h) * 3600 + int(m) * 60 + int(s) == round(all_seconds)
    assert float(put) == pytest.approx(all_tiles * 0.01 / 1000, abs=5e-5)
    assert float(storage) == pytest.approx(all_tiles * 16 / 1024**2 * 0.05, abs=5e-5)
    assert float(get) == pytest.approx(2 * 1_000_000 * 0.001 / 1000)  # per layer
    assert float(download) == pytest.approx(2 * 1_000_000 * 16 / 1024**2 * 0.1, abs=5e-5)
    assert float(monthly) == pytest.approx(float(storage) + float(get) + float(download),
                                           abs=2e-4)  # fmt: skip


# --- settings that are missing ---------------------------------------------------------------


def test_each_action_names_the_missing_setting(tmp_path: Path) -> None:
    bare = {"type": "filesystem", "folder": str(tmp_path / "tiles")}  # no http_url
    config = write_config(tmp_path, bare, generation={}, caches={})

    result = controller(config, "--cost")
    assert result.returncode == 1
    # Without default_layers every layer is meant (TileCloud-chain's rule): the next
    # missing setting is named.
    assert "no level to estimate for layer 'osm': pass --zoom" in result.stderr

    result = controller(config, "--capabilities", "--layer", "osm")
    assert result.returncode == 1
    assert "no cache to write to: pass --cache NAME, or set generation.default_cache or " \
           "layers.osm.cache (caches: none)" in result.stderr  # fmt: skip

    result = controller(config, "--cost", "--layer", "osm")
    assert result.returncode == 1
    assert "pass --zoom, or set layers.osm.min_resolution_seed" in result.stderr

    config = write_config(tmp_path, bare)
    result = controller(config, "--openlayers-test", "--capabilities")
    assert result.returncode == 1
    assert "caches.tiles.http_url is not set" in result.stderr
    assert not (tmp_path / "tiles").exists()  # checked before anything is written

    for args, message in (
        ((), "nothing to do: pass one or more of --generate-wmts-capabilities"),
        (("--cost", "--layer", "nope"), "--layer: unknown layer 'nope' (defined: osm, osm_lv95)"),
        (("--capabilities", "--cache", "nope"), "--cache: unknown cache 'nope' (defined: tiles)"),
        (("--cost", "--layer", "osm", "--zoom", "30"), "zoom 30 does not exist"),
    ):
        result = controller(config, *args)
        assert (result.returncode, message in result.stderr) == (2, True), result.stderr


def test_openlayers_page_alone_needs_only_a_cache(tmp_path: Path) -> None:
    bare = {"type": "filesystem", "folder": str(tmp_path / "tiles")}
    config = write_config(tmp_path, bare, generation={})
    result = controller(config, "--openlayers-test", "--cache", "tiles")
    assert result.returncode == 0, result.stderr
    assert "OpenLayers page at index.html into cache tiles" in result.stderr
    page = (tmp_path / "tiles" / "index.html").read_text()
    assert 'href="1.0.0/WMTSCapabilities.xml"' in page
