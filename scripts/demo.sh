#!/usr/bin/env bash
# The demo command: creates the virtualenv if needed and serves the bundled Monaco layers.
# Memcached is used when one answers on MEMCACHED_SERVERS (default 127.0.0.1:11211);
# otherwise the server says so and keeps tiles in an in-process cache.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/tileserver ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
exec .venv/bin/tileserver serve --config config/demo.yaml.mako "$@"
