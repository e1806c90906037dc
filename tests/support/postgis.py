"""A real PostgreSQL with PostGIS for the tests: a throwaway cluster on a free loopback
port, run by an unprivileged user, stopped by its PID.

Debian's `postgresql-15` and `postgresql-15-postgis-3` (installed by scripts/test.sh)
provide the binaries. As root, PostgreSQL refuses to run: the cluster then belongs to
the `postgres` user, in a temporary folder it owns. Trust authentication, no fsync: the
data is thrown away.

A cluster can also be stopped and started again on the same port with the same data
(`stop(keep_data=True)` then `start()`, for the recovery tests), preload
`pg_stat_statements` to count the statements a renderer sends, and hold the project's
Monaco demo data as PostGIS tables (`load_monaco`).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from tests.support.daemons import find_binary, free_port, stop_process
from tests.support.waiting import wait_until

SUPERUSER = "postgres"
STAT_STATEMENTS = "pg_stat_statements"


def pg_bindir() -> Path:
    """The folder of initdb, postgres and pg_ctl; a clear failure (never a skip) without."""
    folders = ["/usr/lib/postgresql/15/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
    initdb = find_binary("initdb", "postgresql-15", folders=folders)
    bindir = Path(initdb).parent
    for name in ("postgres", "pg_ctl"):
        if not (bindir / name).exists():
            raise RuntimeError(f"{bindir} has initdb but no {name}: install postgresql-15")
    return bindir


class PostGIS:
    """A private cluster on 127.0.0.1:<free port> with its unix socket in its own folder;
    `connection` is the libpq string of its `postgres` database (PostGIS created).

    `shared_preload_libraries=["pg_stat_statements"]` also creates that extension in every
    database made by `create_database` (and in `postgres`), for `statements()`."""

    def __init__(self, shared_preload_libraries: Sequence[str] = ()) -> None:
        self.bindir = pg_bindir()
        self.port = free_port()
        self.preload = tuple(shared_preload_libraries)
        self.folder = Path(tempfile.mkdtemp(prefix="tileserver-postgis-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._initialised = False
        # The options of every PostgreSQL process: run from the cluster's folder, and,
        # as postgres refuses to run as root, by the postgres user, who owns the folder.
        self._as_owner: dict[str, Any] = {"cwd": self.folder}
        if os.geteuid() == 0:
            try:
                shutil.chown(self.folder, SUPERUSER, SUPERUSER)
            except LookupError:
                shutil.rmtree(self.folder)
                raise RuntimeError(
                    "as root, the tests run PostgreSQL as the 'postgres' user, which does not "
                    "exist: install the Debian package 'postgresql-15' (it creates the user)"
                ) from None
            self._as_owner.update(user=SUPERUSER, group=SUPERUSER, extra_groups=[])

    @property
    def connection(self) -> str:
        return self.dsn("postgres")

    def dsn(self, dbname: str) -> str:
        """The libpq connection string of one database of this cluster."""
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={SUPERUSER}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=120, check=False, **self._as_owner
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        """initdb, start and create PostGIS the first time; later (after
        `stop(keep_data=True)`) start the same data again on the same port."""
        if self.running:
            raise RuntimeError(f"postgres is already running on port {self.port}")
        first = not self._initialised
        try:
            self._start(first)
        except BaseException:
            self.stop(keep_data=not first)
            raise

    def _start(self, first: bool) -> None:
        if first:
            self._run(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            self._initialised = True
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.folder),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "40",  # Mapnik's pools and concurrent mapserv processes
            "jit": "off",
        }
        if self.preload:
            settings["shared_preload_libraries"] = ",".join(self.preload)
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_owner
            )
        self._wait_ready(60)
        if first:
            self._create_extensions("postgres")

    def _create_extensions(self, dbname: str) -> None:
        names = ["postgis", *([STAT_STATEMENTS] if STAT_STATEMENTS in self.preload else [])]
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            for name in names:
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name))
                )

    def _wait_ready(self, timeout: float) -> None:
        last = [""]  # the last connection error

        def accepts() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(self._not_started(last[0]))
            try:
                with psycopg.connect(self.connection, connect_timeout=2):
                    return True
            except psycopg.OperationalError as exc:
                last[0] = str(exc)
                return False

        wait_until(
            accepts,
            f"postgres to accept connections on port {self.port}",
            timeout,
            0.1,
            detail=lambda: self._not_started(last[0]),
        )

    def _not_started(self, error: str) -> str:
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"postgres did not start on port {self.port}: {error}\n{log}"

    def execute(self, *statements: str, dbname: str = "postgres") -> None:
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def create_database(self, dbname: str) -> str:
        """A new database with PostGIS (and pg_stat_statements when preloaded); its
        connection string. An existing one is kept."""
        with psycopg.connect(self.connection, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname])
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        self._create_extensions(dbname)
        return self.dsn(dbname)

    def statements(self, dbname: str = "postgres") -> list[tuple[str, int]]:
        """(normalised query, calls) of pg_stat_statements for dbname, most called first;
        needs `shared_preload_libraries=["pg_stat_statements"]`."""
        if STAT_STATEMENTS not in self.preload:
            raise RuntimeError("start PostGIS(shared_preload_libraries=['pg_stat_statements'])")
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT s.query, s.calls FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s "
                "ORDER BY s.calls DESC, s.query",
                [dbname],
            ).fetchall()
        return [(str(query), int(calls)) for query, calls in rows]

    def reset_statements(self) -> None:
        """Forget the statements counted so far (the whole cluster)."""
        if STAT_STATEMENTS not in self.preload:
            raise RuntimeError("start PostGIS(shared_preload_libraries=['pg_stat_statements'])")
        self.execute("SELECT pg_stat_statements_reset()")

    def stop(
        self, keep_data: bool = False, mode: Literal["smart", "fast", "immediate"] = "fast"
    ) -> None:
        """pg_ctl stop -m <mode> (it signals the PID of this cluster's postmaster), then
        SIGKILL if it lingers. The folder is removed unless keep_data (then `start()`
        brings the same cluster back); mode "immediate" is a crash without checkpoint."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(
                [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode,
                 "-w", "-t", "20"],
                capture_output=True, timeout=30, check=False, **self._as_owner,
            )  # fmt: skip
            if self.proc.poll() is None:
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.send_signal(signal.SIGQUIT)  # postgres' immediate shutdown
                    stop_process(self.proc)
        self.proc = None
        if not keep_data:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._initialised = False


