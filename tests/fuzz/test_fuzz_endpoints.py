"""Property-based fuzzing of the HTTP face: random and hostile GET requests on every endpoint.

The real application (`create_app`) is served by aiohttp's TestServer on a loop in a
background thread, with fast real backends (the embedded MemoryCache, a FilesystemStore in
a temporary folder) and a deterministic renderer; requests are written byte for byte to a
socket, so hostile encodings (`%2e%2e`, `%2f`, `%00`, backslashes, overlong UTF-8, raw
bytes) reach the server's parser exactly as generated.

For every request (issue "Keep serving under faults, bad input and load"):

- never a 5xx, except WMTS's OperationNotSupported (501, 07-057r7 table 28) and one
  upstream aiohttp bug on paths without a route (see UPSTREAM_EXPECT_BUG);
- a success is a tile from the renderer or the store (exact bytes, 256x256, the right
  content type), the Capabilities, a FeatureInfo body, the demo page, a health answer or a
  file that really is under tileserver/static; no body ever holds a byte of the files
  placed beside and above the store, of the config file, or of the package's sources;
- a 4xx (or the 501) on a WMTS route is a schema-valid OWS ExceptionReport whose
  exceptionCode/status pair is WMTS's, whose locator names a parameter (never echoes the
  client) and which shows at most `fuzz_files.ECHO` characters of any client value;
- a request the HTTP parser refuses (over-long request line or header, bytes HTTP forbids)
  gets a 400 and the server keeps answering;
- where the request's effect is known (see `kvp_outcome`, `rest_outcome`: a reference
  model of WMTS 1.0.0 KVP/REST written from the standard), the answer is exactly that:
  a valid request gets its tile, a request with any invalid value gets a report.

Examples are derandomized (hypothesis seeds from the test function), so CI runs the same
10,000+ cases every time and a failure reproduces; TILESERVER_FUZZ_EXPLORE=1 explores with
random seeds and ten times as many examples instead.

The parts: `fuzz_files` (the site's configuration, tiles, secrets and backends),
`fuzz_site` (the running site and the checks of every answer), `raw_http` (the client),
`wmts_model` (the reference model), `fuzz_strategies` (the requests); the tests here.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_site import UPSTREAM_EXPECT_BUG, Site, refused, serving, still_serving
from tests.fuzz.fuzz_strategies import (
    header_requests,
    kvp_requests,
    other_paths,
    raw_requests,
    rest_requests,
    static_files,
)
from tests.fuzz.raw_http import http_request
from tests.fuzz.wmts_model import Expect, Sent
from tests.support.schemas import validate_exception_report
from tileserver.types import TileCoord

# --- budget ---------------------------------------------------------------------------------

_EXPLORE = os.environ.get("TILESERVER_FUZZ_EXPLORE") == "1"
EXAMPLES = {"kvp": 4000, "rest": 3000, "paths": 1500, "raw": 1000, "headers": 600}
assert sum(EXAMPLES.values()) >= 10_000  # the issue asks for 10,000 generated cases in CI


def _settings(name: str) -> settings:
    return settings(
        max_examples=EXAMPLES[name] * (10 if _EXPLORE else 1),
        deadline=None,
        derandomize=not _EXPLORE,
        database=None if not _EXPLORE else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


# --- the fuzz tests ----------------------------------------------------------------------------


def _run(site: Site, name: str, strategy: st.SearchStrategy[Sent]) -> Counter[str]:
    site.outcomes.clear()

    @_settings(name)
    @given(sent=strategy)
    def fuzz(sent: Sent) -> None:
        site.check(sent)

    fuzz()
    still_serving(site)
    print(f"{name}: {dict(site.outcomes.most_common())}")  # shown with -rP, or on failure
    return site.outcomes


def _share(outcomes: Counter[str], prefix: str) -> float:
    return sum(n for k, n in outcomes.items() if k.startswith(prefix)) / sum(outcomes.values())


def test_kvp_requests(site: Site) -> None:
    outcomes = _run(site, "kvp", kvp_requests(site.config))
    # The generator goes deep: many requests succeed, every kind of mistake is met.
    assert _share(outcomes, "tile") > 0.1 and _share(outcomes, "info") > 0.02
    assert _share(outcomes, "capabilities") > 0.02
    codes = {k for k in outcomes if k.startswith("error")}
    # PointIJOutOfRange takes a GetFeatureInfo with one of I/J pushed just out of range:
    # about 1 in 3,000 cases here, so it is required of the REST test, not of this one.
    assert len(codes) >= 5, outcomes
    # Values long enough to pass 8190 bytes come up in some example streams, not in all
    # (the stream follows the config's names): the bound is held by its own test below,
    # test_a_request_line_over_8190_bytes_is_refused, and checked here whenever met.


def test_rest_requests(site: Site) -> None:
    outcomes = _run(site, "rest", rest_requests(site.config))
    assert _share(outcomes, "tile") > 0.1 and _share(outcomes, "info") > 0.05
    codes = ("NotFound", "InvalidParameterValue", "TileOutOfRange", "PointIJOutOfRange",
             "OperationNotSupported")  # fmt: skip
    assert {f"error {code}" for code in codes} <= outcomes.keys()


def test_static_and_other_paths(site: Site) -> None:
    outcomes = _run(site, "paths", st.one_of(static_files(), other_paths()))
    assert outcomes["static 200"] > 100 and outcomes["index 200"] > 0
    assert outcomes["/static 404"] > 100 and outcomes["none 404"] > 100


def test_raw_bytes_in_the_request(site: Site) -> None:
    outcomes = _run(site, "raw", raw_requests(site.config))
    assert outcomes["refused by the parser"] > 100
    assert sum(outcomes.values()) - outcomes["refused by the parser"] > 100


def test_hostile_headers(site: Site) -> None:
    probe = site.connection.exchange(http_request("/wmts/1.0.0/plain/default/merc/0/0/0.png"))
    etags = [probe.headers["etag"].encode(), b"W/" + probe.headers["etag"].encode()]
    outcomes = _run(site, "headers", header_requests(site.config, etags))
    assert outcomes["tile 304"] > 10 and outcomes["tile 200"] > 10
    assert outcomes["capabilities"] > 0


# --- examples worth naming ----------------------------------------------------------------------


def _kvp_tile(**changes: str) -> str:
    params = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": "plain",
              "STYLE": "default", "FORMAT": "image/png", "TILEMATRIXSET": "merc",
              "TILEMATRIX": "17", "TILEROW": "47790", "TILECOL": "68240", **changes}  # fmt: skip
    return "/wmts?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


@pytest.mark.parametrize(
    "row",
    [
        "\u0664\u0667\u0667\u0669\u0660",  # 47790 in Arabic-Indic digits
        "\uff14\uff17\uff17\uff19\uff10",  # in fullwidth digits
        "4779\u0660",
        "47790\n",
        "47790\r",
        "\n47790",
        " 47790",
        "47790 ",
        "47790\x00",
        "+47790\n",
    ],
)
def test_integers_are_ascii_digits_only(site: Site, row: str) -> None:
    """int() takes Unicode digits and surrounding whitespace; WMTS integers do not."""
    for target in (
        _kvp_tile(TILEROW=row),
        f"/wmts/1.0.0/plain/default/merc/17/{quote(row, safe='')}/68240.png",
    ):
        answer = site.check(Sent(http_request(target), (row,), Expect("error")))
        assert answer.status == 400 and b'locator="tilerow"' in answer.body


def test_a_valid_tile_in_every_form(site: Site) -> None:
    for target in (
        _kvp_tile(),
        _kvp_tile(TILEROW="+47790", TILECOL="068240"),
        "/wmts/1.0.0/plain/default/merc/17/47790/68240.png",
        "/wmts/1.0.0/plain/default/merc/%31%37/47790/68240%2Epng",
    ):
        layer = site.config.layers["plain"]
        expect = Expect("tile", layer, TileCoord(17, 47790, 68240))
        assert site.check(Sent(http_request(target), (), expect)).status == 200


@pytest.mark.parametrize(
    "path",
    ["/static/" + "a" * 256, "/static/vendor/" + "é" * 200, "/static/" + "a/" * 2100 + "x"],
    ids=["256-byte name", "400-byte UTF-8 name", "4 kB path"],
)
def test_static_names_too_long_for_the_file_system_are_not_found(site: Site, path: str) -> None:
    """ENAMETOOLONG from aiohttp's static route was a 500."""
    answer = site.check(Sent(http_request(quote(path, safe="/"))))
    assert answer.status == 404


