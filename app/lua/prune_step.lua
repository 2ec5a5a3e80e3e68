-- One bounded step of a snapshot's prune: HSCAN the rows hash from the stored cursor
-- and delete every row written before the pruned snapshot began: its row meta has a
-- generation below prune_generation, or none (every row written while a snapshot runs
-- or prunes gets row meta with its generation). Rows written since carry that
-- generation, so realtime writes during the prune survive it. Progress lives in the
-- checkpoint hash, so any process can resume a prune another one left; the lease in
-- KEYS[4] lets only one runner step at a time. The step that brings the cursor back
-- to 0 completes it.
-- With the change feed on, each deleted row is appended to it as op=delete.
-- KEYS[1] checkpoint hash   KEYS[2] rows hash   KEYS[3] row-meta hash   KEYS[4] prune lease
-- KEYS[5] the change feed (a Redis Stream)
-- ARGV[1] HSCAN COUNT   ARGV[2] now_ms   ARGV[3] runner token   ARGV[4] lease ms
-- ARGV[5] CHANGE_FEED_MAXLEN ('0': no feed)
-- Returns {status, rows deleted by this step}; status is 'more', 'done' (completed by
-- this step, or no prune pending) or 'busy' (another runner holds the lease)

local CHUNK = 1000  -- values per unpack; Redis refuses about 8,000

-- The cursor is prune_rows_cursor: prune_cursor was one of the row-meta hash, which
-- earlier versions scanned; a prune one of them began starts over on the rows.
local state = redis.call('HMGET', KEYS[1], 'snapshot_state', 'prune_generation',
  'prune_rows_cursor', 'snapshot_deferred')
if state[1] ~= 'pruning' then
  return {'done', 0}
end
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[3] then
  return {'busy', 0}
end
redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])

local generation = tonumber(state[2])
local scan = redis.call('HSCAN', KEYS[2], state[3] or '0', 'COUNT', ARGV[1])
local cursor, entries = scan[1], scan[2]
local doomed, doomed_index = {}, {}
for first = 1, #entries, 2 * CHUNK do
  local last = math.min(first + 2 * CHUNK - 1, #entries)
  local row_keys = {}
  for i = first, last, 2 do row_keys[#row_keys + 1] = entries[i] end
  local metas = redis.call('HMGET', KEYS[3], unpack(row_keys))
  for j = 1, #row_keys do
    local meta = metas[j] or ''
    local colon = string.find(meta, ':', 1, true)
    -- A bare index, or none, was written before any running snapshot: generation 0.
    local written_in = colon and tonumber(string.sub(meta, colon + 1)) or 0
    if written_in < generation then
      local row = entries[first + 2 * j - 1]
      doomed[#doomed + 1] = row_keys[j]
      -- The row's index: the one its JSON ends with, else its row meta's.
      doomed_index[#doomed] = string.match(row, '[{,]"index":(%d+)}$', -30)
        or (colon and string.sub(meta, 1, colon - 1) or meta)
    end
  end
end
-- HSCAN may return a field twice; HDEL's count is of fields that existed, so the
-- total stays exact.
local deleted = 0
for first = 1, #doomed, CHUNK do
  local last = math.min(first + CHUNK - 1, #doomed)
  deleted = deleted + redis.call('HDEL', KEYS[2], unpack(doomed, first, last))
  redis.call('HDEL', KEYS[3], unpack(doomed, first, last))
end
local total = redis.call('HINCRBY', KEYS[1], 'prune_deleted', deleted)
-- Change feed: one delete entry per row deleted here, with the index it had.
if ARGV[5] ~= '0' and #doomed > 0 then
  local appended, seen = 0, {}
  for j = 1, #doomed do
    if not seen[doomed[j]] then
      seen[doomed[j]] = true
      appended = appended + 1
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'op', 'delete',
        'key', doomed[j], 'index', doomed_index[j])
    end
  end
  redis.call('HINCRBY', KEYS[1], 'changes_added', appended)
end

if cursor ~= '0' then
  redis.call('HSET', KEYS[1], 'prune_rows_cursor', cursor)
  return {'more', deleted}
end
-- A snapshot asked for while this one pruned is requested now.
local next_state = state[4] and 'requested' or 'completed'
redis.call('HSET', KEYS[1], 'snapshot_state', next_state, 'snapshot_completed_at', ARGV[2],
  'snapshot_rows_pruned', total, 'snapshot_rows_seen', redis.call('HLEN', KEYS[2]))
redis.call('HDEL', KEYS[1], 'prune_generation', 'prune_rows_cursor', 'prune_cursor',
  'prune_deleted', 'snapshot_deferred')
redis.call('DEL', KEYS[4])
return {'done', deleted}
