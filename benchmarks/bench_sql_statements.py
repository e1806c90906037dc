"""SQL statements and WMS GetMaps per 1,000 tiles, with 8x8 metatiles and with single tiles.

Starts its own PostGIS (tests/support/postgis.py: a throwaway cluster on a free loopback
port, pg_stat_statements preloaded, connections logged) with the Monaco data in database
`monaco`, the MapServer WMS over it (tests/support/mapserver.py: one CGI `mapserv` per
request), then, for each run, a fresh `tileserver serve --workers 1` with one layer and
no memcached section (embedded cache, empty at start: every tile is a cold render):

  mapnik-meta    Mapnik over PostGIS (config/styles/osm-postgis.xml, `connection:` = the
                 monaco database), meta: true, meta_size 8, meta_buffer 32
  mapnik-single  the same with meta: false: one 256 px tile plus the 32 px buffer per render
  wms-meta       `type: wms` over the MapServer WMS, meta: true, meta_size 8, meta_buffer 32
  wms-single     the same with meta: false (GetMaps of 320x320 px)

Every run fetches the same tiles, the 847 z17+z18 tiles over Monaco's land (the cold set
of bench_ondemand.py: 20 distinct 8x8 metatiles), with 8 concurrent keep-alive
connections, every answer HTTP 200 with a PNG signature. Counted between the server
being ready and the last answer (pg_stat_statements reset and the WMS log cleared once
the server is ready):

  SQL statements executed on database monaco (sum of pg_stat_statements calls, statements
  on pg_stat_statements excluded), split into data queries (SELECT ... FROM (...) with a
  bbox filter), metadata queries (a style's datasources described: LIMIT 0, catalogs) and
  the others; rows returned by the data queries; their execution time
  PostgreSQL connections to monaco (`connection authorized` lines of its log)
  GetMap requests to the WMS (the runner's access log), their sizes and time
  renders (the server's `rendered metatile` lines) and wall time

The statements and connections of the server's start (a Mapnik style is described when
it loads) are counted apart, and so are the render processes started at ready and at the
end (the pool starts them on demand). Prints a table of raw counts, one per 1,000 tiles
and the ratios single tile ÷ metatile; writes benchmarks/out/sql-<time>/result.json, the
configs and logs. `--defer-connections` serves the WMS from a copy of its mapfile with
PROCESSING "CLOSE_CONNECTION=DEFER" (one PostgreSQL connection per GetMap, not per layer).

  .venv/bin/python benchmarks/bench_sql_statements.py
  .venv/bin/python benchmarks/bench_sql_statements.py --runs wms-meta,wms-single --defer-connections
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

# bench_ondemand puts the repository root on sys.path: tests.support is importable after it.
from bench_ondemand import (
    OUT_DIR,
    RENDER_LINE,
    RENDER_MS,
    ROOT,
    TileServer,
    cold_tiles,
    cpu_busy_pct,
    cpu_times,
    expand,
    fetch_all,
    fmt,
    git_revision,
    http_status,
    loadavg,
    log,
    metatiles,
    run_header,
    sigterm_as_interrupt,
)

from tests.support.configs import mercator_grid
from tests.support.daemons import free_port, wait_port
from tests.support.mapserver import MAPFILE, MapServerWMS
from tests.support.postgis import PostGIS, load_monaco

STYLE = ROOT / "config" / "styles" / "osm-postgis.xml"
DBNAME = "monaco"
LAYER = "bench"
GRID = "epsg3857"
TEMPLATE = f"/wmts/1.0.0/{LAYER}/default/{GRID}/{{z}}/{{y}}/{{x}}.png"
META_SIZE = 8
META_BUFFER = 32
PER = 1000  # figures are given per this many tiles


@dataclass(frozen=True)
class Run:
    name: str
    kind: str  # mapnik | wms
    meta: bool

    @property
    def meta_size(self) -> int:
        """The server's Layer.effective_meta_size: 1 with meta: false (buffer kept)."""
        return META_SIZE if self.meta else 1


RUNS = (
    Run("mapnik-meta", "mapnik", True),
    Run("mapnik-single", "mapnik", False),
    Run("wms-meta", "wms", True),
    Run("wms-single", "wms", False),
)


# --- configuration ------------------------------------------------------------------------


