"""The test infrastructure for `type: wms` layers: a real MapServer WMS (our mapfile,
tests/data/mapserver/monaco.map) over a real PostGIS holding the Monaco demo data, its
access log and fault modes, and config/styles/osm-postgis.xml, the Mapnik style over the
same tables. These tests check the infrastructure itself, so that the tile server's
tests can trust it."""

from __future__ import annotations

import http.client
import io
import time
import urllib.error
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image
from psycopg.conninfo import conninfo_to_dict
from pyproj import Transformer

from tests.support.daemons import find_binary
from tests.support.mapserver import MapServerWMS
from tests.support.postgis import PostGIS, load_monaco
from tests.support.server import Response

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STYLES = ROOT / "config" / "styles"
PNG = b"\x89PNG\r\n\x1a\n"
SE_XML = "application/vnd.ogc.se_xml"

TO_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
# Monaco, 7.41-7.44 E, 43.72-43.75 N
MONACO_LONLAT = (7.41, 43.72, 7.44, 43.75)
MONACO_3857 = (*TO_3857.transform(7.41, 43.72), *TO_3857.transform(7.44, 43.75))
# 256x256 px of 0.78 m around the Grimaldi Forum (building id 3); pixel (128, 128)
# falls inside it, and on no road.
BUILDING_BBOX = (827210.0, 5425807.0, 827410.0, 5426007.0)
# The same around a point of Avenue Princesse Grace (road id 3108), at pixel (128, 128).
ROAD_BBOX = (827122.0, 5425811.0, 827322.0, 5426011.0)
SEA_BBOX = (829000.0, 5420000.0, 829200.0, 5420200.0)


@pytest.fixture(scope="module")
def postgis() -> Iterator[PostGIS]:
    """The Monaco tables in database `monaco`; pg_stat_statements counts the queries."""
    database = PostGIS(shared_preload_libraries=["pg_stat_statements"])
    database.start()
    try:
        load_monaco(database)
        yield database
    finally:
        database.stop()


