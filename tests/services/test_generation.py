"""TileGenerator with a fake renderer and a real FilesystemStore: the tiles written,
empty tiles, retries, the error file, resuming from the state file, stopping."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from shapely import MultiPolygon, box

from tests.support.configs import single_layer
from tests.support.fakes import EMPTY, FakeRenderer
from tileserver.adapters.filesystem_store import FilesystemStore
from tileserver.config import Layer
from tileserver.empty_tiles import signature
from tileserver.errors import StoreOutage, StoreUnavailable
from tileserver.grid import Metatile
from tileserver.selection import (
    MetatileRef,
    metatile_ref,
    metatiles_in_bbox,
    metatiles_in_geometry,
    read_tile_list,
)
from tileserver.services.generation import GenerationStats, MetatileOutcome, TileGenerator
from tileserver.services.run_files import read_state
from tileserver.services.tile_filters import tiles_in_bbox, tiles_in_geometry
from tileserver.types import BBox, RenderedTiles, TileCoord

Z = 5


class CountingStore(FilesystemStore):
    """A folder store that counts its batch calls, and can fail its first writes."""

    def __init__(self, root: Path, failing_writes: int = 0) -> None:
        super().__init__(root)
        self.calls: Counter[str] = Counter()
        self.failing_writes = failing_writes

    async def put_many(self, items: Mapping[str, bytes], content_type: str) -> None:
        self.calls["put_many"] += 1
        assert content_type == "image/png"
        if self.failing_writes:
            self.failing_writes -= 1
            raise StoreUnavailable("disk full")
        await super().put_many(items, content_type)

    async def delete_many(self, paths: Iterable[str]) -> None:
        self.calls["delete_many"] += 1
        await super().delete_many(paths)

    async def files(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        async for path in self.list_paths(""):
            data = await self.get(path)
            assert data is not None
            found[path] = data
        return found


def make_layer(tmp_path: Path, **options: object) -> Layer:
    return single_layer(
        tmp_path,
        levels=10,
        meta_size=2,
        dimensions=[{"name": "D", "values": ["a", "b"], "default": "b"}],
        **options,
    )


@pytest.fixture
def layer(tmp_path: Path) -> Layer:
    detection = signature(EMPTY)
    return make_layer(
        tmp_path, empty_tile_detection={"size": detection.size, "hash": detection.hash}
    )


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "tiles")


def path(row: int, col: int, z: int = Z) -> str:
    return f"1.0.0/l/default/b/g/{z}/{row}/{col}.png"


def tiles_bbox(layer: Layer, rows: range, cols: range) -> BBox:
    """A bbox just inside the tiles rows x cols (so it touches no other tile)."""
    grid = layer.grid
    top_left = grid.tile_bbox(TileCoord(Z, rows[0], cols[0]))
    bottom_right = grid.tile_bbox(TileCoord(Z, rows[-1], cols[-1]))
    pad = grid.tile_span(Z) / 100
    return BBox(
        top_left.minx + pad, bottom_right.miny + pad, bottom_right.maxx - pad, top_left.maxy - pad
    )


def generator(
    layer: Layer, renderer: FakeRenderer, store: CountingStore, **options: Any
) -> TileGenerator:
    """A generator that retries at once."""
    return TileGenerator(layer, renderer, store, **{"backoff": 0.0, **options})


async def test_writes_exactly_the_wanted_tiles_one_put_many_per_metatile(
    layer: Layer, store: CountingStore
) -> None:
    # Rows 10-12 and columns 20-22: four 2x2 metatiles, of which 9 tiles are wanted.
    bbox = tiles_bbox(layer, range(10, 13), range(20, 23))
    refs = list(metatiles_in_bbox(layer.grid, Z, bbox, 2))
    assert refs == [MetatileRef(Z, 10, 20), MetatileRef(Z, 10, 22),
                    MetatileRef(Z, 12, 20), MetatileRef(Z, 12, 22)]  # fmt: skip
    renderer = FakeRenderer()
    stats = await generator(layer, renderer, store, wanted=tiles_in_bbox(layer.grid, bbox)).run(
        refs
    )

    files = await store.files()
    assert set(files) == {path(r, c) for r in range(10, 13) for c in range(20, 23)}
    # The dimension's default value is rendered, and names the folder.
    assert files[path(11, 21)] == b"5/11/21 {'D': 'b'}"
    assert store.calls == {"put_many": 4}
    assert (stats.done, stats.failed, stats.skipped, stats.metatiles) == (4, 0, 0, 4)
    assert (stats.tiles_written, stats.empty_dropped) == (9, 0)
    assert renderer.encoded == 9  # of the 16 tiles rendered: the others are not encoded
    assert not stats.interrupted
    assert stats.tiles_per_second > 0
    assert stats.summary().startswith("generated: 4 metatiles, 9 tiles written, 0 empty dropped")


async def test_a_geometry_filter_keeps_the_tiles_that_touch_it(
    layer: Layer, store: CountingStore
) -> None:
    grid = layer.grid
    # Two small squares, in tiles (10, 20) and (11, 21) of the 2x2 metatile at (10, 20).
    squares = [grid.tile_bbox(TileCoord(Z, 10, 20)), grid.tile_bbox(TileCoord(Z, 11, 21))]
    pad = grid.tile_span(Z) / 4
    line = MultiPolygon(
        [box(b.minx + pad, b.miny + pad, b.maxx - pad, b.maxy - pad) for b in squares]
    )
    refs = list(metatiles_in_geometry(grid, Z, line, 2, layer.bbox))
    assert refs == [MetatileRef(Z, 10, 20)]
    wanted = tiles_in_geometry(grid, line, layer.bbox)
    await generator(layer, FakeRenderer(), store, wanted=wanted).run(refs)
    assert set(await store.files()) == {path(10, 20), path(11, 21)}


async def test_empty_tiles_are_dropped_and_deleted_from_the_store(
    layer: Layer, store: CountingStore
) -> None:
    empty = [TileCoord(Z, 10, 20), TileCoord(Z, 11, 21), TileCoord(Z, 12, 22)]
    # An older run (without empty_tile_detection) stored some of them.
    await store.put_many({path(10, 20): EMPTY, path(12, 22): EMPTY}, "image/png")
    store.calls.clear()
    refs = [MetatileRef(Z, 10, 20), MetatileRef(Z, 12, 22)]
    stats = await generator(layer, FakeRenderer(empty=empty), store).run(refs)

    files = await store.files()
    assert set(files) == {path(10, 21), path(11, 20), path(12, 23), path(13, 22), path(13, 23)}
    assert EMPTY not in files.values()
    assert (stats.tiles_written, stats.empty_dropped) == (5, 3)
    assert store.calls == {"put_many": 2, "delete_many": 2}


class UniformRenderer(FakeRenderer):
    """As FakeRenderer, telling (as the real renderers do) that its `empty` tiles are all
    of one colour, `colour`; their bytes are not EMPTY's: another encoder's."""

    def __init__(self, empty: Iterable[TileCoord], colour: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.uniform_tiles, self.colour = set(empty), colour

    async def render(
        self,
        layer: Layer,
        metatile: Metatile,
        dimensions: Mapping[str, str],
        only: Collection[TileCoord] | None = None,
    ) -> dict[TileCoord, bytes]:
        tiles = await super().render(layer, metatile, dimensions, only)
        uniform = {c: self.colour for c in tiles if c in self.uniform_tiles}
        return RenderedTiles(tiles, uniform)


async def test_empty_tiles_are_found_by_their_colour_whatever_their_bytes(
    tmp_path: Path, store: CountingStore
) -> None:
    """The detection's hash is another encoder's (it matches no tile), its colour is the
    render's: the tiles all of it are dropped, those of another colour kept."""
    detection = signature(b"TileCloud-chain's bytes")
    layer = make_layer(tmp_path, empty_tile_detection={
        "size": detection.size, "hash": detection.hash, "color": "transparent"})  # fmt: skip
    transparent = [TileCoord(Z, 10, 20), TileCoord(Z, 11, 21)]
    refs = [MetatileRef(Z, 10, 20)]
    stats = await generator(layer, UniformRenderer(transparent, (9, 9, 9, 0)), store).run(refs)
    assert set(await store.files()) == {path(10, 21), path(11, 20)}
    assert (stats.tiles_written, stats.empty_dropped) == (2, 2)
    # White tiles are not the detection's colour: written.
    stats = await generator(layer, UniformRenderer(transparent, (255,) * 4), store).run(refs)
    assert (stats.tiles_written, stats.empty_dropped) == (4, 0)