def layer_config(run: Run, pg: PostGIS, wms: MapServerWMS) -> dict[str, Any]:
    """One layer `bench` on the GoogleMapsCompatible grid; no memcached: embedded cache."""
    if run.kind == "mapnik":
        source: dict[str, Any] = {
            "type": "mapnik",
            "mapfile": str(STYLE),
            "connection": pg.dsn(DBNAME),
        }
    else:
        source = {"type": "wms", "url": wms.url, "layers": "osm"}
    return {
        "grids": {GRID: mercator_grid()},
        "layers": {
            LAYER: {
                **source,
                "grid": GRID,
                "meta": run.meta,
                "meta_size": META_SIZE,
                "meta_buffer": META_BUFFER,
            }
        },
    }


def deferred_mapfile(folder: Path) -> Path:
    """A copy of the WMS's mapfile with PROCESSING "CLOSE_CONNECTION=DEFER" in every
    PostGIS layer, so that one `mapserv` shares one connection among its layers (MapServer
    closes a layer's connection once the layer is drawn otherwise); its relative paths
    made absolute."""
    text = MAPFILE.read_text(encoding="utf-8")
    text = re.sub(
        r'^(\s*)(FONTSET|HEADER|FOOTER|TEMPLATE) "([^"/][^"]*)"',
        lambda m: f'{m.group(1)}{m.group(2)} "{MAPFILE.parent / m.group(3)}"',
        text,
        flags=re.MULTILINE,
    )
    text, count = re.subn(
        r'^(\s*)CONNECTION ""$',
        r'\1CONNECTION ""\n\1PROCESSING "CLOSE_CONNECTION=DEFER"',
        text,
        flags=re.MULTILINE,
    )
    if count == 0:
        raise RuntimeError(f'no CONNECTION "" in {MAPFILE}: cannot defer its connections')
    path = folder / "monaco-defer.map"
    path.write_text(text, encoding="utf-8")
    return path


def wait_ready(server: TileServer, timeout: float = 120) -> None:
    """Listening, its render pool started, Capabilities answered, on the embedded cache."""
    deadline = time.monotonic() + timeout
    if not wait_port(server.port, timeout, server.proc):
        raise RuntimeError(f"tileserver did not start:\n{server.log_text()[-3000:]}")
    url = server.base + "/wmts/1.0.0/WMTSCapabilities.xml"
    while time.monotonic() < deadline and server.proc.poll() is None:
        text = server.log_text()
        if "render pool:" in text and http_status(url) == 200:
            caches = re.findall(r"tile cache: (.*)", text)
            if not all(c.startswith("embedded") for c in caches):
                raise RuntimeError(f"tileserver is not on its embedded cache: {caches}")
            return
        time.sleep(0.2)
    raise RuntimeError(f"tileserver did not become ready:\n{server.log_text()[-3000:]}")


# --- what PostgreSQL saw ------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    query: str  # normalised by pg_stat_statements ($1, $2... for constants)
    calls: int
    rows: int
    exec_ms: float

    @property
    def kind(self) -> str:
        return statement_kind(self.query)


def statement_kind(query: str) -> str:
    """data: a SELECT from a style's subquery with a bbox filter (one per layer drawn);
    metadata: describing a datasource (LIMIT 0, catalogs, PostGIS functions); other."""
    text = " ".join(query.split()).lower()
    if text.startswith("select") and re.search(r"\bfrom \(", text):
        if "&&" in text or "st_intersects" in text or "st_makeenvelope" in text:
            return "data"
        return "metadata"
    if text.startswith("select") and re.search(
        r"pg_catalog|pg_type|pg_class|pg_attribute|geometry_columns|postgis_|version\(|limit 0",
        text,
    ):
        return "metadata"
    return "other"


def read_statements(pg: PostGIS) -> list[Statement]:
    """pg_stat_statements of database monaco, read from database postgres (so that the
    benchmark's own reading is not counted), statements on pg_stat_statements excluded."""
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT s.query, s.calls, s.rows, s.total_exec_time FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s AND s.query NOT ILIKE '%%pg_stat_statements%%' "
            "ORDER BY s.calls DESC, s.query",
            [DBNAME],
        ).fetchall()
    return [Statement(str(q), int(c), int(r), float(ms)) for q, c, r, ms in rows]


def summarise_statements(statements: Sequence[Statement]) -> dict[str, Any]:
    by_kind: Counter[str] = Counter()
    for s in statements:
        by_kind[s.kind] += s.calls
    data = [s for s in statements if s.kind == "data"]
    return {
        "statements": sum(s.calls for s in statements),
        "data": by_kind["data"],
        "metadata": by_kind["metadata"],
        "other": by_kind["other"],
        "data_rows": sum(s.rows for s in data),
        "exec_ms": round(sum(s.exec_ms for s in statements), 1),
        "distinct": len(statements),
        "by_query": [
            {
                "kind": s.kind,
                "calls": s.calls,
                "rows": s.rows,
                "exec_ms": round(s.exec_ms, 1),
                "query": s.query,
            }
            for s in statements
        ],
    }


