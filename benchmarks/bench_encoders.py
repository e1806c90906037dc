"""PNG encoders on real tiles: time and size per encoder, the pixels checked.

Renders metatiles of the demo style (`config/styles/osm.xml`, Mapnik, 8x8 tiles of 256 px
with a 32 px buffer, as the demo layer `osm`) and, when the peers' MapServer WMS answers
(`/work/shared/peers/up.sh`), fetches the GetMap of the same metatiles (the `type: wms`
path), cuts each into its 64 tiles, and encodes the tiles that are not a single colour
(single-colour tiles are encoded once per render process, so they cost nothing per
metatile) with each encoder:

  mapnik png:z=1        what the Mapnik path does today (`view.to_string`)
  pillow z=1            Pillow's PNG encoder (every row filter tried), zlib level 1
  rows+<deflate> z=N    tileserver's own minimal writer (filter 0 on every row, one IDAT)
                        with zlib, zlib-ng, ISA-L (python-isal) or libdeflate (`deflate`)
  fpng                  the fpng package (its own deflate, RGB/RGBA)

each in the tile's own mode (RGBA for Mapnik's tiles, RGB for an opaque WMS answer) and,
for Mapnik's opaque tiles, also as RGB. Every encoded tile is decoded with Pillow and its
pixels compared with the source's (RGBA); a mismatch is printed and counted.

  .venv/bin/python benchmarks/bench_encoders.py            # about 1 minute
  .venv/bin/python benchmarks/bench_encoders.py --repeats 9 --json out.json

The time is the median over --repeats of encoding all the metatiles' non-solid tiles in
one process (no other work), in ms per metatile; the size is the mean bytes per tile.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import struct
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mapnik
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STYLE = ROOT / "config" / "styles" / "osm.xml"
WMS = "http://127.0.0.1:8081/wms"
ORIGIN = 20037508.342789244
TILE = 256
META = 8
BUFFER = 32
# (z, col, row) of one tile in each metatile measured: Monte-Carlo at z17 and z18 (the
# benchmarks' one cold tile), the harbour at z16, the whole principality at z15
TILES = ((17, 68240, 47790), (18, 136484, 95582), (16, 34120, 23895), (15, 17060, 11947))

Encoder = Callable[[bytes, int, int, str], bytes]  # raw pixels, width, height, mode -> PNG


def metatile_bbox(z: int, col: int, row: int) -> tuple[tuple[float, ...], int]:
    res = 2 * ORIGIN / TILE / 2**z
    c0, r0 = col // META * META, row // META * META
    size = META * TILE + 2 * BUFFER
    minx = -ORIGIN + c0 * TILE * res - BUFFER * res
    maxy = ORIGIN - r0 * TILE * res + BUFFER * res
    return (minx, maxy - size * res, minx + size * res, maxy), size


def render_mapnik(z: int, col: int, row: int) -> Any:
    bbox, size = metatile_bbox(z, col, row)
    m = mapnik.Map(size, size)
    mapnik.load_map(m, str(STYLE))
    m.srs = "epsg:3857"
    m.zoom_to_box(mapnik.Box2d(*bbox))
    image = mapnik.Image(size, size)
    mapnik.render(m, image)
    return image


def getmap(z: int, col: int, row: int) -> bytes | None:
    bbox, size = metatile_bbox(z, col, row)
    url = (
        f"{WMS}?SERVICE=WMS&VERSION=1.1.1&REQUEST=GetMap&LAYERS=osm&STYLES=&SRS=EPSG:3857"
        f"&BBOX={','.join(map(str, bbox))}&WIDTH={size}&HEIGHT={size}&FORMAT=image/png"
    )
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return bytes(r.read())
    except OSError:
        return None


# --- the encoders ----------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def rows_png(compress: Callable[[bytes], bytes]) -> Encoder:
    """The minimal writer: filter type 0 on every row, one IDAT deflated by `compress`."""

    def encode(data: bytes, width: int, height: int, mode: str) -> bytes:
        channels, colour = {"RGB": (3, 2), "RGBA": (4, 6)}[mode]
        stride = width * channels
        rows = b"".join(b"\x00" + data[i : i + stride] for i in range(0, len(data), stride))
        header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
        return b"".join(
            (b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"IDAT", compress(rows)),
             _chunk(b"IEND", b""))
        )  # fmt: skip

    return encode


def pillow_png(level: int) -> Encoder:
    def encode(data: bytes, width: int, height: int, mode: str) -> bytes:
        out = io.BytesIO()
        Image.frombytes(mode, (width, height), data).save(out, "PNG", compress_level=level)
        return out.getvalue()

    return encode


def encoders() -> dict[str, Encoder]:
    found: dict[str, Encoder] = {
        "pillow z=1": pillow_png(1),
        "rows+zlib z=1": rows_png(lambda b: zlib.compress(b, 1)),
    }
    try:
        from zlib_ng import zlib_ng

        found["rows+zlib-ng z=1"] = rows_png(lambda b: zlib_ng.compress(b, 1))
    except ImportError:
        print("zlib-ng: not installed (pip install zlib-ng)", file=sys.stderr)
    try:
        from isal import isal_zlib

        for level in (0, 1, 2):
            found[f"rows+isal z={level}"] = rows_png(
                lambda b, level=level: isal_zlib.compress(b, level)
            )
    except ImportError:
        print("isal: not installed (pip install isal)", file=sys.stderr)
    try:
        import deflate

        for level in (1, 2, 4, 6):
            found[f"rows+libdeflate z={level}"] = rows_png(
                lambda b, level=level: deflate.zlib_compress(b, level)
            )
    except ImportError:
        print("libdeflate: not installed (pip install deflate)", file=sys.stderr)
    try:
        import fpng

        found["fpng"] = lambda d, w, h, mode: bytes(
            fpng.from_bytes(d, w, h, {"RGB": 3, "RGBA": 4}[mode])
        )
    except ImportError:
        print("fpng: not installed (pip install fpng)", file=sys.stderr)
    return found


# --- the tiles -------------------------------------------------------------------------------


def mapnik_tiles(image: Any) -> tuple[list[Any], list[tuple[bytes, str]]]:
    """The non-solid tiles of a rendered metatile: Mapnik views and their raw RGBA."""
    views, raws = [], []
    if image.premultiplied():
        image.demultiply()  # as tileserver does before cutting (Mapnik's encoder: a copy)
    size = (image.width(), image.height())
    full = Image.frombuffer("RGBA", size, image.to_string(), "raw", "RGBA", 0, 1)
    for j in range(META):
        for i in range(META):
            x, y = BUFFER + i * TILE, BUFFER + j * TILE
            view = image.view(x, y, TILE, TILE)
            if view.is_solid():
                continue
            views.append(view)
            raws.append((full.crop((x, y, x + TILE, y + TILE)).tobytes(), "RGBA"))
    return views, raws


def wms_tiles(data: bytes) -> list[tuple[bytes, str]]:
    image = Image.open(io.BytesIO(data))
    image.load()
    image = image.convert("RGBA")
    if image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB")
    raws = []
    for j in range(META):
        for i in range(META):
            x, y = BUFFER + i * TILE, BUFFER + j * TILE
            tile = image.crop((x, y, x + TILE, y + TILE))
            extrema = tile.getextrema()
            if all(lo == hi for lo, hi in extrema):
                continue
            raws.append((tile.tobytes(), tile.mode))
    return raws


def as_rgb(raws: list[tuple[bytes, str]]) -> list[tuple[bytes, str]] | None:
    """The same tiles as RGB when every one is opaque, else None."""
    out = []
    for data, mode in raws:
        image = Image.frombytes(mode, (TILE, TILE), data)
        if mode == "RGBA":
            if image.getchannel("A").getextrema() != (255, 255):
                return None
            image = image.convert("RGB")
        out.append((image.tobytes(), "RGB"))
    return out


def same_pixels(png: bytes, data: bytes, mode: str) -> bool:
    decoded = Image.open(io.BytesIO(png))
    decoded.load()
    source = Image.frombytes(mode, (TILE, TILE), data).convert("RGBA")
    return decoded.size == (TILE, TILE) and decoded.convert("RGBA").tobytes() == source.tobytes()


def measure(
    name: str, encode: Callable[[], list[bytes]], sources: list[tuple[bytes, str]], repeats: int
) -> dict[str, Any]:
    times = []
    pngs: list[bytes] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pngs = encode()
        times.append(time.perf_counter() - t0)
    bad = sum(not same_pixels(p, d, m) for p, (d, m) in zip(pngs, sources, strict=True))
    modes = sorted({Image.open(io.BytesIO(p)).mode for p in pngs})
    return {
        "encoder": name,
        "ms": statistics.median(times) * 1000,
        "bytes": sum(map(len, pngs)),
        "tiles": len(pngs),
        "mismatches": bad,
        "modes": modes,
    }


def metatile_rows(rendered: list[Any], repeats: int) -> list[dict[str, Any]]:
    """Mapnik's cut (`mapnik_worker._cut`: a view per tile, `png:z=1`) against tileserver's
    (`pillow_cut.cut_pixels` on the raw pixels), the 64 tiles of each metatile, single
    colour tiles from each one's cache as in a render process that has run a while."""
    sys.path.insert(0, str(ROOT))
    from tileserver.adapters import mapnik_worker, pillow_cut

    size = META * TILE + 2 * BUFFER
    cuts = tuple((0, j, i, BUFFER + i * TILE, BUFFER + j * TILE)
                 for j in range(META) for i in range(META))  # fmt: skip
    encoding = pillow_cut.options("png:z=1")
    assert encoding is not None
    rows = []
    for name, cut in (
        ("mapnik view.to_string png:z=1 (before)",
         lambda image: mapnik_worker._cut(image, cuts, TILE, "png:z=1")),
        ("pillow_cut.cut_pixels png:z=1 (now)",
         lambda image: pillow_cut.cut_pixels(image.to_string(), size, size, cuts, TILE, encoding)),
    ):  # fmt: skip
        for image in rendered:
            cut(image)  # the single-colour tiles' cache
        times = []
        out: list[bytes] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = [data for image in rendered for data in cut(image).values()]
            times.append(time.perf_counter() - t0)
        rows.append({"encoder": name, "ms": statistics.median(times) * 1000,
                     "bytes": sum(map(len, out)), "tiles": len(out), "mismatches": 0,
                     "modes": sorted({Image.open(io.BytesIO(d)).mode for d in out})})  # fmt: skip
        rows[-1]["pixels"] = [Image.open(io.BytesIO(d)).convert("RGBA").tobytes() for d in out]
    before, now = rows[0].pop("pixels"), rows[1].pop("pixels")
    rows[1]["mismatches"] = sum(a != b for a, b in zip(before, now, strict=True))
    return rows


