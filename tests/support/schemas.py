"""Validation against the official OGC schemas (WMTS 1.0.0, OWS 1.1), copied into
tests/data/schemas (see its README for their source and licence): validation always
runs, offline, in a plain clone as in CI."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lxml import etree

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "schemas"

# The schemas import each other by their official URLs: each prefix maps to a folder here.
_PREFIXES = {
    "http://schemas.opengis.net/wmts/1.0/": "wmts/1.0.0/",
    "http://schemas.opengis.net/ows/1.1.0/": "ows/1.1.0/",
    "http://schemas.opengis.net/gml/3.1.1/": "gml/3.1.1/",
    "http://www.w3.org/1999/xlink.xsd": "w3c/1999/xlink.xsd",
    "http://www.w3.org/2001/xml.xsd": "w3c/2001/xml.xsd",
}


class _LocalSchemas(etree.Resolver):  # type: ignore[misc]
    def resolve(self, url: str, pubid: str, context: object) -> object:
        for prefix, local in _PREFIXES.items():
            if url.startswith(prefix):
                return self.resolve_filename(str(SCHEMAS / (local + url[len(prefix) :])), context)
        return None  # no_network: anything else is an error of the schema parse


@lru_cache(maxsize=4)
def _schema(entry: str) -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_LocalSchemas())
    return etree.XMLSchema(etree.parse(str(SCHEMAS / entry), parser))


def _validate(entry: str, document: bytes) -> None:
    schema = _schema(entry)
    tree = etree.fromstring(document)
    if not schema.validate(tree):
        errors = "\n".join(str(e) for e in list(schema.error_log)[:10])
        raise AssertionError(f"not valid against {entry}:\n{errors}")


def validate_capabilities(document: bytes) -> None:
    _validate("wmts/1.0.0/wmtsGetCapabilities_response.xsd", document)


def validate_exception_report(document: bytes) -> None:
    _validate("ows/1.1.0/owsExceptionReport.xsd", document)
