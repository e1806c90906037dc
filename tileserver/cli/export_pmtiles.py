"""`generate_controller --export-pmtiles OUT.pmtiles`: the stored tiles of one layer,
from its cache (or --cache), written into one PMTiles archive (e.g. for a CDN)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tileserver import composition
from tileserver.cli.common import CommandError
from tileserver.config import CacheConfig, Config, Layer
from tileserver.selection import format_zooms


async def export(
    config: Config,
    layer: Layer,
    cache: CacheConfig,
    zooms: tuple[int, ...],
    target: Path,
    info: Callable[[str], None],
) -> None:
    """Writes the layer's tiles of levels zooms from cache into the archive at target."""
    from tileserver.services.pmtiles_export import export_layer

    store = composition.tile_store(cache, config)
    await store.open()
    try:
        writer, order = composition.pmtiles_writer(target)
        stats = await export_layer(layer, store, zooms, writer, order)
    except ValueError as exc:
        raise CommandError(f"--export-pmtiles: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"--export-pmtiles: {target}: {exc.strerror or exc}") from exc
    finally:
        await store.close()
    levels = format_zooms(stats.levels)
    info(f"wrote {stats.tiles} tiles ({stats.bytes} bytes) of layer {layer.name}, "
         f"levels {levels}, from cache {cache.name} into {target}")  # fmt: skip
