-- An operator sets a stream's checkpoint to a given index, or removes it (the
-- status endpoint then answers 404 and the agent starts over). Rows stay.
-- KEYS[1] checkpoint hash
-- ARGV[1] the new index as a canonical decimal string, '' to remove it
-- Returns 1, or 0 when the stream is unknown (nothing written)

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'index')
else
  redis.call('HSET', KEYS[1], 'index', ARGV[1])
end
return 1
