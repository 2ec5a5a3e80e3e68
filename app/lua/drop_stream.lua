-- Drop a stream: its checkpoint, rows, row meta, prune lease and change feed. UNLINK
-- frees big keys in a background thread, so this never blocks Redis for long. The
-- caller removes the stream from the P:streams index (another slot) with its own ZREM.
-- KEYS[1] checkpoint hash   KEYS[2] rows hash   KEYS[3] row-meta hash   KEYS[4] prune lease
-- KEYS[5] change feed
-- Returns {existed (0/1), rows it held}

local existed = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3])
local rows = redis.call('HLEN', KEYS[2])
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return {existed > 0 and 1 or 0, rows}
