"""Reads the geometries of a layer's `geoms` when a generation starts: GeoJSON or WKT
files, and PostGIS queries run as TileCloud-chain runs them,
`SELECT ST_AsBinary(geom) FROM (SELECT <sql>) AS g`, whose rows are unioned.

psycopg is imported here only. Its errors, and those of the files, become GeomsError
messages that start with the entry's YAML path (`layers.osm.geoms[0]: ...`).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import shapely
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from shapely.errors import ShapelyError
from shapely.geometry.base import BaseGeometry

from tileserver.config import LayerGeom
from tileserver.errors import GeomsError
from tileserver.selection import parse_geometry

CONNECT_TIMEOUT = 10  # seconds, unless the connection string or PGCONNECT_TIMEOUT says
_UNDEFINED_COLUMN = "42703"


def load_geometry(geom: LayerGeom, where: str) -> BaseGeometry:
    """The geometry of one `geoms` entry (an empty one when a query returns no row);
    `where` is its YAML path, for the messages."""
    if geom.file is not None:
        return read_file(geom.file, where)
    assert geom.sql is not None  # the config has one of them
    return query(geom.sql, geom.connection, where)


def read_file(path: Path, where: str) -> BaseGeometry:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GeomsError(f"{where}: cannot read {path}: {exc.strerror}") from None
    try:
        return parse_geometry(raw)
    except ValueError as exc:
        raise GeomsError(f"{where}: {path}: {exc}") from None


def statement(select_list: str) -> str:
    """The query run for an `sql` entry (TileCloud-chain's wrapping)."""
    return f"SELECT ST_AsBinary(geom) FROM (SELECT {select_list}) AS g"


def query(select_list: str, connection: str, where: str) -> BaseGeometry:
    """The union of the geometries an `sql` entry selects; NULL rows are skipped."""
    text = statement(select_list)
    try:
        conn = psycopg.connect(_with_timeout(connection), autocommit=True)
    except psycopg.Error as exc:
        raise GeomsError(f"{where}: cannot connect to PostgreSQL: {_one_line(exc)}") from None
    try:
        with conn:
            # The SQL comes from the configuration, as in TileCloud-chain: not user input.
            rows = conn.execute(sql.SQL(text)).fetchall()
    except psycopg.Error as exc:
        message = exc.diag.message_primary or _one_line(exc)
        if exc.sqlstate == _UNDEFINED_COLUMN and '"geom"' in message:
            message += " (name the geometry column geom, as in 'way AS geom FROM ...')"
        raise GeomsError(f"{where}: the query failed: {message}; SQL: {text}") from None
    try:
        parts = [shapely.from_wkb(bytes(row[0])) for row in rows if row[0] is not None]
        return shapely.union_all(parts) if parts else shapely.GeometryCollection()
    except (ShapelyError, TypeError, ValueError) as exc:
        raise GeomsError(
            f"{where}: cannot union the {len(rows)} geometries of the query: {exc} "
            "(ST_MakeValid in the sql may help)"
        ) from None


def _with_timeout(connection: str) -> str:
    """The connection string with a connect_timeout of CONNECT_TIMEOUT seconds unless it,
    or libpq's environment (PGCONNECT_TIMEOUT), sets one: psycopg waits 130 s otherwise."""
    if "connect_timeout" in conninfo_to_dict(connection):
        return connection
    defaults = {option.keyword: option.val for option in pq.Conninfo.get_defaults()}
    if defaults.get(b"connect_timeout"):
        return connection
    return make_conninfo(connection, connect_timeout=CONNECT_TIMEOUT)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