EXPECT_PATHS = ["/", "/wmts/1.0.0/WMTSCapabilities.xml", _kvp_tile(), "/static/demo.css",
                "/wmts/1.0.0/plain/default/merc/17/47790/68240.png"]  # fmt: skip


@pytest.mark.parametrize("path", EXPECT_PATHS)
@pytest.mark.parametrize("expect", [b"\xff", b"\xc3(", b"nonsense", b"100-continue"])
def test_routes_ignore_the_expect_header(site: Site, path: str, expect: bytes) -> None:
    answer = site.check(Sent(http_request(path, [(b"Expect", expect)]), fresh=True))
    assert answer.status == 200


def test_the_upstream_expect_bug_is_told_apart_from_a_server_error(site: Site) -> None:
    """A generated request may meet it (which ones follows the test's source): its logged
    traceback fails no later check."""
    answer = site.check(Sent(http_request("/no-such-path", [(b"Expect", b"\xff")]), fresh=True))
    assert answer.status == 500 and site.outcomes[UPSTREAM_EXPECT_BUG] == 1
    assert site.check(Sent(http_request("/health"))).status == 200


@pytest.mark.xfail(strict=True, reason="aiohttp's default expect handler: 500 (upstream)")
def test_expect_not_utf8_on_a_path_without_route(site: Site) -> None:
    request = http_request("/no-such-path", [(b"Expect", b"\xff")])
    answer = site.connection.exchange(request)
    site.errors.records.clear()  # aiohttp logged its traceback
    assert answer.status == 404


