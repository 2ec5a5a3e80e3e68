-- Apply one batch atomically: ordered upsert of its rows, snapshot control, then
-- checkpoint = max(stored, batch max). The checkpoint is written last, so a script
-- stopped part-way (OOM) never leaves it ahead of the rows it covers.
-- KEYS[1] checkpoint hash   KEYS[2] rows hash   KEYS[3] row-meta hash ("index" or "index:generation")
-- A row's index is the one its JSON ends with (`,"index":N}`, as fuagent's events do), else
-- its row meta's: row meta is written only for rows whose JSON does not end with their
-- index, and for every row written while a snapshot runs or prunes (with its generation).
-- Row meta left from an earlier write of a row whose JSON now ends with its index is stale.
-- KEYS[4] the prune lease: passed like every key of the stream, not used here
-- KEYS[5] the change feed (a Redis Stream)
-- ARGV[1] now_ms   ARGV[2] batch max index ('' if none)   ARGV[3] event count
-- ARGV[4] snapshot suggested (0/1)   ARGV[5] SNAPSHOT_ON_SUGGEST (0/1)
-- ARGV[6] is_snapshot_end: 0, 1 (end; complete the snapshot), 2 (end; SNAPSHOT_PRUNE: prune)
-- ARGV[7] agent_id   ARGV[8] task_id
-- ARGV[9] the batch's first index when every event has one and none is below the one
--   before it ('' otherwise)
-- ARGV[10] the events as one MessagePack array of three blocks of `count` strings each:
--   the row keys, their indexes ('' if none), their rows' JSON (cols[K + i], cols[I + i],
--   cols[J + i]); one argument unpacked here costs the app less than 3 * count arguments
-- ARGV[11] CHANGE_FEED_MAXLEN ('0': no feed)
-- ARGV[12] the row-key fields of the batch's keys, a compact JSON list
-- ARGV[13] ROW_META_EVERY_ROW (1: row meta for every row written, as earlier versions
--   wrote it, which they need to read while they still serve batches)
-- Returns {checkpoint ('' if none), snapshot_needed (0/1), rows written, rows skipped,
--   snapshot state after the batch ('pruning': prune_step.lua has work to do),
--   snapshot ended (1: this batch's end marker ended a running snapshot)},
--   or {'row_key_conflict', the stream's recorded row-key fields}, having written nothing

-- Indexes are canonical decimal strings: Lua numbers are doubles and cannot tell
-- 2^63-1 from 2^63-2, so compare by length, then lexically.
local function at_least(a, b)
  local la, lb = #a, #b
  if la ~= lb then return la > lb end
  return a >= b
end

local CHUNK = 1000  -- values per unpack; Redis refuses about 8,000

local now, batch_max, count, in_order_from = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[9]
local cols = cmsgpack.unpack(ARGV[10])
local K, I, J = 0, count, 2 * count  -- offsets of the three blocks in cols

-- Change feed: every write that changes a row is appended to KEYS[5], in the order
-- of the events, after the rows are written. A write that repeats the row as it is
-- (a replayed batch: same index, same JSON) appends nothing. With the feed off
-- (`feed` false) none of this runs.
local feed_maxlen = ARGV[11]
local feed = feed_maxlen ~= '0' and {} or false  -- event positions of the writes to append
local fed_at = {}  -- row key -> event position of its last write in this batch
local unsure = {}  -- positions whose write may repeat the stored row: compared before HSET
local stored_rows = {}  -- position -> the stored row of its key, read by stored_indexes()

local function note_write(i, key, stored_index)
  local last = fed_at[key]
  fed_at[key] = i
  if last then
    -- Written before in this batch: that write is the row now.
    if cols[J + i] ~= cols[J + last] then feed[#feed + 1] = i end
  elseif stored_index == false then
    feed[#feed + 1] = i  -- a new row
  elseif cols[I + i] ~= '' and cols[I + i] ~= stored_index then
    feed[#feed + 1] = i  -- a higher index: the row's JSON carries it, so it changed
  else
    feed[#feed + 1] = i
    unsure[#unsure + 1] = i
  end
end

-- Only the path that read the stored rows (stored_indexes) leaves positions unsure.
local function drop_repeats()
  local repeats = {}
  for _, i in ipairs(unsure) do
    if stored_rows[i] == cols[J + i] then repeats[i] = true end
  end
  local kept = {}
  for _, i in ipairs(feed) do
    if not repeats[i] then kept[#kept + 1] = i end
  end
  feed = kept
end

local function append_changes()
  for _, i in ipairs(feed) do
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', feed_maxlen, '*', 'op', 'upsert',
      'key', cols[K + i], 'index', cols[I + i], 'row', cols[J + i])
  end
  if #feed > 0 then
    redis.call('HINCRBY', KEYS[1], 'changes_added', #feed)
  end
end

local state = redis.call('HMGET', KEYS[1], 'index', 'snapshot_state', 'snapshot_generation',
  'prune_floor', 'snapshot_started_index', 'row_key_fields', 'events', 'batches', 'rows_index')

-- Row-key fields: a stream keeps those of its first batch (one written before they
-- were recorded adopts the batch's); a batch keyed otherwise would mix two key shapes
-- in the rows hash, so it is refused before anything is written.
local key_fields, recorded_fields = ARGV[12], state[6]
if recorded_fields and recorded_fields ~= key_fields then
  return {'row_key_conflict', recorded_fields}
end
if not recorded_fields then
  redis.call('HSET', KEYS[1], 'row_key_fields', key_fields)
end

local checkpoint = state[1] or ''
local snapshot_state = state[2] or 'none'
local generation = tonumber(state[3] or '0')
local floor = state[4] or ''
-- The highest index the stream's batches have carried: no stored row's is higher. A
-- reset of the checkpoint leaves it. A stream written before it was kept has its
-- checkpoint instead.
local rows_index = state[9] or checkpoint

-- Snapshot control: an operator's request, or the agent's suggestion, starts a
-- snapshot once; a suggestion while one runs is served by that one. While the last
-- snapshot's prune runs, a new one is deferred (prune_step.lua requests it when it
-- finishes): its generation would otherwise change under the prune.
local needed = 0
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'snapshot_suggested_at', now)
end
if snapshot_state == 'pruning' then
  if ARGV[4] == '1' and ARGV[5] == '1' then
    redis.call('HSET', KEYS[1], 'snapshot_deferred', now)
  end
elseif snapshot_state == 'requested'
    or (ARGV[4] == '1' and ARGV[5] == '1' and snapshot_state ~= 'running') then
  needed = 1
  generation = generation + 1
  snapshot_state = 'running'
  redis.call('HSET', KEYS[1], 'snapshot_state', 'running', 'snapshot_generation', generation,
    'snapshot_started_at', now, 'snapshot_started_index', checkpoint)
end
local ended = 0
if ARGV[6] ~= '0' then
  redis.call('HSET', KEYS[1], 'snapshot_end_at', now)
  if snapshot_state == 'running' then ended = 1 end
  if snapshot_state == 'running' and ARGV[6] == '2' then
    -- Rows older than this generation were not sent by the snapshot: prune_step.lua
    -- deletes them. From now on an absent row's event at or below the checkpoint the
    -- snapshot began at is a pre-snapshot image (the floor is the only tombstone).
    snapshot_state = 'pruning'
    redis.call('HSET', KEYS[1], 'snapshot_state', 'pruning', 'prune_generation', generation,
      'prune_rows_cursor', '0', 'prune_deleted', '0')
    local started = state[5] or ''
    if started ~= '' and (floor == '' or not at_least(floor, started)) then
      redis.call('HSET', KEYS[1], 'prune_floor', started)
    end
  elseif snapshot_state == 'running' then
    snapshot_state = 'completed'
    redis.call('HSET', KEYS[1], 'snapshot_state', 'completed', 'snapshot_completed_at', now)
  end
end

-- Ordered upsert. A batch in index order that starts above every stored row's index
-- and above the prune floor applies every event: nothing stored is newer, and no
-- event is older than one before it in the batch. It is written without reading a
-- stored index, which saves Redis a fifth of its work per event. Any other batch
-- reads every stored row with HMGET and compares their indexes one by one.
-- Locals, not globals, in the loops: a global is a table lookup each time.
local find, sub, match = string.find, string.sub, string.match

-- The index the stored row of each event's key has ('' if its event had none), or
-- false where there is no such row.
local function stored_indexes()
  local stored = {}
  for first = 1, count, CHUNK do
    local last = math.min(first + CHUNK - 1, count)
    local found = redis.call('HMGET', KEYS[2], unpack(cols, K + first, K + last))
    local asked, at = {}, {}  -- keys whose row's JSON does not end with its index
    for i = first, last do
      local row = found[i - first + 1]
      stored_rows[i] = row
      local index = row and match(row, '[{,]"index":(%d+)}$', -30)
      if index then
        stored[i] = index
      elseif row then
        asked[#asked + 1] = cols[K + i]
        at[#asked] = i
      else
        stored[i] = false
      end
    end
    if #asked > 0 then
      local metas = redis.call('HMGET', KEYS[3], unpack(asked))
      for j = 1, #asked do
        local meta = metas[j] or ''
        local colon = find(meta, ':', 1, true)
        stored[at[j]] = colon and sub(meta, 1, colon - 1) or meta
      end
    end
  end
  return stored
end

-- Whether a row written at `index` needs row meta: while a snapshot runs or prunes
-- (its generation), when its JSON does not end with its index, or with ARGV[13].
local every_row = ARGV[13] == '1'
local function needs_meta(row, index, gen_suffix)
  return gen_suffix or every_row
    or not find(row, ',"index":' .. index .. '}', #row - #index - 9, true)
end

local written, skipped = 0, 0
if count > 0 then
  local rows, metas, n, m = {}, {}, 0, 0  -- n, m: values in rows, in metas
  -- Only writes made while a snapshot runs or prunes record its generation; a bare
  -- index means "written before the current snapshot began". This spares Redis a
  -- new string per row outside snapshots (about a sixth of the script's time).
  local gen_suffix = false
  if snapshot_state == 'running' or snapshot_state == 'pruning' then
    gen_suffix = ':' .. generation
  end
  if in_order_from ~= '' and (rows_index == '' or not at_least(rows_index, in_order_from))
      and (floor == '' or not at_least(floor, in_order_from)) then
    for i = 1, count do
      local key, index, row = cols[K + i], cols[I + i], cols[J + i]
      -- Each write is of an index no stored row has: the feed takes it as a new row.
      if feed then note_write(i, key, false) end
      rows[n + 1] = key
      rows[n + 2] = row
      n = n + 2
      if needs_meta(row, index, gen_suffix) then
        metas[m + 1] = key
        metas[m + 2] = gen_suffix and index .. gen_suffix or index
        m = m + 2
      end
    end
    written = count
  else
    local stored, latest = stored_indexes(), {}  -- latest: row key -> index written so far
    for i = 1, count do
      local key, index = cols[K + i], cols[I + i]
      local current = latest[key]
      if current == nil then current = stored[i] end
      local apply
      if index == '' then
        apply = true
        index = current or ''
      elseif current == false then
        -- An absent row at or below the prune floor was deleted by a snapshot.
        apply = floor == '' or not at_least(floor, index)
      else
        -- at_least(index, current), inlined: this runs for most events
        apply = current == '' or #index > #current or (#index == #current and index >= current)
      end
      if apply then
        if feed then note_write(i, key, current) end
        latest[key] = index
        local row = cols[J + i]
        rows[n + 1] = key
        rows[n + 2] = row
        n = n + 2
        if needs_meta(row, index, gen_suffix) then
          metas[m + 1] = key
          metas[m + 2] = gen_suffix and index .. gen_suffix or index
          m = m + 2
        end
        written = written + 1
      else
        skipped = skipped + 1
      end
    end
  end
  if feed and #unsure > 0 then drop_repeats() end
  for first = 1, n, CHUNK do
    redis.call('HSET', KEYS[2], unpack(rows, first, math.min(first + CHUNK - 1, n)))
  end
  for first = 1, m, CHUNK do
    redis.call('HSET', KEYS[3], unpack(metas, first, math.min(first + CHUNK - 1, m)))
  end
  if feed then append_changes() end
end

if batch_max ~= '' and (checkpoint == '' or not at_least(checkpoint, batch_max)) then
  checkpoint = batch_max
end
-- One HSET for the checkpoint and the stream's counters (read with its state above):
-- at one event a batch, each call a script makes is a tenth of its time.
local totals = {'updated_at', now, 'agent_id', ARGV[7], 'task_id', ARGV[8],
  'events', tonumber(state[7] or '0') + count, 'batches', tonumber(state[8] or '0') + 1}
if batch_max ~= '' and (rows_index == '' or not at_least(rows_index, batch_max)) then
  totals[#totals + 1] = 'rows_index'
  totals[#totals + 1] = batch_max
end
if checkpoint ~= '' then
  totals[#totals + 1] = 'index'
  totals[#totals + 1] = checkpoint
end
redis.call('HSET', KEYS[1], unpack(totals))
return {checkpoint, needed, written, skipped, snapshot_state, ended}
