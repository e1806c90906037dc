"""The conditional requests of tiles (RFC 9110, 13.1.2, 13.1.3, 13.2.2) and the dates they
compare: `web/headers.py`."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from tileserver.web.headers import http_date, last_modified, not_modified

MODIFIED = 1_800_000_000  # Fri, 15 Jan 2027 08:00:00 GMT
NOW = MODIFIED + 100.5
ETAG = '"1f-0123456789abcdef"'


def date(second: float) -> str:
    return formatdate(second, usegmt=True)


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", [], False),
        ("GET", [("If-Modified-Since", date(MODIFIED))], True),
        ("GET", [("If-Modified-Since", date(MODIFIED - 1))], False),
        ("GET", [("If-Modified-Since", date(MODIFIED + 60))], True),  # later, still past
        ("GET", [("If-Modified-Since", date(NOW + 10))], False),  # in the future: ignored
        ("GET", [("If-Modified-Since", "Friday, 15-Jan-27 08:00:00 GMT")], True),  # RFC 850
        ("GET", [("If-Modified-Since", "Fri Jan 15 08:00:00 2027")], True),  # asctime
        ("GET", [("If-Modified-Since", "yesterday")], False),  # not a date: ignored
        ("GET", [("If-Modified-Since", "")], False),
        ("GET", [("If-Modified-Since", "Fri, 15 Jan 2027 25:00:00 GMT")], False),
        ("HEAD", [("If-Modified-Since", date(MODIFIED))], True),
        ("POST", [("If-Modified-Since", date(MODIFIED))], False),  # GET and HEAD only
        # If-None-Match present: If-Modified-Since is not looked at (13.1.3).
        ("GET", [("If-None-Match", '"other"'), ("If-Modified-Since", date(MODIFIED))], False),
        ("GET", [("If-None-Match", ETAG), ("If-Modified-Since", date(MODIFIED - 1))], True),
        ("GET", [("If-None-Match", ETAG)], True),
        ("GET", [("If-None-Match", f'"a", W/{ETAG}')], True),  # weak comparison
        ("GET", [("If-None-Match", '"a"'), ("If-None-Match", ETAG)], True),  # two lines
        ("GET", [("If-None-Match", "*")], True),
        ("GET", [("If-None-Match", "")], False),
    ],
)
def test_not_modified(method: str, headers: list[tuple[str, str]], expected: bool) -> None:
    request = make_mocked_request(method, "/tile.png", headers=CIMultiDict(headers))
    assert not_modified(request, ETAG, MODIFIED, NOW) is expected


def test_a_tile_of_unknown_time_is_never_not_modified_by_date() -> None:
    request = make_mocked_request(
        "GET", "/tile.png", headers=CIMultiDict({"If-Modified-Since": date(MODIFIED)})
    )
    assert not_modified(request, ETAG, None, NOW) is False
    matching = make_mocked_request("GET", "/t.png", headers=CIMultiDict({"If-None-Match": ETAG}))
    assert not_modified(matching, ETAG, None, NOW) is True  # the ETag needs no time


@pytest.mark.parametrize(
    ("modified", "expected"),
    [
        (None, None),
        (MODIFIED + 0.999, MODIFIED),  # whole seconds, as the header carries
        (float(MODIFIED), MODIFIED),
        (NOW + 3600, int(NOW)),  # a store's clock ahead of ours: never after now
    ],
)
def test_last_modified_is_a_whole_second_not_after_now(
    modified: float | None, expected: int | None
) -> None:
    assert last_modified(modified, NOW) == expected


def test_http_date_is_the_imf_fixdate() -> None:
    assert http_date(MODIFIED) == "Fri, 15 Jan 2027 08:00:00 GMT"
    assert http_date(MODIFIED) is http_date(MODIFIED)  # formatted once
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
