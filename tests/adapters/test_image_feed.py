"""A WMS answer cut as it is read (`image_feed`, `pillow_cut.cut_pieces`, the render pool's
`cut_as_read`): the tiles of the whole answer's cut, byte for byte, whatever the pieces;
the first tile handed over as soon as its rows are in, before the rest of the answer; an
answer that breaks off gives no tiles and holds no render process."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from tests.adapters.test_pillow_cut import META_CUTS, metatile_image, png_of
from tests.adapters.test_png_decoder import split_idat  # as MapServer (libpng): 8 KB IDATs
from tests.support.configs import single_layer
from tests.support.waiting import async_wait_until
from tileserver.adapters import image_feed, pillow_cut, plain_cut
from tileserver.adapters.image_feed import FeedBroken, FeedReader, FeedServer
from tileserver.adapters.mapnik_renderer import MapnikRenderer
from tileserver.adapters.mapnik_worker import InvalidImage
from tileserver.adapters.pillow_cut import Encoding, NotAnImage
from tileserver.grid import metatile_for
from tileserver.types import RenderedTiles, TileCoord

PNG1 = Encoding("PNG", 1)


def pixels(tile: bytes) -> tuple[str, tuple[int, int], bytes]:
    image = Image.open(io.BytesIO(tile))
    return image.mode, image.size, image.tobytes()


class Pieces:
    """An answer in pieces of `size` bytes; records, at each read, how many first tiles
    had been handed over, and how many bytes had been read."""

    def __init__(self, data: bytes, size: int) -> None:
        self.pieces = [data[i : i + size] for i in range(0, len(data), size)]
        self.given = 0
        self.sent: list[bytes] = []
        self.seen: list[tuple[int, int]] = []  # (bytes read before, first tiles sent)

    def ready(self) -> bool:
        return False  # as if each piece took its time: the whole tiles are encoded first

    def read(self) -> bytes | None:
        self.seen.append((sum(map(len, self.pieces[: self.given])), len(self.sent)))
        if self.given == len(self.pieces):
            return None
        self.given += 1
        return self.pieces[self.given - 1]

    def rest(self) -> list[bytearray]:
        rest = [bytearray(p) for p in self.pieces[self.given :]]
        self.given = len(self.pieces)
        return rest


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("size", [1, 97, 8192, 1 << 30])
@pytest.mark.parametrize("first", [0, 4])
def test_an_answer_cut_as_it_comes_gives_the_tiles_of_the_whole(
    mode: str, size: int, first: int
) -> None:
    image = metatile_image(mode)
    data = png_of(image, True)
    cuts = (META_CUTS[first], *META_CUTS[:first], *META_CUTS[first + 1 :])
    whole_uniform: plain_cut.Uniform = {}
    whole = pillow_cut.cut(data, 192, 128, cuts, 64, PNG1, whole_uniform)
    pieces = Pieces(data, size)
    uniform: plain_cut.Uniform = {}
    tiles = pillow_cut.cut_pieces(pieces, 192, 128, cuts, 64, PNG1, uniform, pieces.sent.append)
    assert list(tiles) == list(whole) and uniform == whole_uniform
    for coord, tile in tiles.items():  # the same pixels (the bytes may differ: png_encoder)
        assert pixels(tile) == pixels(whole[coord])
    assert pieces.sent == [tiles[cuts[0][:3]]]


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("first", [0, 4])
def test_the_first_tile_is_handed_over_once_its_rows_are_in(mode: str, first: int) -> None:
    """Answer first does not wait for the end of the answer: a tile in the top row of
    tiles is handed over before the last image data is read (a bottom one once its rows
    are in, at the end), and its pixels are those of the whole answer."""
    image = metatile_image(mode)
    data = split_idat(png_of(image, True), 64)
    cuts = (META_CUTS[first], *META_CUTS[:first], *META_CUTS[first + 1 :])
    pieces = Pieces(data, 97)
    tiles = pillow_cut.cut_pieces(pieces, 192, 128, cuts, 64, PNG1, None, pieces.sent.append)
    [sent] = pieces.sent
    assert sent == tiles[cuts[0][:3]]
    _, row, _, x, y = cuts[0]
    assert pixels(sent)[2] == image.crop((x, y, x + 64, y + 64)).convert("RGB").tobytes()
    handed_over_at = next(read for read, count in pieces.seen if count)
    last_idat = len(data) - 12 - (12 + 64)  # the last IDAT chunk (at most 64 bytes), IEND
    if row == 0:
        assert handed_over_at < last_idat, (handed_over_at, len(data))
    else:
        assert handed_over_at == len(data)  # its last rows are in the last chunk


def test_a_filtered_answer_read_in_pieces_is_left_to_pillow() -> None:
    image = metatile_image("RGB")
    data = png_of(image, False)  # Pillow's own PNG: filtered rows
    pieces = Pieces(data, 100)
    tiles = pillow_cut.cut_pieces(pieces, 192, 128, META_CUTS, 64, PNG1, None, pieces.sent.append)
    assert pieces.sent == [tiles[META_CUTS[0][:3]]]
    for (_, row, col), tile in tiles.items():
        expected = image.crop((64 * col, 64 * row, 64 * col + 64, 64 * row + 64))
        assert Image.open(io.BytesIO(tile)).tobytes() == expected.tobytes()


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_an_answer_that_ends_early_gives_no_tile(keep: float) -> None:
    data = png_of(metatile_image("RGB"), True)
    pieces = Pieces(data[: int(len(data) * keep)], 50)
    with pytest.raises(NotAnImage):
        pillow_cut.cut_pieces(pieces, 192, 128, META_CUTS, 64, PNG1, None, pieces.sent.append)
    assert pieces.sent == []


def test_an_answer_of_another_size_is_refused() -> None:
    data = png_of(metatile_image("RGB"), True)
    with pytest.raises(NotAnImage, match="192x128 pixels instead of 192x192"):
        pillow_cut.cut_pieces(Pieces(data, 1000), 192, 192, META_CUTS, 64, PNG1)


def read_all(address: str, out: list[object]) -> None:
    try:
        reader = FeedReader(address)
        try:
            out.extend(reader.rest())
        finally:
            reader.close()
    except FeedBroken as exc:
        out.append(exc)


async def test_the_feed_carries_the_pieces_written_before_and_after_the_reader_came() -> None:
    feed = FeedServer()
    feed.write(b"a" * 100_000)
    got: list[object] = []
    reader = threading.Thread(target=read_all, args=(feed.address, got))
    reader.start()
    feed.write(b"b")
    feed.write(b"")  # nothing: not the end
    feed.write(b"c" * 3)
    feed.end()
    await asyncio.to_thread(reader.join)
    assert [bytes(p) for p in got] == [b"a" * 100_000, b"b", b"ccc"]  # type: ignore[arg-type]


async def test_a_feed_stopped_before_its_end_breaks_off_for_the_reader() -> None:
    feed = FeedServer()
    got: list[object] = []
    connected = FeedReader(feed.address)  # connects before the abort
    feed.write(b"piece")
    feed.abort()
    with pytest.raises(FeedBroken):
        await asyncio.to_thread(connected.rest)
    connected.close()
    # A reader that comes after the abort finds nobody.
    await asyncio.to_thread(read_all, feed.address, got)
    assert len(got) == 1 and isinstance(got[0], FeedBroken)


STYLE = '<Map srs="epsg:3857" background-color="#ffffff"></Map>'


@pytest.fixture
async def pool(tmp_path: Path) -> MapnikRenderer:
    renderer = MapnikRenderer([], processes=1)
    await renderer.start()
    yield renderer  # type: ignore[misc]
    await renderer.close()


def wms_layer(tmp_path: Path):  # type: ignore[no-untyped-def]
    return single_layer(tmp_path, STYLE, name="wms", meta_size=2, meta_buffer=0)


@pytest.mark.skipif(not image_feed.AVAILABLE, reason="abstract Unix sockets are Linux's")
async def test_the_render_pool_cuts_an_answer_fed_as_it_is_read(
    pool: MapnikRenderer, tmp_path: Path
) -> None:
    layer = wms_layer(tmp_path)
    metatile = metatile_for(grid=layer.grid, coord=TileCoord(5, 3, 4), meta_size=2, meta_buffer=0)
    image = Image.new("RGB", (512, 512), (10, 20, 30))
    image.paste((200, 100, 0), (256, 256, 512, 512))
    data = png_of(image, True)
    whole = await pool.cut(layer, metatile, data)
    sent: list[bytes] = []
    fed = pool.cut_as_read(layer, metatile, first=TileCoord(5, 3, 5), on_first=sent.append)
    assert fed is not None
    assert pool.cut_as_read(layer, metatile) is None  # its one process has a job
    for i in range(0, len(data), 333):
        fed.write(data[i : i + 333])
    tiles = await fed.tiles()
    assert tiles.keys() == whole.keys()
    for coord, tile in tiles.items():
        assert pixels(tile) == pixels(whole[coord])
    assert sent == [tiles[TileCoord(5, 3, 5)]]
    assert tiles.uniform == {  # type: ignore[attr-defined]
        TileCoord(5, 2, 4): (10, 20, 30, 255),
        TileCoord(5, 2, 5): (10, 20, 30, 255),
        TileCoord(5, 3, 4): (10, 20, 30, 255),
        TileCoord(5, 3, 5): (200, 100, 0, 255),
    }

    # An answer that breaks off: no tile, and the process is free again at once.
    sent.clear()
    fed = pool.cut_as_read(layer, metatile, first=TileCoord(5, 3, 5), on_first=sent.append)
    assert fed is not None
    fed.write(data[: len(data) - 20])
    fed.abort()
    taken: list[image_feed.FedJob[RenderedTiles]] = []

    def taken_again() -> bool:  # the aborted job ends once its process reads the end
        taken.extend(c for c in [pool.cut_as_read(layer, metatile)] if c is not None)
        return bool(taken)

    await async_wait_until(taken_again, "the process free again after the abort", interval=0.01)
    again = taken[0]
    again.write(data[: len(data) // 2])  # whole as far as HTTP says, but a broken PNG
    with pytest.raises(InvalidImage, match="not a readable image"):
        await again.tiles()
    assert sent == []


@pytest.mark.skipif(not image_feed.AVAILABLE, reason="abstract Unix sockets are Linux's")
async def test_the_render_pool_answers_a_top_tile_before_the_rest_of_the_answer(
    pool: MapnikRenderer, tmp_path: Path
) -> None:
    """Answer first through the render pool: the tile asked for, in the top row of tiles,
    comes back while the bottom of the answer has not been written yet; its pixels are
    those of the whole answer's cut, and it is not sent again."""
    layer = wms_layer(tmp_path)
    metatile = metatile_for(grid=layer.grid, coord=TileCoord(5, 3, 4), meta_size=2, meta_buffer=0)
    image = metatile_image("RGB").resize((512, 512))  # as busy at the top as at the bottom
    data = split_idat(png_of(image, True), 1024)
    whole = await pool.cut(layer, metatile, data)
    sent: list[bytes] = []
    top = TileCoord(5, 2, 4)
    fed = pool.cut_as_read(layer, metatile, first=top, on_first=sent.append)
    assert fed is not None
    part = len(data) * 3 // 4  # the top half's rows, and more
    fed.write(data[:part])
    await async_wait_until(lambda: sent, "the top tile, from the first part of the answer")
    assert pixels(sent[0]) == pixels(whole[top])
    fed.write(data[part:])
    tiles = await fed.tiles()
    assert sent == [tiles[top]]
    assert tiles.keys() == whole.keys()
    for coord, tile in tiles.items():
        assert pixels(tile) == pixels(whole[coord])
