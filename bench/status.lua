-- wrk script: GET the URL given to wrk (headers from -H) and report JSON like ingest.lua.
function done(summary, latency)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d,'
      .. ' "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(99), errors.status,
    errors.connect + errors.read + errors.write + errors.timeout
  ))
end
