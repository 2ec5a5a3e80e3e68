-- An operator asks for a snapshot: the stream's next batch is answered
-- snapshot_needed: true. While the last snapshot's prune runs, the request is
-- deferred: prune_step.lua turns it into 'requested' when the prune completes.
-- KEYS[1] checkpoint hash
-- ARGV[1] now_ms
-- Returns the snapshot state now, or '' when the stream is unknown (nothing written)

if redis.call('EXISTS', KEYS[1]) == 0 then
  return ''
end
local state = redis.call('HGET', KEYS[1], 'snapshot_state')
redis.call('HSET', KEYS[1], 'snapshot_requested_at', ARGV[1])
if state == 'pruning' then
  redis.call('HSET', KEYS[1], 'snapshot_deferred', ARGV[1])
  return 'pruning'
end
redis.call('HSET', KEYS[1], 'snapshot_state', 'requested')
return 'requested'
