"""`generate_controller --generate-mapcache-config`: the file it writes is read by MapCache
itself (`mapcache_seed` of Debian's mapcache-tools, MapCache 1.14), which finds the
tileset, its grid, its memcache cache and its WMS source; a broken variant is refused.

No WMS answers here: the WMS URL is a closed port, so `mapcache_seed` shows, in the error
of its one GetMap, the request MapCache builds from the file.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from lxml import etree

from tests.support.configs import MERC
from tests.support.daemons import Memcached, find_binary, free_port
from tests.support.server import demo_config

pytestmark = pytest.mark.e2e

GENERATE_CONTROLLER = Path(sys.executable).parent / "generate_controller"
MONACO = [824000, 5421800, 829500, 5428000]
RES0 = 156543.03392804097  # level 0 of the demo's epsg3857 grid
CQL = "name = 'A&B' AND kind <> \"x\""


def mapcache_seed() -> str:
    """MapCache's seeder; a clear failure (never a skip) without it."""
    return find_binary("mapcache_seed", "mapcache-tools")


def write_config(workdir: Path, memcached: str | None, wms_port: int) -> Path:
    """The demo configuration (two Mapnik layers) plus `roads`, a WMS layer on epsg3857."""
    roads = {
        "type": "wms",
        "title": "Roads & <paths>",
        "grid": "epsg3857",
        "bbox": MONACO,
        "url": f"http://127.0.0.1:{wms_port}/cgi-bin/mapserv?map=/srv/roads.map&lang=fr",
        "layers": "roads,paths",
        "params": {"TRANSPARENT": "TRUE", "CQL_FILTER": CQL},
        "retries": 0,
        "expires": 2,
        "dimensions": [{"name": "YEAR", "values": [2024, 2025], "default": "2025"}],
    }
    data = demo_config(memcached, roads=roads)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def generate(config: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GENERATE_CONTROLLER), "-c", str(config), *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )  # fmt: skip


def seed(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`mapcache_seed -c config -t roads -g epsg3857 -z 0,0 ARGS`: level 0, one tile."""
    return subprocess.run(
        [mapcache_seed(), "-c", str(config), "-t", "roads", "-g", "epsg3857", "-z", "0,0", *args],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_mapcache_seed_reads_the_generated_configuration(tmp_path: Path, closed_port: int) -> None:
    mapcache_seed()
    memcached = Memcached()  # its port is chosen, not yet listened on
    wms_port = closed_port
    config = write_config(tmp_path, memcached.address, wms_port)

    written = generate(config, "--generate-mapcache-config", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert "warning: osm, osm_lv95 left out of the MapCache configuration: MapCache has no " \
           "source for Mapnik layers" in written.stderr  # fmt: skip
    assert "wrote the MapCache configuration to mapcache.xml" in written.stderr
    mapcache_xml = tmp_path / "mapcache.xml"  # in the current folder, as TileCloud-chain's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "mapcache.xml"]

    # 1. Accepted: MapCache parses the file and resolves every reference (a source, grid,
    # cache or format that is not there is a parse error), finds the tileset and its grid,
    # and checks the dimension's default, then exits 0 having nothing to delete.
    # memcached is not running yet: mapcache_seed 1.14 dies of SIGSEGV on exit (in
    # apr_pool_terminate) once it has talked to a memcached, even after a clean run.
    accepted = seed(mapcache_xml, "-m", "delete")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert accepted.stdout.rstrip().endswith("0 tiles needed to be seeded, exiting")
    assert accepted.stderr == ""

    # 2. Used: seeding level 0 looks the tile up in our memcached, then asks the WMS for
    # its metatile, with the parameters of the file.
    memcached.start()
    try:
        before = memcached.stats()
        seeded = seed(mapcache_xml)
        after = memcached.stats()
    finally:
        memcached.stop()
    output = seeded.stdout + seeded.stderr
    # It failed to fetch (exit 1), then crashed on exit as said above; a parse error
    # would have printed the usage ("options:") and exited 1 before any of this.
    assert seeded.returncode in (1, -signal.SIGSEGV), output
    assert "options:" not in seeded.stdout, output
    assert "failed to seed tile z0,x0,y0:" in seeded.stderr, output
    assert after["cmd_get"] - before["cmd_get"] >= 1  # the tile, looked up in memcached
    assert after["get_misses"] - before["get_misses"] >= 1
    url = seeded.stderr.split("curl failed to request url ", 1)[1].split(" : ", 1)[0]
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        f"http://127.0.0.1:{wms_port}/cgi-bin/mapserv"
    )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    bbox = [float(v) for v in query.pop("BBOX").split(",")]
    assert query == {
        "map": "/srv/roads.map",  # the URL's own query, kept
        "lang": "fr",
        "VERSION": "1.1.1",
        "REQUEST": "GetMap",
        "SERVICE": "WMS",
        "STYLES": "",
        "SRS": "EPSG:3857",
        "LAYERS": "roads,paths",
        "FORMAT": "image/png",
        "TRANSPARENT": "TRUE",
        "CQL_FILTER": CQL,  # escaped in the XML, read back whole by MapCache
        "YEAR": "2025",
        "DIM_YEAR": "2025",
        # Level 0 has one tile: the 8x8 metatile is that tile with its 32-pixel buffer
        # on each side (MapCache does not clip the buffer at the grid's edge).
        "WIDTH": "320",
        "HEIGHT": "320",
    }
    buffer = 32 * RES0
    expected = [-MERC - buffer, -MERC - buffer, MERC + buffer, MERC + buffer]
    assert bbox == pytest.approx(expected, abs=1e-5)  # MapCache prints 6 decimals

    # 3. Refused: the same file with the tileset on a grid that is not declared.
    tree = etree.parse(str(mapcache_xml))
    grid = tree.find("tileset[@name='roads']/grid")
    assert grid is not None and grid.text == "epsg3857"
    grid.text = "no_such_grid"
    broken = tmp_path / "broken.xml"
    tree.write(str(broken), xml_declaration=True, encoding="UTF-8")
    refused = seed(broken, "-m", "delete")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert 'tileset "roads" references grid "no_such_grid", but it is not configured' in (
        refused.stdout
    )


def test_missing_settings_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    target = tmp_path / "conf" / "mapcache.xml"
    (tmp_path / "conf").mkdir()
    without_memcached = write_config(tmp_path, None, free_port())
    result = generate(
        without_memcached, "--mapcache", "--mapcache-config-file", str(target), cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr == (
        "generate_controller: --generate-mapcache-config: memcached: missing section: the "
        "MapCache configuration's memcache cache takes its servers from memcached.servers\n"
    )

    memcached_port = free_port()  # written in the file, never connected to here
    config = write_config(tmp_path, f"127.0.0.1:{memcached_port}", free_port())
    result = generate(config, "--mapcache", "--mapcache-config-file", str(target),
                      "--layer", "osm", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "no layer of type wms (layers: osm): MapCache has no source for Mapnik layers" in (
        result.stderr
    )
    assert list((tmp_path / "conf").iterdir()) == []

    # With --layer roads, only roads, written at --mapcache-config-file.
    result = generate(config, "--mapcache", "--mapcache-config-file", str(target),
                      "--layer", "roads", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    root = etree.parse(str(target)).getroot()
    assert [t.get("name") for t in root.iterfind("tileset")] == ["roads"]
    assert [s.findtext("port") for s in root.iterfind("cache/server")] == [str(memcached_port)]
    assert list((tmp_path / "conf").iterdir()) == [target]