async def test_a_metatile_failing_once_is_retried_and_written(
    layer: Layer, store: CountingStore, tmp_path: Path
) -> None:
    refs = [MetatileRef(Z, 10, 20), MetatileRef(Z, 10, 22)]
    renderer = FakeRenderer(failures={refs[1]: 1})
    errors = tmp_path / "errors.txt"
    stats = await generator(layer, renderer, store, error_file=errors).run(refs)
    assert renderer.renders == {refs[0]: 1, refs[1]: 2}
    assert (stats.done, stats.failed, stats.tiles_written) == (2, 0, 8)
    assert not errors.exists()


async def test_maxconsecutive_errors_stops_the_run_but_a_success_between_resets_it(
    layer: Layer, store: CountingStore, tmp_path: Path
) -> None:
    """TileCloud-chain's generation.maxconsecutive_errors: that many metatiles failing one
    after the other (a WMS down) stop the run, resumable; failures apart do not."""
    refs = [MetatileRef(Z, 10, c) for c in range(0, 16, 2)]
    failing = {refs[0]: -1, refs[2]: -1, refs[3]: -1, refs[4]: -1, refs[6]: -1}
    state = tmp_path / "run.state"
    stats = await generator(
        layer, FakeRenderer(failures=failing), store, retries=0, concurrency=1,
        max_consecutive_errors=3, state_file=state,
    ).run(refs)  # fmt: skip
    # 0 fails, 1 done (reset), 2-3-4 fail: the third in a row stops the run.
    assert (stats.done, stats.failed) == (1, 4)
    assert stats.interrupted and stats.too_many_errors is not None
    assert stats.too_many_errors.startswith(
        "3 metatiles failed in a row (generation.maxconsecutive_errors: 3), the last: "
        "RenderError: no data at 5/10/8 second line"
    )
    assert read_state(state, layer.name, 2) == {refs[1]}
    # Without a limit the run goes to the end.
    stats = await generator(layer, FakeRenderer(failures=failing), store, retries=0).run(refs)
    assert (stats.done, stats.failed, stats.too_many_errors) == (3, 5, None)


