"""Validation of OGC API - Tiles JSON documents against the OGC's own schemas, offline.

The schemas are vendored in tests/data/ogc-schemas (see its README): the TMS 2.0 JSON
schemas (tile matrix sets, tilesets) and the bundled OpenAPI definition of OGC API - Tiles
(landing page, conformance, collections, tileset and tile matrix set lists, exceptions).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft201909Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT201909

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "ogc-schemas"
TMS = "https://schemas.opengis.net/tms/2.0/json/"
OPENAPI = "https://schemas.opengis.net/ogcapi/tiles/part1/1.0/openapi/ogcapi-tiles-1.bundled.json"


@lru_cache(maxsize=1)
def _registry() -> Registry[Any]:
    resources = []
    for path in sorted((SCHEMAS / "tms-2.0").glob("*.json")):
        contents = json.loads(path.read_text())
        resource = Resource.from_contents(contents, default_specification=DRAFT201909)
        resources.append((TMS + path.name, resource))
        if "$id" in contents:  # projJSON.json, referenced by its $id too
            resources.append((contents["$id"], resource))
    bundle = json.loads((SCHEMAS / "ogcapi-tiles-1" / "ogcapi-tiles-1.bundled.json").read_text())
    resources.append((OPENAPI, Resource.from_contents(bundle, default_specification=DRAFT201909)))
    return Registry().with_resources(resources)


def _validate(schema_ref: str, document: Any) -> None:
    validator = Draft201909Validator({"$ref": schema_ref}, registry=_registry())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    if errors:
        described = "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
        raise AssertionError(f"not valid against {schema_ref}:\n{described}")


def validate_tms(name: str, document: Any) -> None:
    """Against a TMS 2.0 schema: `tileMatrixSet.json`, `tileSet.json`..."""
    _validate(TMS + name, document)


def validate_openapi(component: str, document: Any) -> None:
    """Against a schema of the OGC API - Tiles definition: `landingPage`, `confClasses`,
    `collections`, `collectionInfo`, `exception`..."""
    _validate(f"{OPENAPI}#/components/schemas/{component}", document)


def validate_collection(document: dict[str, Any]) -> None:
    """Against `collectionInfo`, its `extent` against `extent`.

    The definition types a collection's extent as `extent-uad`: `extent` plus, for every
    further member, the interval of an additional dimension. In JSON Schema that
    `additionalProperties` (in an `allOf` branch of its own) also applies to `spatial`, so
    no extent with a `spatial` member validates. We have no additional dimensions: the
    extent is checked against the schema `extent-uad` extends.
    """
    validate_openapi("extent", document["extent"])
    validate_openapi("collectionInfo", {k: v for k, v in document.items() if k != "extent"})


def validate_openapi_response(response: str, document: Any) -> None:
    """Against the JSON schema of one of the definition's responses: `TileSetsList`,
    `TileMatrixSetsList`..."""
    _validate(
        f"{OPENAPI}#/components/responses/{response}/content/application~1json/schema", document
    )
