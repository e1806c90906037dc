-- wrk script: cycle through the request paths listed (one per line) in the file named
-- by $WRK_PATHS; each wrk thread starts at a different offset. done() prints one line
-- "WRKJSON {...}" (latencies in ms) that wrk_output.py reads for every benchmark.
-- Same behaviour as the peers' tools/urls.lua, so hit figures compare with bench.sh.
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do
  if #line > 0 then paths[#paths + 1] = line end
end

local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local i = 0
function init(args)
  i = ((tid or 0) * 97) % #paths
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_s": %.3f, "rps": %.1f, "bytes": %d, ' ..
    '"p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, ' ..
    '"err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, ' ..
    '"err_timeout": %d, "paths": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.bytes, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.connect, e.read, e.write, e.status,
    e.timeout, #paths))
end