async def test_each_grid_and_dimension_value_is_a_tile_set_of_its_own_in_the_state_file(
    tmp_path: Path, store: CountingStore
) -> None:
    layer = make_layer(tmp_path)
    first = generator(layer, FakeRenderer(), store)
    assert first.name == "l"  # the first grid, the default values: as before
    assert generator(layer, FakeRenderer(), store, dimensions={"D": "a"}).name == "l/g/a"
    state = tmp_path / "run.state"
    refs = [MetatileRef(Z, 10, 20)]
    await generator(layer, FakeRenderer(), store, dimensions={"D": "a"}, state_file=state).run(refs)
    resumed = await generator(layer, FakeRenderer(), store, state_file=state).run(refs)
    assert (resumed.done, resumed.skipped) == (1, 0)  # D=a's tiles are not D=b's


async def test_a_store_failure_is_retried_without_rendering_again(
    layer: Layer, tmp_path: Path
) -> None:
    store = CountingStore(tmp_path / "tiles", failing_writes=2)
    renderer = FakeRenderer()
    stats = await generator(layer, renderer, store).run([MetatileRef(Z, 10, 20)])
    assert renderer.renders == {MetatileRef(Z, 10, 20): 1}
    assert store.calls["put_many"] == 3
    assert (stats.done, stats.failed) == (1, 0)


async def test_a_metatile_that_always_fails_goes_to_the_error_file_and_the_run_goes_on(
    layer: Layer, store: CountingStore, tmp_path: Path
) -> None:
    refs = [MetatileRef(Z, 10, 20), MetatileRef(Z, 10, 22), MetatileRef(Z, 12, 20)]
    renderer = FakeRenderer(failures={refs[1]: -1})
    errors = tmp_path / "errors.txt"
    errors.write_text("# from an earlier run\n")
    outcomes: list[MetatileOutcome] = []
    stats = await generator(
        layer, renderer, store, error_file=errors, retries=2,
        progress=lambda outcome, _: outcomes.append(outcome),
    ).run(refs)  # fmt: skip

    assert renderer.renders[refs[1]] == 3  # one try and two retries
    assert (stats.done, stats.failed, stats.tiles_written) == (2, 1, 8)
    lines = errors.read_text().splitlines()
    assert lines[0] == "# from an earlier run"  # appended, never truncated
    assert lines[1].startswith("5/22/10  # l: RenderError: no data at 5/10/22 second line")
    assert len(lines) == 2
    # The error file replays as a tile list: its tiles lead back to the failed metatile.
    assert [metatile_ref(t, 2) for t in read_tile_list(lines)] == [refs[1]]
    assert sorted((o.ref, o.status, o.tiles) for o in outcomes) == [
        (refs[0], "done", 4), (refs[1], "failed", 4), (refs[2], "done", 4),
    ]  # fmt: skip


