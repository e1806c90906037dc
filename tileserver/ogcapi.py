"""OGC API - Tiles 1.0 (OGC 20-057) documents: landing page, conformance, tile matrix
sets, collections, tileset lists and tileset metadata (TMS 2.0, OGC 17-083r4).

Pure functions of the configuration and the API's public URL; no I/O. Every layer is a
collection with map tiles (`/collections/{layer}/map/tiles`), one tileset per grid it is
served on. Links are absolute, `application/json` is the only metadata representation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tileserver.config import Config, Layer
from tileserver.crs import bbox_to_wgs84
from tileserver.grid import Grid
from tileserver.tilematrixsets import (
    CRS84,
    TileMatrixSets,
    crs_uri,
    is_web_mercator_quad,
    layer_grids,
    tile_matrix_set_document,
    tile_matrix_sets,
)

JSON = "application/json"
PREFIX = "/ogcapi"

_REL = "http://www.opengis.net/def/rel/ogc/1.0/"
_CONF = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"
_FORMAT_CLASSES = {"image/png": "png", "image/jpeg": "jpeg"}
# The query of a tile matrix set's definition with TMS 1.0's member names too.
TMS1_COMPATIBLE = "compatibility=tms-1.0"


def _link(href: str, rel: str, media_type: str, title: str, **extra: Any) -> dict[str, Any]:
    return {"href": href, "rel": rel, "type": media_type, "title": title, **extra}


def _segment(name: str) -> str:
    return quote(name, safe="")


@dataclass(frozen=True, slots=True)
class OgcApi:
    """The documents of one configuration, for clients that reach it at `url`
    (`{public URL}/ogcapi`, no trailing slash)."""

    config: Config
    url: str
    sets: TileMatrixSets

    @classmethod
    def of(cls, config: Config, base_url: str) -> OgcApi:
        grids = [g for layer in config.layers.values() for g in layer_grids(layer)]
        # Grids used by no layer are not tile matrix sets of the API.
        used = {g.name for g in grids}
        ordered = [g for g in config.grids.values() if g.name in used]
        return cls(config, base_url.rstrip("/") + PREFIX, tile_matrix_sets(ordered))

    # --- paths ---------------------------------------------------------------------------

    def collection_url(self, layer: Layer) -> str:
        return f"{self.url}/collections/{_segment(layer.name)}"

    def tileset_url(self, layer: Layer, grid: Grid) -> str:
        return f"{self.collection_url(layer)}/map/tiles/{_segment(self.sets.id_of(grid))}"

    def tms_url(self, tms_id: str) -> str:
        return f"{self.url}/tileMatrixSets/{_segment(tms_id)}"

    # --- documents -----------------------------------------------------------------------

    def landing_page(self) -> dict[str, Any]:
        metadata = self.config.metadata
        page: dict[str, Any] = {"title": metadata.title}
        if metadata.abstract:
            page["description"] = metadata.abstract
        page["links"] = [
            _link(f"{self.url}/", "self", JSON, "This document"),
            _link(f"{self.url}/conformance", "conformance", JSON, "Conformance classes"),
            _link(f"{self.url}/conformance", _REL + "conformance", JSON, "Conformance classes"),
            _link(f"{self.url}/collections", "data", JSON, "The layers, as collections"),
            _link(f"{self.url}/collections", _REL + "data", JSON, "The layers, as collections"),
            _link(f"{self.url}/tileMatrixSets", _REL + "tiling-schemes", JSON, "Tile matrix sets"),
        ]
        return page

    def conformance(self) -> dict[str, Any]:
        classes = ["core", "tileset", "tilesets-list", "geodata-tilesets"]
        formats = {_FORMAT_CLASSES.get(layer.mime_type) for layer in self.config.layers.values()}
        classes += sorted(f for f in formats if f is not None)
        return {"conformsTo": [_CONF + c for c in classes]}

    def tile_matrix_sets(self) -> dict[str, Any]:
        items = []
        for tms_id, grid in self.sets.by_id.items():
            item: dict[str, Any] = {"id": tms_id, "title": tms_id}
            known = self.sets.well_known(tms_id)
            if known is not None:
                item["title"] = known.title
                item["uri"] = known.uri
            item["crs"] = crs_uri(grid.srs)
            item["links"] = [_link(self.tms_url(tms_id), "self", JSON, f"{tms_id} definition")]
            items.append(item)
        return {
            "links": [_link(f"{self.url}/tileMatrixSets", "self", JSON, "Tile matrix sets")],
            "tileMatrixSets": items,
        }

    def tile_matrix_set(self, tms_id: str, tms1_members: bool = False) -> dict[str, Any] | None:
        grid = self.sets.by_id.get(tms_id)
        if grid is None:
            return None
        return tile_matrix_set_document(grid, tms_id, tms1_members)

    def collections(self) -> dict[str, Any]:
        return {
            "links": [_link(f"{self.url}/collections", "self", JSON, "The layers")],
            "collections": [self.collection(layer) for layer in self.config.layers.values()],
        }

    def collection(self, layer: Layer) -> dict[str, Any]:
        wgs84 = bbox_to_wgs84(layer.bbox, layer.grid.srs)
        url = self.collection_url(layer)
        document: dict[str, Any] = {"id": layer.name, "title": layer.title}
        if layer.abstract:
            document["description"] = layer.abstract
        document["extent"] = {"spatial": {"bbox": [list(wgs84.as_tuple())], "crs": CRS84}}
        document["dataType"] = "map"
        document["crs"] = [CRS84, *dict.fromkeys(crs_uri(g.srs) for g in layer_grids(layer))]
        document["links"] = [
            _link(url, "self", JSON, layer.title),
            _link(f"{url}/map/tiles", _REL + "tilesets-map", JSON, f"Map tiles of {layer.title}"),
        ]
        return document

    def _tileset_item(self, layer: Layer, grid: Grid) -> dict[str, Any]:
        tms_id = self.sets.id_of(grid)
        item: dict[str, Any] = {"title": f"{layer.title} ({tms_id})", "dataType": "map"}
        item["crs"] = crs_uri(grid.srs)
        known = self.sets.well_known(tms_id)
        if known is not None:
            item["tileMatrixSetURI"] = known.uri
        item["links"] = [
            _link(self.tileset_url(layer, grid), "self", JSON, f"{tms_id} tileset"),
            _link(self.tms_url(tms_id), _REL + "tiling-scheme", JSON, f"{tms_id} definition"),
            # Last: GDAL 3.7+ reads the first JSON tiling scheme, GDAL 3.6 the last one, and
            # knows only TMS 1.0's member names (see tile_matrix_set_document).
            _link(f"{self.tms_url(tms_id)}?{TMS1_COMPATIBLE}", _REL + "tiling-scheme", JSON,
                  f"{tms_id} definition, with TMS 1.0's member names too (GDAL < 3.7)"),
        ]  # fmt: skip
        return item

    def tilesets(self, layer: Layer) -> dict[str, Any]:
        url = f"{self.collection_url(layer)}/map/tiles"
        return {
            "links": [_link(url, "self", JSON, f"Map tilesets of {layer.title}")],
            "tilesets": [self._tileset_item(layer, grid) for grid in layer_grids(layer)],
        }

    def tileset(self, layer: Layer, grid: Grid, tile_extension: str) -> dict[str, Any]:
        """The tileset metadata of layer on grid, with its TileMatrixSetLimits (every level
        the layer's bbox covers) and its tile URL template."""
        document = self._tileset_item(layer, grid)
        if layer.abstract:
            document["description"] = layer.abstract
        document["mediaTypes"] = [layer.mime_type]
        crs = document["crs"]
        box = layer.bbox
        corners = [(box.minx, box.miny), (box.maxx, box.maxy)]
        if grid.yx_axis_order:
            corners = [(y, x) for x, y in corners]
        document["boundingBox"] = {
            "lowerLeft": list(corners[0]), "upperRight": list(corners[1]), "crs": crs,
        }  # fmt: skip
        document["tileMatrixSetLimits"] = list(self._limits(layer, grid))
        template = (
            f"{self.tileset_url(layer, grid)}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"
            f".{tile_extension}"
        )
        document["links"] += [
            _link(template, "item", layer.mime_type, "Tiles", templated=True),
            _link(self.collection_url(layer), _REL + "geodata", JSON, layer.title),
        ]
        if is_web_mercator_quad(grid):
            tilejson = f"{self.url.removesuffix(PREFIX)}/xyz/{_segment(layer.name)}"
            document["links"].append(
                _link(f"{tilejson}/{_segment(grid.name)}/tilejson.json", "alternate",
                      "application/vnd.mapbox.tilejson+json", "TileJSON 3.0")
            )  # fmt: skip
        return document

    def _limits(self, layer: Layer, grid: Grid) -> Iterable[dict[str, Any]]:
        """Every level where the layer's bbox is at least a pixel wide and high: coarser
        ones show it as less than a pixel, and GDAL before 3.7 fails on them."""
        box = layer.bbox
        for z, resolution in enumerate(grid.resolutions):
            if box.maxx - box.minx < resolution or box.maxy - box.miny < resolution:
                continue
            limits = grid.limits(z, box)
            yield {
                "tileMatrix": grid.matrix_id(z),
                "minTileRow": limits.min_row,
                "maxTileRow": limits.max_row,
                "minTileCol": limits.min_col,
                "maxTileCol": limits.max_col,
            }


def problem(status: int, title: str, detail: str, code: str) -> dict[str, Any]:
    """An OGC API exception (RFC 7807 problem details; `code` is the OGC exception code,
    an extension member)."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "code": code}  # fmt: skip