def open_connections(pg: PostGIS) -> dict[str, int]:
    """The backends connected to database monaco now, by state (idle, active...)."""
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity "
            "WHERE datname = %s GROUP BY 1 ORDER BY 1",
            [DBNAME],
        ).fetchall()
    return {str(state): int(count) for state, count in rows}


def render_processes(server: TileServer) -> int:
    """The server's multiprocessing children that run Mapnik (spawn_main), started so far:
    the pool starts them on demand, not all at once."""
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    count = 0
    for pid in children.read_text().split() if children.exists() else []:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        count += b"spawn_main" in cmdline
    return count


class ConnectionLog:
    """Connections to database monaco, from PostgreSQL's log (log_connections = on)."""

    NEEDLE = re.compile(rf"connection authorized: .*\bdatabase={DBNAME}\b")

    def __init__(self, pg: PostGIS) -> None:
        self.path = pg.log_path
        pg.execute("ALTER SYSTEM SET log_connections = on", "SELECT pg_reload_conf()")
        time.sleep(0.5)  # the reload reaches the postmaster asynchronously
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size

    def since_mark(self) -> int:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            text = f.read().decode(errors="replace")
        return sum(1 for line in text.splitlines() if self.NEEDLE.search(line))


# --- one run ------------------------------------------------------------------------------


def render_lines(server: TileServer) -> list[str]:
    return [line for line in server.log_text().splitlines() if RENDER_LINE in line]


def one_run(
    run: Run,
    tiles: Sequence[tuple[int, int, int]],
    pg: PostGIS,
    wms: MapServerWMS,
    connections: ConnectionLog,
    run_dir: Path,
    concurrency: int,
) -> dict[str, Any]:
    workdir = run_dir / run.name
    workdir.mkdir()
    pg.reset_statements()
    wms.clear_log()
    connections.mark()
    server = TileServer("", workdir, free_port(), 1, None, config=layer_config(run, pg, wms))
    try:
        t0 = time.perf_counter()
        wait_ready(server)
        ready_s = time.perf_counter() - t0
        time.sleep(0.5)
        startup = summarise_statements(read_statements(pg))
        startup_connections = connections.since_mark()
        startup_getmaps = wms.getmap_count()
        processes_at_start = render_processes(server)

        pg.reset_statements()
        wms.clear_log()
        connections.mark()
        renders_before = len(render_lines(server))
        urls = expand(server.base + TEMPLATE, tiles)
        c0 = cpu_times()
        fetched = fetch_all(urls, concurrency)
        c1 = cpu_times()
        time.sleep(0.5)  # a mapserv may still be closing its connection; logs are flushed
        sql = summarise_statements(read_statements(pg))
        pg_connections = connections.since_mark()
        getmaps = [r for r in wms.requests() if r.kind == "wms" and r.request.lower() == "getmap"]
        lines = render_lines(server)[renders_before:]
        processes_at_end = render_processes(server)
        held = open_connections(pg)
    finally:
        server.stop()
    durations = [float(m.group(1)) for line in lines if (m := RENDER_MS.search(line))]
    sizes = Counter(f"{r.params.get('WIDTH')}x{r.params.get('HEIGHT')}" for r in getmaps)
    fetch = fetched.summary()
    if fetched.errors:
        log(f"{run.name}: {fetched.errors} errors, first: {fetched.first_error}")
    result = {
        "run": run.name,
        "layer": run.kind,
        "meta": run.meta,
        "meta_size": run.meta_size,
        "meta_buffer": META_BUFFER,
        "tiles": len(tiles),
        "min_renders": metatiles(tiles, run.meta_size),
        "server_command": " ".join(server.command),
        "server_ready_s": round(ready_s, 2),
        "startup": {
            "sql": startup,
            "pg_connections": startup_connections,
            "getmaps": startup_getmaps,
            "render_processes": processes_at_start,
        },
        "render_processes_at_end": processes_at_end,
        "pg_connections_open_at_end": held,
        "fetch": fetch,
        "wall_s": fetch["elapsed_s"],
        "cpu_pct": cpu_busy_pct(c0, c1),
        "renders": len(lines),
        "data_statements_per_render": round(sql["data"] / len(lines), 2) if lines else None,
        "render_ms_mean": round(statistics.mean(durations), 1) if durations else None,
        "render_ms_p50": round(statistics.median(durations), 1) if durations else None,
        "sql": sql,
        "pg_connections": pg_connections,
        "getmaps": len(getmaps),
        "getmap_errors": sum(1 for r in getmaps if r.status != 200),
        "getmap_sizes": dict(sizes),
        "getmap_ms_mean": round(statistics.mean(r.ms for r in getmaps), 1) if getmaps else None,
    }
    result["per_1000_tiles"] = per_thousand(result)
    log(
        f"{run.name}: {len(tiles)} tiles in {fetch['elapsed_s']} s, {len(lines)} renders, "
        f"{sql['statements']} statements ({sql['data']} data), {len(getmaps)} GetMaps, "
        f"{pg_connections} connections, errors {fetched.errors}"
    )
    return result