@pytest.fixture(scope="module")
def wms(postgis: PostGIS) -> Iterator[MapServerWMS]:
    server = MapServerWMS(postgis)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def normal_mode(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test ends with the WMS answering normally again."""
    yield
    if "wms" in request.fixturenames:
        request.getfixturevalue("wms").set_mode("normal")


# --- helpers -------------------------------------------------------------------------------


def image(response: Response) -> Image.Image:
    assert response.status == 200, response.body[:500]
    assert response.headers["content-type"] == "image/png", response.body[:500]
    assert response.body.startswith(PNG)
    picture = Image.open(io.BytesIO(response.body))
    picture.load()
    return picture


def colours(picture: Image.Image) -> set[tuple[int, ...]]:
    """The distinct colours of an image (RGB)."""
    counted = picture.convert("RGB").getcolors(maxcolors=1 << 24)
    assert counted is not None
    return {tuple(colour) for _, colour in counted if isinstance(colour, tuple)}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


def feature_info(
    wms: MapServerWMS,
    bbox: tuple[float, float, float, float],
    info_format: str,
    query_layers: str = "osm",
    version: str = "1.1.1",
) -> Response:
    params = wms.getmap_params(bbox, 256, 256, version=version)
    params.update(REQUEST="GetFeatureInfo", QUERY_LAYERS=query_layers, INFO_FORMAT=info_format)
    params.update({"X": "128", "Y": "128"} if version == "1.1.1" else {"I": "128", "J": "128"})
    return wms.get(params)


def with_connection(style: str, dsn: str) -> str:
    """The style with the libpq parameters of dsn in every postgis Datasource, as the
    tile server's renderer does with a layer's `connection`."""
    root = ET.fromstring(style)
    wanted = ("host", "port", "dbname", "user", "password")
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if k in wanted and v}
    for datasource in root.iter("Datasource"):
        types = [p.text for p in datasource.findall("Parameter") if p.get("name") == "type"]
        if types == ["postgis"]:
            for name, value in params.items():
                ET.SubElement(datasource, "Parameter", name=name).text = value
    return ET.tostring(root, encoding="unicode")


# --- the WMS -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.1.1", "1.3.0"])
def test_capabilities_list_the_group_osm_its_crs_and_queryable_layers(
    wms: MapServerWMS, version: str
) -> None:
    response = wms.get({"SERVICE": "WMS", "VERSION": version, "REQUEST": "GetCapabilities"})
    assert response.status == 200
    root = ET.fromstring(response.body)
    ns = "{http://www.opengis.net/wms}" if version == "1.3.0" else ""
    layers = {
        layer.findtext(f"{ns}Name"): layer.get("queryable")
        for layer in root.iter(f"{ns}Layer")
        if layer.findtext(f"{ns}Name")
    }
    assert "osm" in layers
    assert {name for name, queryable in layers.items() if queryable == "1"} >= {
        "buildings",
        "roads",
    }
    assert layers["landuse"] == "0"
    crs = {e.text for e in root.iter(f"{ns}{'CRS' if version == '1.3.0' else 'SRS'}")}
    assert {"EPSG:3857", "EPSG:4326", "EPSG:2056"} <= crs
    formats = {e.text for e in root.iter(f"{ns}Format")}
    assert {"image/png", "text/plain", "application/vnd.ogc.gml", "text/html"} <= formats


def test_getmap_of_monaco_in_3857_is_a_styled_png(wms: MapServerWMS) -> None:
    picture = image(wms.get(wms.getmap_params(MONACO_3857, 512, 512)))
    assert picture.size == (512, 512)
    found = colours(picture)
    assert len(found) > 200  # streets, labels, antialiasing: not a blank image
    # the style's colours: sea, land background, buildings, parks
    assert {rgb("#a9cfe3"), rgb("#f0ede6"), rgb("#dad2c8"), rgb("#cfe8b6")} <= found


def test_getmap_130_in_4326_takes_lat_lon(wms: MapServerWMS) -> None:
    lon0, lat0, lon1, lat1 = MONACO_LONLAT
    lat_lon = image(
        wms.get(wms.getmap_params((lat0, lon0, lat1, lon1), 300, 400, "EPSG:4326", "1.3.0"))
    )
    assert lat_lon.size == (300, 400)
    assert len(colours(lat_lon)) > 100
    # The same map as WMS 1.1.1 with lon,lat.
    lon_lat = image(wms.get(wms.getmap_params(MONACO_LONLAT, 300, 400, "EPSG:4326", "1.1.1")))
    assert lat_lon.tobytes() == lon_lat.tobytes()
    # lon,lat given to 1.3.0 is somewhere in the Indian Ocean: nothing but background.
    swapped = image(wms.get(wms.getmap_params(MONACO_LONLAT, 300, 400, "EPSG:4326", "1.3.0")))
    assert colours(swapped) == {rgb("#f0ede6")}


def test_getmap_in_2056(wms: MapServerWMS) -> None:
    to_2056 = Transformer.from_crs("EPSG:3857", "EPSG:2056", always_xy=True)
    bbox = (*to_2056.transform(*MONACO_3857[:2]), *to_2056.transform(*MONACO_3857[2:]))
    picture = image(wms.get(wms.getmap_params(bbox, 256, 256, "EPSG:2056")))
    assert rgb("#a9cfe3") in colours(picture)
    assert len(colours(picture)) > 100


def test_getfeatureinfo_text_plain_over_a_building(wms: MapServerWMS) -> None:
    response = feature_info(wms, BUILDING_BBOX, "text/plain")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.body.decode()
    assert "Layer 'buildings'" in text
    assert "name = 'Grimaldi Forum'" in text
    assert "Layer 'roads'" not in text


def test_getfeatureinfo_gml_and_html_over_a_building(wms: MapServerWMS) -> None:
    gml = feature_info(wms, BUILDING_BBOX, "application/vnd.ogc.gml", "buildings")
    assert gml.headers["content-type"].startswith("application/vnd.ogc.gml")
    features = list(ET.fromstring(gml.body).iter("buildings_feature"))
    assert [(f.findtext("id"), f.findtext("name")) for f in features] == [("3", "Grimaldi Forum")]
    html = feature_info(wms, BUILDING_BBOX, "text/html", "buildings")
    assert html.headers["content-type"].startswith("text/html")
    assert "data-id='3'>building: yes; name: Grimaldi Forum</p>" in html.body.decode()


def test_getfeatureinfo_130_on_a_road_and_over_the_sea(wms: MapServerWMS) -> None:
    road = feature_info(wms, ROAD_BBOX, "text/plain", "roads", version="1.3.0")
    assert "name = 'Avenue Princesse Grace'" in road.body.decode()
    sea = feature_info(wms, SEA_BBOX, "text/plain", version="1.3.0")
    assert sea.status == 200
    assert "Layer '" not in sea.body.decode()
    assert "returned no results" in sea.body.decode()


def test_getmap_count_counts_client_getmaps_exactly(wms: MapServerWMS) -> None:
    wms.clear_log()
    tiles = [(826000.0 + 300 * i, 5424000.0, 826300.0 + 300 * i, 5424300.0) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:  # concurrent requests are served concurrently
        answers = list(pool.map(lambda b: wms.get(wms.getmap_params(b, 256, 256)), tiles))
    assert all(image(a).size == (256, 256) for a in answers)
    wms.get({"SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetCapabilities"})
    feature_info(wms, BUILDING_BBOX, "text/plain")
    direct = wms.direct_getmap(tiles[0], 256, 256)
    wms.get({"service": "WMS", "version": "1.1.1", "request": "getmap", "layers": "nope"})
    assert wms.getmap_count() == 5  # the 4 tiles and the lower-case one, not the direct one
    kinds = [(r.kind, r.request) for r in wms.requests()]
    assert kinds.count(("direct", "GetMap")) == 1
    assert ("wms", "GetCapabilities") in kinds
    assert ("wms", "GetFeatureInfo") in kinds
    # the direct GetMap is the same image as the client's
    assert direct == answers[0].body
    first = next(r for r in wms.requests() if r.kind == "wms")
    assert (first.method, first.status, first.mode) == ("GET", 200, "normal")
    assert first.size in {len(a.body) for a in answers}
    assert first.ms > 0


def test_mapserv_queries_are_counted_by_pg_stat_statements(
    wms: MapServerWMS, postgis: PostGIS
) -> None:
    postgis.reset_statements()
    image(wms.get(wms.getmap_params((826000, 5424000, 826500, 5424500), 256, 256)))
    queries = [query for query, _ in postgis.statements("monaco")]
    assert any("from buildings" in query for query in queries), queries


# --- fault modes -------------------------------------------------------------------------


def test_fault_service_exception(wms: MapServerWMS) -> None:
    wms.set_mode("service_exception")
    response = wms.get(wms.getmap_params(MONACO_3857, 256, 256))
    assert response.status == 200
    assert response.headers["content-type"].startswith(SE_XML)
    root = ET.fromstring(response.body)
    assert root.tag == "ServiceExceptionReport"
    assert root.find("ServiceException") is not None


@pytest.mark.parametrize(("mode", "status"), [("html_error", 500), ("html_error:503", 503)])
def test_fault_html_error(wms: MapServerWMS, mode: str, status: int) -> None:
    wms.set_mode(mode)
    response = wms.get(wms.getmap_params(MONACO_3857, 256, 256))
    assert response.status == status
    assert response.headers["content-type"].startswith("text/html")
    assert b"<html>" in response.body


def test_fault_truncated_lies_about_the_length(wms: MapServerWMS) -> None:
    wms.set_mode("truncated")
    params = wms.getmap_params(MONACO_3857, 256, 256)
    with pytest.raises(http.client.IncompleteRead) as raised:
        wms.get(params)
    assert raised.value.expected
    assert raised.value.partial.startswith(PNG)


def test_fault_half_png_is_well_formed_http_with_a_broken_image(wms: MapServerWMS) -> None:
    wms.set_mode("half_png")
    response = wms.get(wms.getmap_params(MONACO_3857, 256, 256))
    assert response.status == 200
    assert int(response.headers["content-length"]) == len(response.body)
    assert response.body.startswith(PNG)
    with pytest.raises(OSError):
        Image.open(io.BytesIO(response.body)).load()


def test_fault_slow(wms: MapServerWMS) -> None:
    wms.set_mode("slow:0.6")
    params = wms.getmap_params(MONACO_3857, 256, 256)
    started = time.monotonic()
    image(wms.get(params))
    assert time.monotonic() - started >= 0.6
    with pytest.raises(TimeoutError):
        wms.get(params, timeout=0.2)


def test_fault_for_a_number_of_requests_then_normal(wms: MapServerWMS) -> None:
    wms.set_mode("html_error", count=2)
    params = wms.getmap_params(MONACO_3857, 256, 256)
    # direct requests are never faulted nor counted against `count`
    assert wms.direct_getmap(MONACO_3857, 256, 256).startswith(PNG)
    assert [wms.get(params).status for _ in range(3)] == [500, 500, 200]
    assert wms.mode() == "mode=normal"


def test_unknown_fault_mode_is_refused(wms: MapServerWMS) -> None:
    with pytest.raises(ValueError, match="invalid mode"):
        wms.set_mode("explode")


def test_a_stopped_wms_refuses_then_starts_again_on_its_port(wms: MapServerWMS) -> None:
    params = wms.getmap_params(MONACO_3857, 256, 256)
    wms.clear_log()
    port = wms.port
    wms.stop(keep_files=True)
    try:
        with pytest.raises(urllib.error.URLError) as raised:
            wms.get(params, timeout=5)
        assert isinstance(raised.value.reason, ConnectionRefusedError)
    finally:
        wms.start()
    assert wms.port == port
    image(wms.get(params))
    assert wms.getmap_count() == 1


def test_a_missing_binary_fails_naming_the_package() -> None:
    with pytest.raises(RuntimeError, match=r"scripts/test\.sh.*apt-get install cgi-mapserver"):
        find_binary("mapserv-not-installed", "cgi-mapserver")


# --- the Mapnik style over PostGIS ---------------------------------------------------------


def test_osm_postgis_style_renders_as_the_geojson_style(postgis: PostGIS) -> None:
    import mapnik

    from_postgis, from_files = mapnik.Map(256, 256), mapnik.Map(256, 256)
    style = with_connection((STYLES / "osm-postgis.xml").read_text(), postgis.dsn("monaco"))
    mapnik.load_map_from_string(from_postgis, style, False, str(STYLES))
    mapnik.load_map(from_files, str(STYLES / "osm.xml"))
    half = 128 * 156543.03392804097 / 2**16  # a 256 px tile at zoom 16 over La Condamine
    box = mapnik.Box2d(826300 - half, 5424600 - half, 826300 + half, 5424600 + half)
    pictures = []
    for m in (from_postgis, from_files):
        m.zoom_to_box(box)
        rendered = mapnik.Image(256, 256)
        mapnik.render(m, rendered)
        pictures.append(Image.open(io.BytesIO(rendered.to_string("png"))))
    assert len(colours(pictures[0])) > 100
    assert pictures[0].tobytes() == pictures[1].tobytes()


# --- PostGIS down and back (last: it stops the module's database) --------------------------


def test_postgis_down_gives_a_service_exception_then_recovers(
    wms: MapServerWMS, postgis: PostGIS
) -> None:
    params = wms.getmap_params(MONACO_3857, 256, 256)
    port = postgis.port
    postgis.stop(keep_data=True)
    try:
        down = wms.get(params)
        assert down.status == 200
        assert down.headers["content-type"].startswith(SE_XML)
        assert b"msPostGISLayerOpen" in down.body
    finally:
        postgis.start()
    assert postgis.port == port
    assert len(colours(image(wms.get(params)))) > 100
