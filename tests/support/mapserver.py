"""A real MapServer WMS over the test PostGIS: Debian's CGI `mapserv` (8.x) serving
tests/data/mapserver/monaco.map behind tests/support/wms_runner.py, on a free loopback
port, stopped by its PID.

    postgis = PostGIS(); postgis.start(); load_monaco(postgis)
    wms = MapServerWMS(postgis); wms.start()
    ... wms.url, wms.getmap_count(), wms.set_mode("slow:2"), wms.direct_getmap(...)
    wms.stop(); postgis.stop()

The PostGIS connection reaches mapserv through the libpq environment variables of the
runner (the mapfile's CONNECTIONs are empty), so stopping PostGIS and starting it again
on the same port needs nothing here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from psycopg.conninfo import conninfo_to_dict

from tests.support.daemons import find_binary, free_port, stop_process, wait_port
from tests.support.postgis import PostGIS, load_monaco
from tests.support.server import Response, fetch
from tests.support.waiting import wait_until
from tests.support.wms_runner import DIRECT_HEADER

ROOT = Path(__file__).resolve().parents[2]
MAPFILE = ROOT / "tests" / "data" / "mapserver" / "monaco.map"
RUNNER = Path(__file__).with_name("wms_runner.py")
LIBPQ_ENV = {"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
             "password": "PGPASSWORD"}  # fmt: skip


@dataclass(frozen=True)
class WMSRequest:
    """One line of the runner's access log."""

    time: float
    kind: str  # wms | direct | control | other
    method: str
    status: int
    size: int  # body bytes sent
    ms: float
    mode: str  # the fault mode that answered it ("-" for control)
    query: str

    @property
    def params(self) -> dict[str, str]:
        """The query parameters, names upper-cased (WMS names are case-insensitive)."""
        return {k.upper(): v for k, v in parse_qsl(self.query, keep_blank_values=True)}

    @property
    def request(self) -> str:
        """The WMS REQUEST (GetMap, GetFeatureInfo...), "" if none."""
        return self.params.get("REQUEST", "")


def mapserver_config(mapfile: Path) -> str:
    """The MapServer 8 config file (mandatory for the CGI): only mapfile is served, the
    MAP parameter is refused, errors go to stderr (the runner's error log)."""
    return (
        "CONFIG\n"
        "  ENV\n"
        f'    MS_MAPFILE "{mapfile}"\n'
        '    MS_MAP_NO_PATH "1"\n'
        '    MS_ERRORFILE "stderr"\n'
        "  END\n"
        "END\n"
    )


