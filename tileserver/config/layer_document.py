"""The document's grids, caches and layers (with their dimensions, empty-tile detection,
geoms and cost): see `document.py` for why the document is pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from tileserver.config.doc_fields import (
    UTFGRID_MARK,
    WMS_ONLY,
    Flag,
    Int,
    Number,
    Scalar,
    Section,
    Text,
    enum,
    no_effect,
)


class GridDoc(Section):
    """A TileMatrixSet: a CRS, a bbox whose top-left corner is the origin, resolutions."""

    srs: Text = Field(description="The CRS, e.g. 'EPSG:3857'")
    bbox: list[Number] = Field(description="[minx, miny, maxx, maxy] in the CRS")
    resolutions: list[Number] = Field(description="From the largest to the smallest")
    tile_size: Int = Field(256, ge=1, description="Tile width and height in pixels")
    matrix_identifier: Text = Field(
        "zoom",
        description="TileMatrix identifiers: the level ('0'), or TileCloud-chain's "
        "resolution identifier ('2_5' for 2.5)",
        json_schema_extra=enum("zoom", "resolution"),
    )
    unit: Text | None = Field(None, description="'m' or 'degrees'; checked against the CRS")
    name: Text | None = no_effect("TileCloud-chain 1.x; the key under `grids` names the grid")
    resolution_scale: Int | None = no_effect()
    proj4_literal: Text | None = no_effect()


class CacheDoc(Section):
    """A tile store: a folder (`filesystem`), an S3 bucket (`s3`), MBTiles or GeoPackage
    files (`mbtiles`, `geopackage`: one `file`, or a file per layer under `folder`), or a
    PMTiles archive, read-only (`pmtiles`: a `file` or a `url`)."""

    type: Text = Field(
        json_schema_extra=enum("filesystem", "s3", "mbtiles", "geopackage", "pmtiles")
    )
    folder: Text | None = Field(
        None,
        description="The store's root folder (prefix in S3); mbtiles, geopackage: where "
        "the file of each layer goes (TileCloud-chain's names)",
    )
    file: Text | None = Field(
        None,
        description="mbtiles: the file of the one layer using the cache; geopackage: the "
        "file of every layer using it; pmtiles: the archive",
    )
    url: Text | None = Field(
        None, description="pmtiles: the archive's http(s) URL (read with range requests)"
    )
    bucket: Text | None = Field(None, description="s3: the bucket")
    region: Text = Field("", description="s3: the bucket's region")
    endpoint_url: Text = Field("", description="s3: an S3-compatible endpoint")
    host: Text | None = Field(
        None,
        description="s3 (TileCloud-chain): the S3 host; the endpoint when endpoint_url is "
        "not set, and the value of %(host)s in http_url without `hosts`",
    )
    cache_control: Text = Field("", description="s3: Cache-Control of the tiles written")
    http_url: Text = Field(
        "",
        description="Public URL of the store's root; %(host)s, %(bucket)s and %(folder)s "
        "are replaced (one URL per entry of `hosts`)",
    )
    http_urls: list[Text] | Text = Field(default_factory=list, description="Public URLs")
    hosts: list[Text] = Field(default_factory=list, description="The values of %(host)s")
    wmtscapabilities_file: Text = Field(
        "1.0.0/WMTSCapabilities.xml",
        description="Where generate_controller writes the static Capabilities, in the store",
    )
    tiles_url: Text | None = no_effect()
    container: Text | None = no_effect("TileCloud-chain's Azure container (type azure)")


class DimensionDoc(Section):
    name: Text
    values: list[Text] | Text
    default: Text
    generate: list[Text] | Text | None = Field(
        None, description="The values generate_tiles renders (default: `default`)"
    )


class EmptyTileDoc(Section):
    """TileCloud-chain's size and hash of an empty tile's bytes, and (tileserver's) its
    colour: either, or both."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": ["size", "hash"]}, {"required": ["color"]}],
            "dependentRequired": {"size": ["hash"], "hash": ["size"]},
        }
    )

    size: Int | None = Field(None, ge=0, description="Size in bytes")
    hash: Text | None = Field(None, description="SHA-1 of the bytes, hexadecimal")
    color: Text | None = Field(
        None,
        description="A tile all of this colour is empty whatever its bytes: 'transparent', "
        "'#rrggbb' or '#rrggbbaa'",
    )


class GeomDoc(Section):
    file: Text | None = Field(None, description="A GeoJSON or WKT file")
    sql: Text | None = Field(None, description="'geom FROM table', run on PostGIS")
    connection: Text | None = Field(None, description="libpq connection string")
    min_resolution: Number | None = Field(None, gt=0)
    max_resolution: Number | None = Field(None, gt=0)
    datasource: Text | None = no_effect()


class LayerCostDoc(Section):
    """Per-layer `cost` (TileCloud-chain's): overrides the top-level figures."""

    tileonly_generation_time: Number | None = Field(None, ge=0, description="ms")
    tile_generation_time: Number | None = Field(None, ge=0, description="ms")
    metatile_generation_time: Number | None = Field(None, ge=0, description="ms")
    tile_size: Number | None = Field(None, ge=0, description="KiB")


