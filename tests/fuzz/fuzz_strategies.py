"""Hypothesis strategies of the fuzzing: valid requests and their mutations, hostile
encodings, paths, raw bytes and headers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from hypothesis import strategies as st

from tests.fuzz.fuzz_files import SEED_LEVEL, STATIC_FILES
from tests.fuzz.raw_http import http_request
from tests.fuzz.wmts_model import Expect, Sent, kvp_outcome, rest_outcome
from tileserver.config import Config, Layer, info_extension

# --- strategies ---------------------------------------------------------------------------------

HOSTILE = [
    "", " ", "0", "-0", "+0", "-1", "+1", "00", "01", "1e3", "1E3", "1.0", "1.", ".5", "0x10",
    "0b1", "0o7", "1_000", " 1", "1 ", "\t1", "1\n", "\n1", "1\r\n", "1\x00", "1\x0b",
    # Unicode digits (int() takes the Nd ones): Arabic-Indic, fullwidth, superscript, circled,
    # Roman numeral, mathematical bold, NKo.
    "\u0663", "\u0661\u0662", "\uff10", "\uff11\uff12", "\u00b2", "\u2460", "\u216b",
    "\U0001d7d7", "\u07c1",
    str(10**30), str(-(10**30)), str(2**63), str(2**63 - 1), str(-(2**63)), str(2**64),
    "9" * 18, "9" * 19, "0" * 17 + "1", "0" * 40 + "1", "NaN", "nan", "inf", "-inf",
    "Infinity", "None", "null", "true", "[]", "{}",
    "..", ".", "...", "../..", "../../etc/passwd", "..\\..\\", "%2e%2e", "%2E%2E%2F",
    "%252e%252e", "..%2f", "%2f", "/", "//", "\\", "\\\\", "\x00", "a\x00b", "%00", "\x01",
    "\x7f", "\x1b[31m", "\r\n", "\r\nX-Injected: 1", "\u0085", "\u2028",
    "é", "日本語", "Ω", "🗺️", "👨‍👩‍👧", "\ufeff", "\u202e", "\uffff", "\U0010ffff",
    "\u0130", "\u0131", "\u017f",  # dotted capital I, dotless i, long s
    "x" * 201, "x" * 2000, "9" * 3000, "é" * 500, "/" * 300, ".." * 500, "x" * 10_000,
    "<script>alert(1)</script>", "]]>", "&amp;", "'", '"', "%", "%%", "%zz", "%u002e", "+",
    ";", "=", "&", "?", "#", "${jndi:ldap://x}", "{{7*7}}", "%(x)s", "{0}", "$(id)", "`id`",
    "WMTS", "wmts", "GetTile", "GETTILE", "gettile", "GetCapabilities", "GetFeatureInfo",
    "GetMap", "1.0.0", "1.0", "2.0.0", "1.0.0,2.0.0", "default", "Default", "natural",
    "image/png", "IMAGE/PNG", "image/jpeg", "image/png; mode=8bit", "text/plain", "merc",
    "MERC", "lv95", "17", "4000", "4000.0", "0.5", ".5", "plain", "timed", "stored", "info",
    "swiss", "PLAIN", "2020", "2021", "low", "high", "png", "jpeg", "jpg", "txt", "json",
]  # fmt: skip
NAMES = ["service", "request", "version", "layer", "style", "format", "tilematrixset",
         "tilematrix", "tilerow", "tilecol", "infoformat", "i", "j", "acceptversions", "time",
         "elevation", "x", "", "servicé", "service\x00", "\u017fervice", "tilerow ",
         " tilerow"]  # fmt: skip

# Beyond the 8190-byte request line once in the URL: the parser must refuse them.
LONG = ["x" * 10_000, "9" * 9_000, "é" * 1_400, "../" * 3_000, "\x00" * 3_000]

hostile = st.one_of(
    st.sampled_from(HOSTILE + LONG),
    st.integers(-(10**40), 10**40).map(str),
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=5),
    st.text(max_size=30),
    st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE), st.sampled_from(HOSTILE)),
)

# How a value is written into a URL. The first three round-trip (aiohttp decodes them back to
# the value); "double" decodes to quote(value); the last two decode to something unknown.
_PARTIAL_SAFE = "/\\.:;=@!$'()*,~[]{}|^`\"<>"


def _overlong(text: str) -> str:
    """'.' and '/' as overlong two-byte UTF-8, the rest percent-encoded."""
    return quote(text, safe="").replace(".", "%C0%AE").replace("%2F", "%C0%AF")


ENCODINGS: dict[str, Callable[[str], str]] = {
    "quote": lambda v: quote(v, safe=""),
    "plus": quote_plus,
    "partial": lambda v: quote(v, safe=_PARTIAL_SAFE),
    "double": lambda v: quote(quote(v, safe=""), safe=""),
    "overlong": _overlong,
    "latin1": lambda v: quote(v.encode("latin-1", "replace"), safe=""),
}
# Per request, one palette: mostly encodings whose decoding is known (so that the request's
# meaning is known and its answer checked against `kvp_outcome` / `rest_outcome`).
KNOWN = ["quote", "quote", "plus", "partial", "partial", "double"]
palettes = st.sampled_from([KNOWN, KNOWN, [*KNOWN, "overlong", "latin1"]])
KNOWN_IN_PATHS = [e for e in KNOWN if e != "plus"]  # '+' is a '+' in a path, not a space
path_palettes = st.sampled_from(
    [KNOWN_IN_PATHS, KNOWN_IN_PATHS, ["quote", "partial", "double", "overlong", "overlong"]]
)


def _decoded(encoded: str, encoding: str, query: bool) -> str | None:
    """What aiohttp decodes an encoded value to, when that is known."""
    if encoding in ("overlong", "latin1"):
        return None
    return unquote_plus(encoded) if query else unquote(encoded)


def _case(name: str, how: str) -> str:
    if how == "dotless":  # U+0131 upper-cases to I but lower-cases to itself
        return name.replace("i", "\u0131").upper()
    if how == "random":
        return "".join(c.upper() if k % 3 else c for k, c in enumerate(name))
    return {"upper": name.upper(), "lower": name.lower(), "title": name.title(),
            "swap": name.swapcase()}[how]  # fmt: skip


cases = st.sampled_from(["upper", "upper", "lower", "title", "swap", "random", "dotless"])


@dataclass(frozen=True)
class Valid:
    """A valid GetTile or GetFeatureInfo as (lower-case name, value) pairs, and values just
    beside the valid ones (the limits of the matrix and of the tile, one past them)."""

    layer: Layer
    params: tuple[tuple[str, str], ...]
    near: Mapping[str, Sequence[str]]


@st.composite
def valid_tile(draw: st.DrawFn, config: Config, queryable: bool = False) -> Valid:
    names = [n for n, layer in config.layers.items()
             if not queryable or (layer.wms and layer.wms.query_layers)]  # fmt: skip
    layer = config.layers[draw(st.sampled_from(names))]
    grid = layer.grid
    last = len(grid.resolutions) - 1
    z = draw(st.one_of(st.integers(0, min(SEED_LEVEL + 1, last)), st.integers(0, last)))
    limits = grid.limits(z, layer.bbox)
    params = [
        ("layer", layer.name),
        ("style", draw(st.sampled_from([layer.wmts_style, layer.wmts_style, ""]))),
        ("format", layer.mime_type),
        ("tilematrixset", grid.name),
        ("tilematrix", grid.matrix_id(z)),
        ("tilerow", str(draw(st.integers(limits.min_row, limits.max_row)))),
        ("tilecol", str(draw(st.integers(limits.min_col, limits.max_col)))),
    ]
    for dimension in layer.dimensions:
        if draw(st.booleans()):
            params.append((dimension.name, draw(st.sampled_from([*dimension.values, ""]))))
    size = grid.tile_size
    if queryable:
        assert layer.wms is not None
        params.append(("infoformat", draw(st.sampled_from(layer.wms.info_formats))))
        params += [(name, str(draw(st.integers(0, size - 1)))) for name in ("i", "j")]

    def around(low: int, high: int) -> list[str]:
        return [str(v) for v in (low - 1, low, high, high + 1)] + [f"+{high}", f"0{low}"]

    pixel = around(0, size - 1)
    near = {
        "tilematrix": [grid.matrix_id(0), grid.matrix_id(last), str(last + 1), "-1", "0.0"],
        "tilerow": around(limits.min_row, limits.max_row),
        "tilecol": around(limits.min_col, limits.max_col),
        "i": pixel,
        "j": pixel,
    }
    return Valid(layer, tuple(params), near)


def _mutate(
    draw: st.DrawFn, pairs: list[tuple[str, str]], valid: Valid | None, kinds: Sequence[str]
) -> None:
    """Changes (name, value) pairs in place: 0 to 4 changes, none a third of the time."""
    for _ in range(draw(st.one_of(st.just(0), st.integers(1, 4), st.integers(1, 4)))):
        kind = draw(st.sampled_from(kinds))
        at = draw(st.integers(0, len(pairs) - 1)) if pairs else 0
        name = pairs[at][0] if pairs else ""
        if kind == "insert" or not pairs:
            pairs.insert(at, (draw(st.sampled_from(NAMES)), draw(hostile)))
        elif kind == "value":
            pairs[at] = (name, draw(hostile))
        elif kind == "near" and valid is not None and name.lower() in valid.near:
            pairs[at] = (name, draw(st.sampled_from(valid.near[name.lower()])))
        elif kind == "drop":
            del pairs[at]
        elif kind == "repeat":
            where = draw(st.integers(0, len(pairs)))
            pairs.insert(where, (_case(name, draw(cases)), draw(hostile)))
        elif kind == "case":
            pairs[at] = (_case(name, draw(cases)), pairs[at][1])
        elif kind == "value case":
            pairs[at] = (name, _case(pairs[at][1], draw(cases)))


@st.composite
def kvp_requests(draw: st.DrawFn, config: Config) -> Sent:
    request = draw(st.sampled_from(["GetTile", "GetTile", "GetFeatureInfo", "GetCapabilities"]))
    pairs: list[tuple[str, str]] = [("service", "WMTS"), ("request", request)]
    valid = None
    if request == "GetCapabilities":
        if draw(st.booleans()):
            pairs.append(("acceptversions", draw(st.sampled_from(["1.0.0", "2.0.0,1.0.0"]))))
    else:
        valid = draw(valid_tile(config, queryable=request == "GetFeatureInfo"))
        pairs += [("version", "1.0.0"), *valid.params]
    pairs = [(name.upper(), value) for name, value in draw(st.permutations(pairs))]
    _mutate(draw, pairs, valid, ["value", "value", "near", "near", "drop", "repeat", "case",
                                 "value case", "insert"])  # fmt: skip
    pieces, decoded, known = [], [], True
    palette = draw(palettes)
    for name, value in pairs:
        how = draw(st.sampled_from(palette))
        encoded_name, encoded_value = ENCODINGS[how](name), ENCODINGS[how](value)
        pieces.append(f"{encoded_name}={encoded_value}")
        key, text = _decoded(encoded_name, how, True), _decoded(encoded_value, how, True)
        if key is None or text is None:
            known = False
        else:
            decoded.append((key, text))
    path = draw(st.sampled_from(["/wmts", "/wmts/"]))
    target = path + "?" + "&".join(pieces)
    values = tuple(v for pair in pairs for v in pair)
    expect = kvp_outcome(config, decoded) if known else None
    return Sent(http_request(target), values, expect)


@st.composite
def rest_requests(draw: st.DrawFn, config: Config) -> Sent:
    info = draw(st.booleans())
    valid = draw(valid_tile(config, queryable=info))
    layer, params = valid.layer, dict(valid.params)
    pairs = [("layer", layer.name), ("style", params["style"] or layer.wmts_style)]
    pairs += [(d.name, params.get(d.name) or d.default) for d in layer.dimensions]
    pairs += [(name, params[name]) for name in ("tilematrixset", "tilematrix", "tilerow",
                                                "tilecol")]  # fmt: skip
    extension = layer.extension
    if info:
        pairs += [("j", params["j"]), ("i", params["i"])]
        extension = info_extension(params["infoformat"])
    _mutate(draw, pairs, valid, ["value", "near", "near", "drop", "insert", "value case"])
    segments = [value for _, value in pairs]
    if segments and draw(st.integers(0, 5)) == 0:
        extension = draw(st.sampled_from(
            ["", "PNG", "jpg", "jpeg", "png.png", "gml", "txt", "json", "html", "xml",
             "png%00", "png/", "png\\", "x" * 300, "png\n"]))  # fmt: skip
    if segments:
        segments[-1] += "." + extension
    pieces, decoded, known = [], [], True
    palette = draw(path_palettes)
    for segment in segments:
        how = draw(st.sampled_from(palette))
        pieces.append(ENCODINGS[how](segment))
        text = _decoded(pieces[-1], how, False)
        if text is None:
            known = False
        else:
            decoded.append(text)
    path = "/".join(decoded)
    if any(s in (".", "..") or "%" in s for s in path.split("/")):
        known = False  # dot segments and literal '%': left to the generic properties
    query = draw(st.sampled_from(["", "", "?", "?SERVICE=WMTS&REQUEST=GetCapabilities",
                                  "?x=" + quote("../" * 20), "?%00", "#frag"]))  # fmt: skip
    target = "/wmts/1.0.0/" + "/".join(pieces) + query
    expect = rest_outcome(config, path) if known else None
    return Sent(http_request(target), tuple(segments), expect)


TRAVERSALS = [
    "..", ".", "", "...", "%2e%2e", "%2E%2e", ".%2e", "%2e", "%2f", "%2F..", "%5c", "\\",
    "..\\..", "..%5c..", "%00", "%c0%ae%c0%ae", "%c0%af", "%e0%80%ae", "%252e%252e", "....//",
    "~", "*", "..%2f..%2fpyproject.toml", "vendor/..", "x/..", "./.", "..;",
]  # fmt: skip
OUTSIDE = [
    "web/app.py", "__init__.py", "tileserver", "templates/capabilities.xml.mako", "etc/passwd",
    "SECRET-beside.txt", "SECRET-above.txt", "config.yaml", "pyproject.toml", "static",
]  # fmt: skip
PREFIXES = [
    "/static/", "/static/", "/static/", "/static/vendor/", "/static", "/", "//", "///",
    "/./static/", "/%73tatic/", "/STATIC/", "/static%2f", "/static%2F..%2F", "/static/..",
    "/wmts/", "/wmts/1.0.0", "/wmts/2.0.0/", "/WMTS", "/wmts/1.0.0/WMTSCapabilities.xml/",
    "/health", "/ready", "/metrics", "/health/", "/favicon.ico", "/index.html", "/%2e%2e/",
    "/..", "/\\", "/%5c",
]  # fmt: skip
FILE_CHANGES = ["", "", "", "/", ".", "%00", "%00.png", "::$DATA", ";x", "?x=1", "#x", "~",
                ".bak", "%20", "%2e", "/..", "/."]  # fmt: skip


DETOURS = ["", "", "./", ".//", "vendor/../", "x/../", "%2e/", "vendor/%2e%2e/", "vendor/.%2e/",
           "../static/", "%2e%2e/static/", "vendor/../../static/"]  # fmt: skip


@st.composite
def static_files(draw: st.DrawFn) -> Sent:
    """A file of /static, through dot segments that may stay inside, with a suffix maybe."""
    name = draw(st.sampled_from(STATIC_FILES))
    detour = draw(st.sampled_from(DETOURS))
    change = draw(st.sampled_from(FILE_CHANGES))
    return Sent(http_request("/static/" + detour + name + change), (detour, name, change))


@st.composite
def other_paths(draw: st.DrawFn) -> Sent:
    """Escapes towards the package and the secrets, hostile pieces, and other paths."""
    prefix = draw(st.sampled_from(PREFIXES))
    pieces = draw(st.lists(st.one_of(
        st.sampled_from(STATIC_FILES), st.sampled_from(TRAVERSALS), st.sampled_from(OUTSIDE),
        hostile,
    ), max_size=4))  # fmt: skip
    if draw(st.booleans()):
        pieces.append(draw(st.sampled_from(STATIC_FILES)) + draw(st.sampled_from(FILE_CHANGES)))
    encoded = []
    for piece in pieces:
        how = draw(st.sampled_from(["as is", "as is", "as is", "quote", "double", "overlong"]))
        if how == "as is":  # keeps the piece's own escapes; encodes what HTTP forbids
            encoded.append(quote(piece, safe="%/\\.:;=@!$'()*,~+&[]?#"))
        else:
            encoded.append(ENCODINGS[how](piece))
    target = prefix + "/".join(encoded)
    return Sent(http_request(target), tuple(pieces))


TARGET_PREFIXES = [b"http://evil.example", b"http://127.0.0.1:1", b"*", b"", b"wmts",
                   b"\\\\host", b"https://[::1]"]  # fmt: skip


@st.composite
def raw_requests(draw: st.DrawFn, config: Config) -> Sent:
    """Requests as bytes, including what HTTP forbids in a request line or a header."""
    base = draw(
        st.one_of(kvp_requests(config), rest_requests(config), static_files(), other_paths())
    )
    target = base.request.split(b" ", 2)[1]
    at = draw(st.integers(0, len(target)))
    insert = draw(st.one_of(
        st.just(b""),
        st.sampled_from([b"\x00", b"\\", b"\\..\\", b"//", b"/../", b" ", b"\t", b"\r", b"\n",
                         b"\xc0\xae\xc0\xae", b"\xff", b"\x7f", b"#", b"?", b"%", b"\x1b",
                         "é".encode(), "日本".encode(), "🗺".encode(), b"\xed\xa0\x80",
                         b"\r\n\r\nGET / HTTP/1.1\r\n"]),
        st.binary(max_size=12),
        st.text(max_size=8).map(str.encode),
    ))  # fmt: skip
    target = target[:at] + insert + target[at:]
    if draw(st.integers(0, 4)) == 0:
        target = draw(st.sampled_from(TARGET_PREFIXES)) + target
    method = draw(st.sampled_from([b"GET", b"GET", b"GET", b"HEAD", b"get", b"POST",
                                   b"OPTIONS", b"TRACE", b"G\x00T", b"PROPFIND"]))  # fmt: skip
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0",
                                    b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1\x00", b"http/1.1",
                                    b"HTTP/9.9"]))  # fmt: skip
    headers = draw(st.lists(st.tuples(
        st.sampled_from([b"X-A", b"Host", b"Accept", b"X\x00", b"", b" X", b"X-\xff",
                         b"If-None-Match", b"Range", b"Expect"]),
        st.one_of(st.binary(max_size=20), st.sampled_from([b"100-continue", b"bytes=0-10",
                                                           b"*", b"\xc3\xa9"])),
    ), max_size=2))  # fmt: skip
    request = http_request(target, headers, method, version)
    return Sent(request, base.values, None, head=method == b"HEAD", fresh=True)


HOSTS = [b"127.0.0.1", b"localhost:8080", b"", b"[::1]", b"[::1]:80", b"evil.example",
         b"x" * 300, b"<a>&\"'", b"\xc3\xa9", b"a b", b"host:99999", b"host:-1", b"..", b"/",
         b"a/b?c#d", b"%2e%2e", b"]]>", b"1.2.3.4:5", b"a,b", b"user@host"]  # fmt: skip
CONDITIONS = [b"If-None-Match", b"If-Modified-Since", b"If-Unmodified-Since", b"If-Match",
              b"Range", b"If-Range", b"Accept-Encoding", b"Accept", b"Connection", b"Upgrade",
              b"Cookie", b"Forwarded", b"X-Forwarded-Host", b"X-Forwarded-Proto",
              b"Origin", b"Authorization"]  # fmt: skip
CONDITION_VALUES = [b"*", b'"x"', b'W/"x"', b",,,", b'"' * 1000, b"", b"bytes=0-10",
                    b"bytes=-5", b"bytes=5-", b"bytes=9999999-", b"bytes=" + b"9" * 40 + b"-",
                    b"bytes=0-0,0-0,0-0", b"bytes=5-1", b"bytes=a-b", b"gzip, br, zstd",
                    b"Wed, 21 Oct 2015 07:28:00 GMT", b"Thu, 01 Jan 1970 00:00:00 GMT",
                    b"Sat, 31 Dec 9999 23:59:59 GMT", b"tomorrow", b"close", b"keep-alive",
                    b"upgrade", b"websocket", b"h2c"]  # fmt: skip


def recent_dates() -> st.SearchStrategy[bytes]:
    """HTTP dates around now (a tile's Last-Modified is when it was rendered or planted,
    in this session): now, a few seconds or an hour ago, a minute ahead."""
    offsets = st.sampled_from([0, -1, -5, -3600, 60])
    return offsets.map(lambda offset: formatdate(time.time() + offset, usegmt=True).encode())


@st.composite
def header_requests(draw: st.DrawFn, config: Config, etags: Sequence[bytes]) -> Sent:
    """Valid targets with hostile Host, conditional, Range and other headers."""
    base = draw(st.one_of(
        kvp_requests(config).filter(lambda s: s.expect is not None and s.expect.kind != "error"),
        st.sampled_from([
            Sent(http_request("/wmts/1.0.0/WMTSCapabilities.xml"), (), Expect("capabilities")),
            Sent(http_request("/wmts?service=WMTS&request=GetCapabilities"), (),
                 Expect("capabilities")),
            Sent(http_request("/")), Sent(http_request("/static/demo.css")),
            Sent(http_request("/static/vendor/ol.js")),
        ]),
    ))  # fmt: skip
    target = base.request.split(b" ", 2)[1]
    host = draw(st.sampled_from(HOSTS))
    names = st.sampled_from([*CONDITIONS, *[b"If-None-Match"] * 5,
                             *[b"If-Modified-Since"] * 3])  # fmt: skip
    headers = draw(st.lists(st.tuples(names, st.one_of(
        st.sampled_from(CONDITION_VALUES), st.sampled_from(etags),
        st.lists(st.sampled_from(etags), max_size=3).map(b", ".join),
        recent_dates(),
    )), max_size=4))  # fmt: skip
    if draw(st.integers(0, 2)) == 0:  # a revalidation, last (after any empty line)
        headers.append((b"If-None-Match", draw(st.sampled_from([*etags, b"*", b'"other"']))))
    head = draw(st.booleans())
    request = http_request(target, headers, b"HEAD" if head else b"GET", host=host)
    # A conditional or Range request may be answered 304 / 206 / 412: no expectation then.
    expect = base.expect if not headers else None
    return Sent(request, base.values, expect, head=head, fresh=b"Connection" in dict(headers))
