-- wrk script: POST pre-built ingest bodies, one per line of a file, and report JSON.
-- Usage: wrk -t2 -c16 -d<seconds + drain>s -s ingest.lua <url> -- <prefix> <seconds>
-- Thread k sends the lines of <prefix><k> in order (cycling), so a stream's batches
-- go out in order. After <seconds> a thread sends nothing more, so the runner knows
-- exactly which bodies the server got ("sent"), answered or not when wrk stopped.
local ffi = require("ffi")
ffi.cdef([[
  struct timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clock_id, struct timespec *tp);
]])
local timespec = ffi.new("struct timespec")

local function now()
  ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC, the same in every thread
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) / 1e9
end

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  path, seconds = args[1] .. id, tonumber(args[2])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function load(file_path)
  local loaded = {}
  local file = assert(io.open(file_path))
  for line in file:lines() do
    table.insert(loaded, wrk.format(nil, nil, nil, line))
  end
  file:close()
  return loaded
end

-- wrk calls delay() before each connection's first request and after every response.
function delay()
  if not started then
    -- Loaded here rather than in init(), which wrk runs one thread after another,
    -- so that every thread starts sending at the same time.
    requests, sent = load(path), 0
    started = now()
  end
  last = now()
  if last < started + seconds then
    return 0
  end
  return 3600 * 1000 -- this connection is done: wrk stops before it sends again
end

function request()
  if not started then
    return wrk.format() -- wrk's check of the script at start-up; never sent
  end
  sent = sent + 1
  return requests[(sent - 1) % #requests + 1]
end

function done(summary, latency)
  local sent_by_thread, first, final = {}, math.huge, 0
  for i, thread in ipairs(threads) do
    sent_by_thread[i] = thread:get("sent")
    first = math.min(first, thread:get("started"))
    final = math.max(final, thread:get("last"))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "sent": [%s], "seconds": %.6f, "p50_us": %d,'
      .. ' "p99_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, table.concat(sent_by_thread, ", "), final - first,
    latency:percentile(50), latency:percentile(99), errors.status,
    errors.connect + errors.read + errors.write + errors.timeout
  ))
end
