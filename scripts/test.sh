#!/usr/bin/env bash
# The test command: installs what is missing (Debian daemons, the Python venv),
# then runs the linters, the type checker and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL + PostGIS: the `geoms` tests start a throwaway cluster of their own.
# gdal-bin: GDAL's OGCAPI driver reads the OGC API - Tiles endpoints (tests/e2e/test_ogcapi.py),
# and GDAL reads the MBTiles and GeoPackage files back (tests/e2e/test_single_file_stores.py).
bash scripts/install-system-deps.sh memcached chromium postgresql-15 postgresql-15-postgis-3 \
  cgi-mapserver mapcache-tools docker-compose fonts-dejavu-core redis-server wrk \
  gdal-bin nginx-light

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The project and its dependencies, again only when pyproject.toml (or the checkout's place)
# changed since the last install: pip takes about 20 s even when there is nothing to do.
# uv installs them in a fifth of pip's time (scripts/uv_install.py, told this machine's pip
# configuration); pip does it when uv cannot.
stamp=.venv/.tileserver-installed
wanted="$(pwd) $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  if ! .venv/bin/python scripts/uv_install.py -e '.[test]'; then
    echo "test.sh: installing with pip instead" >&2
    # a recent pip: the venv's may be years old, and twice as slow
    .venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  fi
  echo "$wanted" > "$stamp"
fi

# Python writes its bytecode caches here even where PYTHONDONTWRITEBYTECODE is set (as on
# the CI machine): each of the hundreds of Python processes the tests start (servers, render
# processes, commands) would otherwise compile every module it imports again. The modules
# are compiled as they are first imported (uv compiles nothing; a fifth of the dependencies'
# modules are ever imported), and pytest keeps the test modules it rewrote.
unset PYTHONDONTWRITEBYTECODE

# ruff and mypy (about 6 s on a clean clone, where mypy has no cache) run beside pytest,
# niced: they take the CPU pytest leaves while it waits. Their output follows pytest's,
# and the command fails if any of them or pytest fails.
checks_log="$(mktemp)"
trap 'rm -f "$checks_log"' EXIT
(
  renice -n 10 -p "$BASHPID" >/dev/null || true
  status=0
  .venv/bin/ruff check . || status=1
  .venv/bin/ruff format --check . || status=1
  .venv/bin/mypy || status=1
  exit "$status"
) >"$checks_log" 2>&1 &
checks=$!

# Four workers on the CI machine's two cores: much of the suite's time is spent waiting
# (for daemons, expiries, leases, subprocesses), which the workers beyond two fill (on 2
# quiet cores: 4 min 40 s of pytest with four, 5 min with three). Each test module runs
# whole in one worker, so its module fixtures start once.
# The modules go to the workers in tests/conftest.py's order (the slow ones first).
# `./scripts/test.sh -n 0` runs in one process.
pytest_status=0
.venv/bin/python -m pytest -n 4 --dist loadfile --no-loadscope-reorder "$@" || pytest_status=$?

checks_status=0
wait "$checks" || checks_status=$?
echo "ruff check, ruff format --check, mypy:"
cat "$checks_log"
[ "$checks_status" -eq 0 ] || echo "test.sh: ruff or mypy failed (above)" >&2
[ "$pytest_status" -eq 0 ] || exit "$pytest_status"
exit "$checks_status"