def jpeg_rows(
    views: list[Any], raws: list[tuple[bytes, str]], repeats: int
) -> list[dict[str, Any]]:
    """Mapnik's `jpeg85` against Pillow's JPEG (libjpeg-turbo) at quality 85 on the same
    tiles: time, size, and how far Pillow's decoded pixels are from Mapnik's."""
    rgb = [Image.frombytes(m, (TILE, TILE), d).convert("RGB") for d, m in raws]

    def pillow() -> list[bytes]:
        out = []
        for image in rgb:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=85)
            out.append(buffer.getvalue())
        return out

    rows = []
    results: dict[str, list[bytes]] = {}
    for name, encode in (
        ("mapnik jpeg85", lambda: [v.to_string("jpeg85") for v in views]),
        ("pillow JPEG quality=85", pillow),
    ):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            results[name] = encode()
            times.append(time.perf_counter() - t0)
        rows.append({"encoder": name, "ms": statistics.median(times) * 1000,
                     "bytes": sum(map(len, results[name])), "tiles": len(views),
                     "mismatches": 0, "modes": ["RGB"]})  # fmt: skip
    mapnik_px = [
        Image.open(io.BytesIO(d)).convert("RGB").tobytes() for d in results["mapnik jpeg85"]
    ]
    pillow_px = [
        Image.open(io.BytesIO(d)).convert("RGB").tobytes()
        for d in results["pillow JPEG quality=85"]
    ]
    differing = sum(a != b for a, b in zip(mapnik_px, pillow_px, strict=True))
    identical_bytes = sum(
        a == b
        for a, b in zip(results["mapnik jpeg85"], results["pillow JPEG quality=85"], strict=True)
    )
    rows[1]["mismatches"] = differing  # tiles whose decoded pixels differ from Mapnik's
    rows[1]["identical_files"] = identical_bytes
    return rows


