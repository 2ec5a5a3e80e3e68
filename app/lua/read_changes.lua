-- Read a page of a stream's change feed, and in the same atomic step what tells a
-- reader whether entries after its cursor were trimmed away. Changes nothing.
-- KEYS[1] checkpoint hash   KEYS[2] change feed
-- ARGV[1] XRANGE start of the page ('-', or '(' .. the cursor; '' for no page)   ARGV[2] COUNT
-- Returns {stream known (0/1), entries ever appended (changes_added), entries kept,
--   first kept id ('' if none), last id ('' if none), the page as XRANGE gives it}

local known = redis.call('EXISTS', KEYS[1])
local added = redis.call('HGET', KEYS[1], 'changes_added') or '0'
local kept = redis.call('XLEN', KEYS[2])
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local page = {}
if ARGV[1] ~= '' then
  page = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {known, tonumber(added), kept, first and first[1] or '', last and last[1] or '', page}