FOREIGN_DATA_DIRS = {"PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "ICU_DATA"}


@contextmanager
def monaco_wms() -> Iterator[MapServerWMS]:
    """A MapServer WMS over a PostGIS of its own loaded with the Monaco data; both stopped
    at the end (PostGIS restarted first if a test left it stopped, so that its stop
    removes the cluster)."""
    postgis = PostGIS()
    postgis.start()
    load_monaco(postgis)
    server = MapServerWMS(postgis)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if not postgis.running:
            postgis.start()
        postgis.stop()


TCC_MAPFILE = ROOT / "tests" / "data" / "mapserver" / "tcc.map"


@contextmanager
def tcc_wms() -> Iterator[MapServerWMS]:
    """A MapServer WMS of the layers TileCloud-chain's configuration files name
    (tests/data/mapserver/tcc.map, inline features: no database); stopped at the end.
    It is also an HTTP proxy to itself: see `proxy_environment`."""
    server = MapServerWMS(None, mapfile=TCC_MAPFILE)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class MapServerWMS:
    """The Monaco WMS at `url` (http://127.0.0.1:<free port>/wms), its layer group `osm`
    drawn by a `mapserv` per request from the tables of `load_monaco` in dbname."""

    def __init__(
        self, postgis: PostGIS | None, dbname: str = "monaco", mapfile: Path = MAPFILE
    ) -> None:
        self.mapserv = find_binary("mapserv", "cgi-mapserver")
        self.postgis = postgis
        self.dbname = dbname
        self.mapfile = mapfile.resolve()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="tileserver-mapserver-"))
        self.config_path = self.folder / "mapserver.conf"
        self.access_log = self.folder / "access.log"
        self.error_log = self.folder / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/wms"

    def proxy_environment(self) -> dict[str, str]:
        """The environment of a tileserver whose upstream WMS requests, to any host, come
        here: this runner as everybody's HTTP proxy (a WMS URL of another machine's
        configuration file, such as `http://mapserver:8080/`, needs no edit)."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}

    def environment(self) -> dict[str, str]:
        """The runner's (hence mapserv's) environment: the config file and libpq's
        variables for the PostGIS database."""
        # Not the PG* of the test process, nor the data folders `import mapnik` points
        # PROJ, GDAL and ICU at: its proj.db is newer than the one Debian's mapserv reads.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PG") and k not in FOREIGN_DATA_DIRS}  # fmt: skip
        if self.postgis is not None:
            params = conninfo_to_dict(self.postgis.dsn(self.dbname))
            for key, name in LIBPQ_ENV.items():
                if params.get(key):
                    env[name] = str(params[key])
            env["PGCONNECT_TIMEOUT"] = "5"
        env["MAPSERVER_CONFIG_FILE"] = str(self.config_path)
        return env

    def start(self) -> None:
        """Starts the runner; again after `stop(keep_files=True)`: same port, same log."""
        self.folder.mkdir(exist_ok=True)
        self.config_path.write_text(mapserver_config(self.mapfile))
        self.access_log.touch()
        args = [sys.executable, str(RUNNER), "--port", str(self.port),
                "--mapserv", self.mapserv, "--log", str(self.access_log)]  # fmt: skip
        with self.error_log.open("ab") as errors:
            self.proc = subprocess.Popen(
                args, env=self.environment(), stdout=errors, stderr=subprocess.STDOUT,
                cwd=self.folder,
            )  # fmt: skip
        try:
            if not wait_port(self.port, 10, self.proc):
                raise RuntimeError("its port did not open")
            wait_until(self._answers, "its control endpoint to answer 200", 5, 0.05)
        except (RuntimeError, AssertionError) as exc:
            log = self.error_log.read_text(errors="replace")
            self.stop()
            raise RuntimeError(
                f"the WMS runner did not start on port {self.port} ({exc}): {log}"
            ) from exc

    def _answers(self) -> bool:
        try:
            return self._control({}).status == 200
        except OSError:
            return False

    def stop(self, keep_files: bool = False) -> None:
        """Stops the runner (SIGTERM to its PID): connections are then refused. The
        folder with the logs is removed unless keep_files (for a `start()` again)."""
        stop_process(self.proc)
        self.proc = None
        if not keep_files:
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- requests ------------------------------------------------------------------------

    def get(
        self, params: dict[str, str], headers: dict[str, str] | None = None, timeout: float = 60
    ) -> Response:
        """GET /wms?params (counted like any client's request unless headers say direct)."""
        return fetch(f"{self.url}?{urlencode(params)}", headers, timeout)

    def getmap_params(
        self,
        bbox: tuple[float, float, float, float],
        width: int,
        height: int,
        srs: str = "EPSG:3857",
        version: str = "1.1.1",
        layers: str = "osm",
        image_format: str = "image/png",
    ) -> dict[str, str]:
        """The parameters of a GetMap; bbox in the axis order of version (1.3.0 with
        EPSG:4326: lat,lon)."""
        return {
            "SERVICE": "WMS",
            "VERSION": version,
            "REQUEST": "GetMap",
            "LAYERS": layers,
            "STYLES": "",
            "SRS" if version == "1.1.1" else "CRS": srs,
            "BBOX": ",".join(repr(float(v)) for v in bbox),
            "WIDTH": str(width),
            "HEIGHT": str(height),
            "FORMAT": image_format,
        }

    def direct_getmap(
        self,
        bbox: tuple[float, float, float, float],
        width: int,
        height: int,
        srs: str = "EPSG:3857",
        version: str = "1.1.1",
        layers: str = "osm",
    ) -> bytes:
        """A GetMap straight from MapServer, not counted by getmap_count() and never
        faulted: the reference image to compare tiles with. Fails unless it is a PNG."""
        params = self.getmap_params(bbox, width, height, srs, version, layers)
        response = self.get(params, {DIRECT_HEADER: "1"})
        if response.status != 200 or not response.body.startswith(b"\x89PNG\r\n\x1a\n"):
            raise RuntimeError(
                f"direct GetMap failed: {response.status} {response.headers.get('content-type')}"
                f" {response.body[:500]!r}"
            )
        return response.body

    # --- faults --------------------------------------------------------------------------

    def set_mode(self, mode: str, count: int | None = None) -> None:
        """normal | service_exception | html_error[:status] | truncated | half_png |
        slow:<seconds> | held (until `release`); with count, only for the next `count`
        WMS requests."""
        params = {"mode": mode, **({"count": str(count)} if count is not None else {})}
        response = self._control(params)
        if response.status != 200:
            raise ValueError(response.body.decode(errors="replace").strip())

    def release(self) -> None:
        """Lets the answers held by the `held` mode finish."""
        if self._control({"release": "1"}).status != 200:
            raise RuntimeError("the runner did not take the release")

    def mode(self) -> str:
        """The runner's current mode, e.g. "mode=slow:2" or "mode=truncated remaining=1"."""
        return self._control({}).body.decode().strip()

    def _control(self, params: dict[str, str]) -> Response:
        query = f"?{urlencode(params)}" if params else ""
        return fetch(f"http://127.0.0.1:{self.port}/_control{query}", None, 5)

    # --- access log ----------------------------------------------------------------------

    def requests(self) -> list[WMSRequest]:
        """Every request the runner answered since start (or clear_log), in order."""
        entries = []
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            fields = line.split("\t", 7)
            if len(fields) < 8:
                continue
            stamp, kind, method, status, size, ms, mode, query = fields
            entries.append(
                WMSRequest(float(stamp), kind, method, int(status), int(size), float(ms), mode,
                           query)
            )  # fmt: skip
        return entries

    def getmap_count(self) -> int:
        """The GetMap requests received from clients (direct ones excluded), whatever
        the answer (faults included). A request is logged just before its answer is
        sent: one still sleeping in mode slow:<seconds> is not counted yet."""
        return sum(1 for r in self.requests() if r.kind == "wms" and r.request.lower() == "getmap")

    def clear_log(self) -> None:
        """Forgets the requests so far (the runner appends to the emptied file)."""
        self.access_log.write_text("")

    def errors(self) -> str:
        """What mapserv and the runner wrote on stderr (MapServer's error messages)."""
        return self.error_log.read_text(errors="replace")