# --- the Monaco demo data ------------------------------------------------------------------

MONACO_DATA = Path(__file__).resolve().parents[2] / "config" / "data"
MONACO_SRID = 3857


@dataclass(frozen=True)
class MonacoTable:
    """One table made from config/data/<name>.geojson: the GeoJSON properties kept as
    columns (name, SQL type), plus `id` (the feature's rank in the file) and `geom`."""

    name: str
    columns: tuple[tuple[str, str], ...]
    geometry_type: str


MONACO_TABLES = (
    MonacoTable("sea", (), "MultiPolygon"),
    MonacoTable("landuse", (("kind", "text"), ("way_area", "double precision")), "Polygon"),
    MonacoTable("water", (("kind", "text"), ("way_area", "double precision")), "Polygon"),
    MonacoTable("buildings", (("building", "text"), ("name", "text")), "Polygon"),
    MonacoTable(
        "roads",
        (
            ("highway", "text"),
            ("name", "text"),
            ("tunnel", "integer"),
            ("bridge", "integer"),
            ("z_order", "integer"),
        ),
        "LineString",
    ),
    MonacoTable("places", (("name", "text"), ("place", "text")), "Point"),
)


def geojson_srid(document: dict[str, Any]) -> int:
    """The EPSG code of a GeoJSON document: its (pre-RFC 7946) `crs` member, else 4326."""
    crs = document.get("crs") or {}
    name = str((crs.get("properties") or {}).get("name", ""))
    if not name or name.endswith("CRS84"):
        return 4326
    match = re.search(r"EPSG:+(\d+)$", name, re.IGNORECASE)
    if match is None:
        raise ValueError(f"unsupported GeoJSON crs {name!r}")
    return int(match.group(1))


def load_monaco(pg: PostGIS, dbname: str = "monaco", data_dir: Path = MONACO_DATA) -> str:
    """Loads config/data/*.geojson into tables of dbname (created if needed, tables
    replaced): `id` integer primary key in file order, the properties of MONACO_TABLES,
    `geom` in EPSG:3857 with a GiST index. Returns the database's connection string."""
    dsn = pg.create_database(dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in MONACO_TABLES:
            _load_table(conn, table, data_dir / f"{table.name}.geojson")
    return dsn


def _load_table(conn: psycopg.Connection[Any], table: MonacoTable, path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    srid = geojson_srid(document)
    name = sql.Identifier(table.name)
    columns = [sql.Identifier(column) for column, _ in table.columns]
    definitions = [
        sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(kind))
        for column, kind in table.columns
    ]
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, {}geom geometry({}, {}))").format(
                name,
                sql.SQL("").join(d + sql.SQL(", ") for d in definitions),
                sql.SQL(table.geometry_type),
                sql.Literal(MONACO_SRID),
            )
        )
        # The rows go through a staging table as text, so that PostGIS parses the
        # geometries (ST_GeomFromGeoJSON) and reprojects them when the file is not 3857.
        conn.execute(
            sql.SQL("CREATE TEMP TABLE staging (id integer, {}geojson text) ON COMMIT DROP").format(
                sql.SQL("").join(d + sql.SQL(", ") for d in definitions)
            )
        )
        copy = sql.SQL("COPY staging (id, {}geojson) FROM STDIN").format(
            sql.SQL("").join(c + sql.SQL(", ") for c in columns)
        )
        with conn.cursor() as cur, cur.copy(copy) as writer:
            for rank, feature in enumerate(document["features"], start=1):
                properties = feature.get("properties") or {}
                geometry = feature.get("geometry")
                writer.write_row(
                    [
                        rank,
                        *(properties.get(column) for column, _ in table.columns),
                        json.dumps(geometry) if geometry else None,
                    ]
                )
        geom = sql.SQL("ST_SetSRID(ST_GeomFromGeoJSON(geojson), {})").format(sql.Literal(srid))
        if srid != MONACO_SRID:
            geom = sql.SQL("ST_Transform({}, {})").format(geom, sql.Literal(MONACO_SRID))
        conn.execute(
            sql.SQL("INSERT INTO {} (id, {}geom) SELECT id, {}{} FROM staging ORDER BY id").format(
                name,
                sql.SQL("").join(c + sql.SQL(", ") for c in columns),
                sql.SQL("").join(c + sql.SQL(", ") for c in columns),
                geom,
            )
        )
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING gist (geom)").format(
                sql.Identifier(f"{table.name}_geom"), name
            )
        )
    conn.execute(sql.SQL("ANALYZE {}").format(name))