def _keys_may_come_from_layer_default(schema: dict[str, Any]) -> None:
    schema.pop("required", None)


class LayerDoc(Section):
    """A layer, after `layer_default` (and YAML merge keys) are merged into it."""

    model_config = ConfigDict(json_schema_extra=_keys_may_come_from_layer_default)

    type: Text = Field(
        "wms",
        description="mapnik or wms; absent: wms, TileCloud-chain 1.x's default (a layer with "
        "a `mapfile` must say `mapnik`)",
        json_schema_extra=enum("mapnik", "wms"),
    )
    title: Text | None = None
    abstract: Text = ""
    grid: Text | None = Field(None, description="The layer's grid (TileMatrixSet)")
    grids: list[Text] | None = Field(None, description="Several grids (TileCloud-chain >= 1.23)")
    bbox: list[Number] | None = Field(None, description="Default: the grid's")
    mapfile: Text | None = Field(None, description="mapnik: the Mapnik XML style")
    meta: Flag = True
    meta_size: Int = Field(8, ge=1)
    meta_buffer: Int = Field(32, ge=0, description="Pixels rendered around a metatile")
    mime_type: Text | None = None
    extension: Text = Field("png", json_schema_extra=enum("png", "jpeg", "jpg"))
    output_format: Text | None = Field(None, description="The encoder, e.g. png, png256, jpeg85")
    wmts_style: Text = "default"
    dimensions: list[DimensionDoc] = Field(default_factory=list)
    expires: Number = Field(4.0, gt=0, description="Hours a tile is cached")
    stale_while_revalidate: Int = Field(
        0, ge=0, description="Seconds past `expires` a cached tile is answered at once while "
        "one background render refreshes it (RFC 5861; 0: off)",
    )  # fmt: skip
    stale_if_error: Int = Field(
        0, ge=0, description="Seconds past `expires` a cached tile is answered when its render "
        "fails (WMS or database down, render timeout) instead of a 503 (RFC 5861; 0: off)",
    )  # fmt: skip
    min_resolution_seed: Number | None = Field(None, gt=0)
    missing_tile: Text = Field(
        "render", json_schema_extra=enum("render", "no_content", "transparent")
    )
    cache: Text | None = Field(None, description="Default: generation.default_cache")
    empty_tile_detection: EmptyTileDoc | None = None
    empty_metatile_detection: EmptyTileDoc | None = None
    geoms: list[GeomDoc] = Field(default_factory=list)
    connection: Text = Field("", description="mapnik: replaces the style's PostGIS settings")
    px_buffer: Number = Field(
        0, ge=0, description="Pixels added around `geoms` when selecting tiles to generate"
    )
    data_buffer: Int | None = Field(
        None, ge=0, description="mapnik: pixels of data read around a metatile (buffer-size)"
    )
    cost: LayerCostDoc | None = None
    # type: wms (WMS_ONLY: refused on a layer of another type that sets it itself)
    url: Text | None = Field(None, description="wms: the WMS URL", json_schema_extra=WMS_ONLY)
    layers: Text | None = Field(
        None, description="wms: the LAYERS parameter", json_schema_extra=WMS_ONLY
    )
    version: Text = Field("1.1.1", json_schema_extra=enum("1.1.1", "1.3.0"))
    params: dict[str, Scalar] = Field(default_factory=dict, json_schema_extra=WMS_ONLY)
    headers: dict[str, Scalar] = Field(default_factory=dict, json_schema_extra=WMS_ONLY)
    generate_salt: Flag = False
    timeout: Number = Field(30.0, gt=0)
    retries: Int = Field(2, ge=0)
    query_layers: Text = Field("", json_schema_extra=WMS_ONLY)
    info_formats: list[Text] | Text | None = Field(None, json_schema_extra=WMS_ONLY)
    # TileCloud-chain's, without effect here
    wms_url: Text | None = no_effect()
    legends: Any = no_effect()
    legend: Any = no_effect()
    legend_mime: Any = no_effect()
    legend_extension: Any = no_effect()
    legend_extention: Any = no_effect()
    pre_hash_post_process: Any = no_effect()
    post_process: Any = no_effect()
    meta_save_options: Any = no_effect()
    force_tile_matrix_set_limits: Any = no_effect()
    geom_filter: Any = no_effect()
    srs: Any = no_effect()
    proj4_literal: Any = no_effect()
    # UTFGrid (TileCloud-chain's), a feature tileserver does not offer
    layers_fields: Any = no_effect("UTFGrid (not offered by tileserver)", UTFGRID_MARK)
    drop_empty_utfgrid: Any = no_effect("UTFGrid (not offered by tileserver)", UTFGRID_MARK)
    resolution: Any = no_effect("UTFGrid (not offered by tileserver)", UTFGRID_MARK)
