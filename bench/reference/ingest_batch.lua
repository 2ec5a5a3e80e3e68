-- Reference sink: apply one batch atomically, rows upserted in index order, then
-- checkpoint = max(stored, batch max), written last.
-- KEYS[1] checkpoint hash   KEYS[2] rows hash   KEYS[3] row-meta hash (row key -> index)
-- ARGV[1] now_ms   ARGV[2] batch max index ('' if none)   ARGV[3..] row key, index, json triples
-- Returns {checkpoint, rows written, rows skipped}

-- Indexes are decimal strings (Lua doubles cannot tell 2^63-1 from 2^63-2).
local function at_least(a, b)
  if #a ~= #b then return #a > #b end
  return a >= b
end

local CHUNK = 999  -- values per unpack, a multiple of 3; Redis refuses about 8,000
local count = (#ARGV - 2) / 3
local row_keys = {}
for i = 1, count do row_keys[i] = ARGV[3 * i] end
local stored = {}
for first = 1, count, CHUNK do
  local last = math.min(first + CHUNK - 1, count)
  local found = redis.call('HMGET', KEYS[3], unpack(row_keys, first, last))
  for i = first, last do stored[i] = found[i - first + 1] end
end

local latest, rows, metas, n, written = {}, {}, {}, 0, 0
for i = 1, count do
  local key, index = row_keys[i], ARGV[3 * i + 1]
  local current = latest[key] or stored[i]
  if not current or at_least(index, current) then
    latest[key] = index
    rows[n + 1], rows[n + 2] = key, ARGV[3 * i + 2]
    metas[n + 1], metas[n + 2] = key, index
    n = n + 2
    written = written + 1
  end
end
for first = 1, n, CHUNK + 1 do
  local last = math.min(first + CHUNK, n)
  redis.call('HSET', KEYS[2], unpack(rows, first, last))
  redis.call('HSET', KEYS[3], unpack(metas, first, last))
end

local checkpoint = redis.call('HGET', KEYS[1], 'index') or ''
if ARGV[2] ~= '' and (checkpoint == '' or at_least(ARGV[2], checkpoint)) then
  checkpoint = ARGV[2]
  redis.call('HSET', KEYS[1], 'index', checkpoint)
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return {checkpoint, written, count - written}