def run(repeats: int) -> dict[str, list[dict[str, Any]]]:
    found = encoders()
    sets: dict[str, list[dict[str, Any]]] = {}
    rendered = [render_mapnik(*t) for t in TILES]
    cut = [mapnik_tiles(image) for image in rendered]
    views = [v for vs, _ in cut for v in vs]
    raws = [r for _, rs in cut for r in rs]
    rows = [
        measure(
            "mapnik png:z=1 (Mapnik's encoder: before)",
            lambda: [v.to_string("png:z=1") for v in views],
            raws,
            repeats,
        )
    ]
    for name, encode in found.items():
        rows.append(
            measure(name, lambda e=encode: [e(d, TILE, TILE, m) for d, m in raws], raws, repeats)
        )
    rgb = as_rgb(raws)
    if rgb is not None:
        for name, encode in found.items():
            rows.append(
                measure(
                    f"{name}, as RGB",
                    lambda e=encode: [e(d, TILE, TILE, m) for d, m in rgb],
                    raws,
                    repeats,
                )
            )
    sets[f"mapnik ({len(raws)} non-solid tiles in {len(TILES)} metatiles)"] = rows
    sets["whole metatiles: cut and encode the 64 tiles, as a render process does"] = metatile_rows(
        rendered, repeats
    )
    sets[f"jpeg, quality 85 ({len(raws)} non-solid tiles of the Mapnik metatiles)"] = jpeg_rows(
        views, raws, repeats
    )

    answers = [getmap(*t) for t in TILES]
    if all(a is not None for a in answers):
        wraws = [r for a in answers if a is not None for r in wms_tiles(a)]
        sets[f"wms ({len(wraws)} non-solid tiles in {len(TILES)} metatiles)"] = [
            measure(name, lambda e=encode: [e(d, TILE, TILE, m) for d, m in wraws], wraws, repeats)
            for name, encode in found.items()
        ]
    else:
        print(f"{WMS} does not answer: the WMS tiles are left out", file=sys.stderr)
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--repeats", type=int, default=5, help="median of N (default 5)")
    ap.add_argument("--json", type=Path, help="write the figures there too")
    args = ap.parse_args(argv)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    sets = run(args.repeats)
    print(f"\nload before {load}; {len(TILES)} metatiles; median of {args.repeats}\n")
    for title, rows in sets.items():
        base = rows[0]
        print(f"### {title}\n")
        print(
            "| encoder | ms per metatile | x faster | bytes per tile | size | modes | mismatches |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            per_meta = r["ms"] / len(TILES)
            print(
                f"| {r['encoder']} | {per_meta:.1f} | {base['ms'] / r['ms']:.2f} "
                f"| {r['bytes'] / r['tiles']:.0f} | {r['bytes'] / base['bytes']:.2f} "
                f"| {'/'.join(r['modes'])} | {r['mismatches']} |"
            )
        print()
    if args.json:
        args.json.write_text(json.dumps({"load": load, "sets": sets}, indent=1) + "\n")
    bad = sum(r["mismatches"] for rows in sets.values() for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
