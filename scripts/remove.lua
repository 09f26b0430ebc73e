-- remove: delete one job that is not active. ARGV[3] = id.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: removed (id).
-- Rust side: common/src/moves/remove.rs.
-- Returns OK, NOT_FOUND or JOB_ACTIVE. Removing a waiting or completed job
-- scans its list (LREM), like removing from the middle of any queue.
local id = ARGV[3]
local jk = JOB_PREFIX .. id
local v = redis.call('HMGET', jk, F_STATE, F_CKEY, F_PARENT)
local s = v[1]
if not s then
  return NOT_FOUND
end
if s == 'active' then
  return JOB_ACTIVE
end
if s == 'waiting' then
  if redis.call('LREM', K_WAIT, 1, id) == 0 and not (v[2] and drop_held(id, v[2])) then
    redis.call('ZREM', K_PRIO, id)
  end
  if v[2] then
    drop_holder(id, v[2])
    count_key_waiting(v[2], -1)
  end
elseif s == 'waiting-children' then
  redis.call('ZREM', flow_key('wc'), id)
elseif s == 'delayed' then
  redis.call('ZREM', K_DELAYED, id)
  if v[2] then
    drop_holder(id, v[2])
  end
elseif s == 'completed' then
  redis.call('LREM', K_COMPLETED, 1, id)
elseif s == 'failed' then
  redis.call('ZREM', K_DLQ, id)
end
redis.call('DEL', jk)
-- A child removed before it finished counts as failed for its parent.
if v[3] and s ~= 'completed' and s ~= 'failed' then
  child_ended(id, v[3], 'failed', 'removed')
end
emit('ev', 'removed', 'id', id)
return OK