def test_exception_reports_validate_against_the_ows_schema(site: Site) -> None:
    """A few reports, validated apart from the fuzz runs (which validate every report)."""
    for target in ("/wmts", _kvp_tile(TILEROW="x" * 5000), "/wmts/1.0.0/a/b/c/d/e/f.png"):
        validate_exception_report(site.connection.exchange(http_request(target)).body)


# --- size bounds ------------------------------------------------------------------------------


def test_a_request_line_over_8190_bytes_is_refused(site: Site) -> None:
    fits = _kvp_tile(TILEROW="1" * (8000 - len(_kvp_tile(TILEROW=""))))
    answer = site.check(Sent(http_request(fits), (), Expect("error")))
    assert answer.status == 400 and answer.route == "/wmts"
    exactly = "/wmts?x=" + "a" * (8190 - len("/wmts?x="))
    answer = site.check(Sent(http_request(exactly), (), Expect("error")))
    assert answer.status == 400 and answer.route == "/wmts"
    for size in (8191 - len("/wmts?x="), 10_000, 100_000, 1_000_000):
        refused(site, http_request("/wmts?x=" + "a" * size))


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X-Big", b"a" * 8191)],
        [(b"X-Big", b"a" * 100_000)],
        [(b"X-" + b"n" * 9000, b"1")],
        [(b"Cookie", b"c=" + b"v" * 20_000)],
        [(f"X-H{n}".encode(), b"v") for n in range(128)],  # 129 with Host
        [(b"X-Many", b"v" * 4000) for _ in range(300)],
    ],
    ids=[
        "8191-byte value",
        "100 kB value",
        "9 kB name",
        "20 kB cookie",
        "129 headers",
        "300 x 4 kB",
    ],
)
def test_oversized_headers_are_refused(site: Site, headers: list[tuple[bytes, bytes]]) -> None:
    refused(site, http_request("/wmts/1.0.0/WMTSCapabilities.xml", headers))


def test_headers_within_the_bounds_are_served(site: Site) -> None:
    # 128 headers with Host, one of 8190 bytes: the limits themselves.
    big = (b"X-Big", b"a" * (8190 - len("X-Big")))
    headers = [big] + [(f"X-H{n}".encode(), b"v") for n in range(126)]
    answer = site.check(Sent(http_request("/wmts/1.0.0/WMTSCapabilities.xml", headers),
                             expect=Expect("capabilities")))  # fmt: skip
    assert answer.status == 200