def per_thousand(r: dict[str, Any]) -> dict[str, float]:
    scale = PER / r["tiles"]
    sql = r["sql"]
    return {
        "renders": round(r["renders"] * scale, 1),
        "statements": round(sql["statements"] * scale, 1),
        "data_statements": round(sql["data"] * scale, 1),
        "metadata_statements": round(sql["metadata"] * scale, 1),
        "other_statements": round(sql["other"] * scale, 1),
        "data_rows": round(sql["data_rows"] * scale, 0),
        "sql_exec_ms": round(sql["exec_ms"] * scale, 1),
        "pg_connections": round(r["pg_connections"] * scale, 1),
        "getmaps": round(r["getmaps"] * scale, 1),
        "wall_s": round(r["wall_s"] * scale, 2),
    }


# --- report -------------------------------------------------------------------------------


def raw_table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| run | tiles | renders (min) | SQL statements | data / metadata / other "
        "| data per render | data rows | SQL exec ms | PG connections (open at end) "
        "| GetMaps (size) | wall s | tiles/s | errors | render ms p50 "
        "| render processes at start / end | at start: statements / connections |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        sql, start, fetch = r["sql"], r["startup"], r["fetch"]
        sizes = ", ".join(r["getmap_sizes"]) or "-"
        lines.append(
            f"| {r['run']} | {r['tiles']} | {r['renders']} ({r['min_renders']}) "
            f"| {sql['statements']} | {sql['data']} / {sql['metadata']} / {sql['other']} "
            f"| {fmt(r['data_statements_per_render'], 2)} "
            f"| {sql['data_rows']} | {sql['exec_ms']:.0f} "
            f"| {r['pg_connections']} ({sum(r['pg_connections_open_at_end'].values())}) "
            f"| {r['getmaps']} ({sizes}) | {r['wall_s']:.1f} | {fmt(fetch['tiles_per_s'], 0)} "
            f"| {fetch['errors']} | {fmt(r['render_ms_p50'], 0)} "
            f"| {start['render_processes']} / {r['render_processes_at_end']} "
            f"| {start['sql']['statements']} / {start['pg_connections']} |"
        )
    return "\n".join(lines)


def thousand_table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"| run (per {PER:,} tiles) | renders | SQL statements | data SELECTs "
        "| metadata / other | data rows | SQL exec ms | PG connections | GetMaps | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        k = r["per_1000_tiles"]
        lines.append(
            f"| {r['run']} | {k['renders']:.0f} | {k['statements']:.0f} "
            f"| {k['data_statements']:.0f} "
            f"| {k['metadata_statements']:.0f} / {k['other_statements']:.0f} "
            f"| {k['data_rows']:.0f} | {k['sql_exec_ms']:.0f} | {k['pg_connections']:.0f} "
            f"| {k['getmaps']:.0f} | {k['wall_s']:.1f} |"
        )
    return "\n".join(lines)


RATIO_KEYS = ("renders", "statements", "data_statements", "data_rows", "sql_exec_ms",
              "pg_connections", "getmaps", "wall_s")  # fmt: skip


