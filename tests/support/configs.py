"""Small configurations built in tests: one Web Mercator grid and one Mapnik layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tileserver.config import Layer, parse_config

MERC = 20037508.342789244  # half the width of the Web Mercator world, in metres


def mercator_grid(levels: int = 20) -> dict[str, Any]:
    """The GoogleMapsCompatible grid as a `grids` entry."""
    return {
        "srs": "EPSG:3857",
        "bbox": [-MERC, -MERC, MERC, MERC],
        "resolutions": [156543.03392804097 / 2**z for z in range(levels)],
    }


def single_layer(
    tmp_path: Path, style: str = "<Map/>", name: str = "l", levels: int = 20, **options: Any
) -> Layer:
    """A validated mapnik layer on grid 'g' (and 'h', the same grid, where `grids` names
    it), its style written to tmp_path."""
    mapfile = tmp_path / "style.xml"
    mapfile.write_text(style)
    config = parse_config(
        {
            "grids": {"g": mercator_grid(levels), "h": mercator_grid(levels)},
            "layers": {name: {"type": "mapnik", "mapfile": str(mapfile), "grid": "g", **options}},
        },
        tmp_path,
    )
    return config.layers[name]
