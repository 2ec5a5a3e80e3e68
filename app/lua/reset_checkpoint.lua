-- An operator sets a stream's checkpoint to a given index, or removes it (the
-- status endpoint then answers 404 and the agent starts over). Rows stay.
-- KEYS[1] checkpoint hash
-- ARGV[1] the new index as a canonical decimal string, '' to remove it
-- Returns 1, or 0 when the stream is unknown (nothing written)

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
-- ingest_batch.lua takes `rows_index`, else the checkpoint, as the highest index of
-- any stored row: a stream written before `rows_index` was kept records it now.
local state = redis.call('HMGET', KEYS[1], 'index', 'rows_index')
if state[1] and not state[2] then
  redis.call('HSET', KEYS[1], 'rows_index', state[1])
end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'index')
else
  redis.call('HSET', KEYS[1], 'index', ARGV[1])
end
return 1