async def test_resume_skips_the_metatiles_the_state_file_lists(
    layer: Layer, store: CountingStore, tmp_path: Path
) -> None:
    state = tmp_path / "run.state"
    refs = [MetatileRef(Z, r, c) for r in (10, 12) for c in (20, 22, 24)]
    first_renderer = FakeRenderer()
    first = generator(layer, first_renderer, store, state_file=state, concurrency=1)

    def stop_after_two(_: MetatileOutcome, stats: GenerationStats) -> None:
        if stats.done == 2:
            first.stop()

    first.progress = stop_after_two
    interrupted = await first.run(refs)
    assert interrupted.interrupted
    assert interrupted.done == 2
    assert state.read_text() == "l 5/20/10\nl 5/22/10\n"
    # A run killed while appending a line leaves a partial one, which does not count;
    # another layer's lines are not this layer's.
    with state.open("a") as out:
        out.write("other 5/24/10\nl 5/22/1")  # of 'l 5/22/12'

    second_renderer = FakeRenderer()
    stats = await generator(layer, second_renderer, store, state_file=state).run(refs)
    assert set(second_renderer.renders) == set(refs[2:])
    assert (stats.skipped, stats.done, stats.failed) == (2, 4, 0)
    assert not stats.interrupted
    assert len(await store.files()) == 6 * 4
    assert read_state(state, layer.name, layer.effective_meta_size) == set(
        refs
    )  # lines after the partial one are whole
    assert "l 5/22/1 (partial line, ignored)\n" in state.read_text()


async def test_stop_lets_the_metatiles_in_flight_finish_and_records_them(
    layer: Layer, store: CountingStore, tmp_path: Path
) -> None:
    state = tmp_path / "run.state"
    refs = [MetatileRef(Z, 10, c) for c in range(0, 40, 2)]
    renderer = FakeRenderer(delay=0.05)
    gen = generator(layer, renderer, store, state_file=state, concurrency=3)
    renderer.on_render = lambda: gen.stop() if renderer.in_flight == 3 else None
    stats = await gen.run(refs)
    assert renderer.most_in_flight == 3
    assert stats.interrupted
    assert stats.done == sum(renderer.renders.values()) == 3
    assert len(read_state(state, layer.name, layer.effective_meta_size)) == 3
    assert len(await store.files()) == 3 * 4


async def test_concurrency_bounds_the_renders_in_flight(layer: Layer, store: CountingStore) -> None:
    refs = [MetatileRef(Z, 10, c) for c in range(0, 20, 2)]
    renderer = FakeRenderer(delay=0.02)
    stats = await generator(layer, renderer, store, concurrency=3).run(refs)
    assert renderer.most_in_flight == 3
    assert stats.done == 10


async def test_a_layer_without_empty_detection_writes_every_tile(tmp_path: Path) -> None:
    layer = make_layer(tmp_path)
    store = CountingStore(tmp_path / "tiles")
    stats = await generator(layer, FakeRenderer(empty=[TileCoord(Z, 10, 20)]), store).run(
        [MetatileRef(Z, 10, 20)]
    )
    assert (stats.tiles_written, stats.empty_dropped) == (4, 0)
    assert store.calls == {"put_many": 1}


class FillingStore(CountingStore):
    """A folder store with room for `room` more metatiles, then full (a StoreOutage)."""

    def __init__(self, root: Path, room: int) -> None:
        super().__init__(root)
        self.room = room

    async def put_many(self, items: Mapping[str, bytes], content_type: str) -> None:
        if self.room == 0:
            self.calls["refused"] += 1
            raise StoreOutage(f"{self.root}: write: No space left on device")
        self.room -= 1
        await super().put_many(items, content_type)


async def test_a_store_outage_stops_the_run_at_once_without_failing_a_metatile(
    layer: Layer, tmp_path: Path
) -> None:
    """A store failing as a whole (full, read-only, unreachable) is not a metatile's
    failure: no retry, nothing in the error file; the run stops, resumable."""
    state, errors = tmp_path / "run.state", tmp_path / "errors.txt"
    refs = [MetatileRef(Z, 10, c) for c in range(0, 12, 2)]
    store = FillingStore(tmp_path / "tiles", room=2)
    renderer = FakeRenderer()
    stats = await generator(
        layer, renderer, store, state_file=state, error_file=errors, concurrency=1
    ).run(refs)
    assert stats.store_outage == f"{store.root}: write: No space left on device"
    assert (stats.done, stats.failed, stats.interrupted) == (2, 0, True)
    assert store.calls["refused"] == 1  # not retried
    assert sum(renderer.renders.values()) == 3  # nothing taken after the outage
    assert not errors.exists()
    assert read_state(state, layer.name, layer.effective_meta_size) == set(refs[:2])

    store.room = 100  # space freed
    resumed = await generator(layer, FakeRenderer(), store, state_file=state).run(refs)
    assert (resumed.skipped, resumed.done, resumed.store_outage) == (2, 4, None)
    assert len(await store.files()) == 6 * 4
