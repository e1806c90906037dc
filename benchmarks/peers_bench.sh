#!/usr/bin/env bash
# The peers' bench.sh with tileserver added as one more server, in the same run.
#
# Starts `tileserver serve` (through bench_ondemand.py --serve, so with the same benchmark
# config) on the peers' memcached 127.0.0.1:11211, which bench.sh flushes before each cold
# run; runs /work/shared/peers/bench.sh --add tileserver=... --renders tileserver=...;
# stops tileserver; prints tileserver ÷ peer ratios (benchmarks/peer_ratios.py).
# Start the peers first: /work/shared/peers/up.sh
#
# usage: benchmarks/peers_bench.sh [bench.sh options, e.g. --only mapcache,tileserver]
# env:   WORKERS=1 RENDER_PROCESSES= PORT=8090 PEERS_DIR=/work/shared/peers
#        and bench.sh's own: WRK_THREADS WRK_CONN WRK_DURATION COLD_CONC COLD_REPEATS ...
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="$ROOT/.venv/bin/python"
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
RUN_DIR=${PEERS_RUN_DIR:-/tmp/peers-run}
WORKERS=${WORKERS:-1}
PORT=${PORT:-8090}
RENDER_PROCESSES=${RENDER_PROCESSES:-}

serve_out=$(mktemp /tmp/tileserver-peers-bench.XXXXXX)
extra=()
[ -n "$RENDER_PROCESSES" ] && extra=(--render-processes "$RENDER_PROCESSES")
"$PY" "$HERE/bench_ondemand.py" --serve --memcached 127.0.0.1:11211 --port "$PORT" \
  --workers "$WORKERS" "${extra[@]}" >"$serve_out" 2>&1 &
serve_pid=$!
stop() {
  if kill -0 "$serve_pid" 2>/dev/null; then kill -TERM "$serve_pid"; fi
  wait "$serve_pid" 2>/dev/null || true
}
trap stop EXIT

for _ in $(seq 1 600); do
  grep -q '^log ' "$serve_out" && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$serve_out" >&2; exit 1; }
  sleep 0.2
done
ts_log=$(sed -n 's/^log //p' "$serve_out")
[ -n "$ts_log" ] || { cat "$serve_out" >&2; exit 1; }
cat "$serve_out" >&2

before=$(ls -1 "$RUN_DIR/bench" 2>/dev/null | sort | tail -1 || true)
"$PEERS_DIR/bench.sh" \
  --add tileserver="http://127.0.0.1:$PORT/wmts/1.0.0/osm/default/epsg3857/{z}/{y}/{x}.png" \
  --renders tileserver="grep -c 'rendered metatile' $ts_log" "$@"
after=$(ls -1 "$RUN_DIR/bench" | sort | tail -1)
[ "$after" != "$before" ] || { echo "no new bench.sh run directory" >&2; exit 1; }
echo
echo "tileserver --workers $WORKERS ${extra[*]}; log $ts_log; bench.sh run $RUN_DIR/bench/$after"
"$PY" "$HERE/peer_ratios.py" "$RUN_DIR/bench/$after"