def ratios(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per layer kind: single tile ÷ metatile of each per-1,000-tiles figure."""
    by_name = {r["run"]: r for r in results}
    out: dict[str, dict[str, float | None]] = {}
    for kind in ("mapnik", "wms"):
        meta, single = by_name.get(f"{kind}-meta"), by_name.get(f"{kind}-single")
        if meta is None or single is None:
            continue
        a, b = single["per_1000_tiles"], meta["per_1000_tiles"]
        out[kind] = {key: round(a[key] / b[key], 1) if b[key] else None for key in RATIO_KEYS}
    return out


def ratio_lines(table: dict[str, dict[str, float | None]]) -> str:
    names = {"mapnik": "Mapnik over PostGIS", "wms": "WMS (MapServer over PostGIS)"}
    lines = [
        "| single ÷ meta | " + " | ".join(RATIO_KEYS) + " |",
        "|---|" + "---|" * len(RATIO_KEYS),
    ]
    for kind, values in table.items():
        lines.append(f"| {names[kind]} | " + " | ".join(fmt(values[k]) for k in RATIO_KEYS) + " |")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--runs",
        default=",".join(r.name for r in RUNS),
        help="comma list of %(default)s",
    )
    ap.add_argument("--conc", type=int, default=8, help="concurrent connections (default 8)")
    ap.add_argument(
        "--single-tiles",
        type=int,
        help="fetch only this many of the tiles (evenly spaced in the list) in the single-tile "
        "runs; the per-1,000 figures are scaled from what was fetched (default: all)",
    )
    ap.add_argument(
        "--defer-connections",
        action="store_true",
        help='serve the WMS from a copy of its mapfile with PROCESSING "CLOSE_CONNECTION=DEFER" '
        "in every PostGIS layer (one connection per GetMap instead of one per layer drawn)",
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="default benchmarks/out")
    return ap.parse_args(argv)


def subset(tiles: Sequence[tuple[int, int, int]], count: int | None) -> list[tuple[int, int, int]]:
    if count is None or count >= len(tiles):
        return list(tiles)
    step = len(tiles) / count
    return [tiles[int(i * step)] for i in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    known = {r.name: r for r in RUNS}
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown run(s): {', '.join(unknown)}; known: {', '.join(known)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = (args.out / f"sql-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = loadavg()
    tiles = cold_tiles()

    pg: PostGIS | None = None
    wms: MapServerWMS | None = None
    results: list[dict[str, Any]] = []
    with sigterm_as_interrupt():
        try:
            pg = PostGIS(shared_preload_libraries=["pg_stat_statements"])
            pg.start()
            load_monaco(pg, DBNAME)
            log(f"PostGIS pid {pg.proc.pid if pg.proc else '?'} on 127.0.0.1:{pg.port}")
            connections = ConnectionLog(pg)
            mapfile = deferred_mapfile(run_dir) if args.defer_connections else MAPFILE
            wms = MapServerWMS(pg, DBNAME, mapfile)
            wms.start()
            log(f"MapServer WMS runner pid {wms.proc.pid if wms.proc else '?'} at {wms.url}")
            for name in names:
                run = known[name]
                these = tiles if run.meta else subset(tiles, args.single_tiles)
                log(f"{run.name}: {len(these)} tiles")
                results.append(one_run(run, these, pg, wms, connections, run_dir, args.conc))
                time.sleep(1)
            mapserver_errors = wms.errors()
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        finally:
            if wms is not None:
                wms.stop()
                log("WMS runner stopped")
            if pg is not None:
                pg.stop()
                log("PostGIS stopped")

    ratio_table = ratios(results)
    report: dict[str, Any] = {
        **run_header(started, load_before),
        "tileserver_revision": git_revision(),
        "settings": {
            "tiles": "the 847 z17+z18 tiles over Monaco's land (bench_ondemand.py cold set)",
            "tile_count": len(tiles),
            "single_tiles": args.single_tiles,
            "concurrency": args.conc,
            "meta_size": META_SIZE,
            "meta_buffer": META_BUFFER,
            "style": str(STYLE.relative_to(ROOT)),
            "workers": 1,
            "cache": "embedded (no memcached section)",
            "wms_mapfile": str(mapfile),
            "wms_close_connection_defer": args.defer_connections,
        },
        "results": results,
        "ratios_single_over_meta": ratio_table,
        "mapserver_stderr": mapserver_errors[-5000:],
    }
    (run_dir / "result.json").write_text(json.dumps(report, indent=1) + "\n")

    print(f"\n{report['command']}")
    print(f"{started} .. {report['finished_utc']}; load {load_before} -> {loadavg()}; "
          f"revision {report['tileserver_revision']}\n")  # fmt: skip
    print(raw_table(results))
    print()
    print(thousand_table(results))
    print()
    print(ratio_lines(ratio_table))
    print(f"\nJSON, configs and logs: {run_dir}")
    return 0 if all(r["fetch"]["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
