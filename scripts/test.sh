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

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Three workers on the CI machine's two cores: about a third of the suite's time is spent
# waiting (for daemons, expiries, leases, subprocesses), which a third worker fills. Each
# test module runs whole in one worker, so its module fixtures start once.
# The modules go to the workers in tests/conftest.py's order (the slow ones first).
# `./scripts/test.sh -n 0` runs in one process.
.venv/bin/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder "$@"
