-- cancel: an operator stops a job for good. ARGV[3] = id, ARGV[4] = reason.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: cancelled (id, error).
-- Rust side: common/src/moves/cancel.rs.
-- A waiting or delayed job leaves its list; a running one loses its lease
-- (the token is revoked, so its worker's renewal reports it lost and its
-- result is refused, see renew.lua and complete.lua). Either way it lands in
-- the dead-letter list with the reason as its error and a 'cancelled' attempt
-- in its history; `dlq retry` runs it again. Returns OK, NOT_FOUND or
-- WRONG_STATE (completed, or dead-lettered already).
local now = now_ms()
local id, reason = ARGV[3], ARGV[4]
local jk = JOB_PREFIX .. id
local v = redis.call('HMGET', jk, F_STATE, F_TOKEN, F_STARTED, F_ATTEMPTS, F_WORKER, F_CKEY, F_PARENT)
local s = v[1]
if not s then
  return NOT_FOUND
end
if s == 'completed' or s == 'failed' then
  return WRONG_STATE
end
if s == 'active' then
  redis.call('ZREM', K_ACTIVE, id)
  -- Handed over by an add and not claimed yet: no worker is to take it.
  if not v[5] then
    drop_handoff_records({ [id .. '\n' .. v[2] .. '\n'] = true })
  end
  push_history(jk, { n = tonumber(v[4]), out = 'cancelled', st = tonumber(v[3]), fin = now, w = v[5] or nil, tk = v[2], err = reason })
  if v[6] then
    free_key_slot(v[6])
  end
elseif s == 'waiting-children' then
  redis.call('ZREM', flow_key('wc'), id)
  push_history(jk, { out = 'cancelled', fin = now, err = reason })
elseif s == 'delayed' then
  redis.call('ZREM', K_DELAYED, id)
  if v[6] then
    drop_holder(id, v[6])
  end
  push_history(jk, { out = 'cancelled', fin = now, err = reason })
else
  if redis.call('LREM', K_WAIT, 1, id) == 0 and not (v[6] and drop_held(id, v[6])) then
    redis.call('ZREM', K_PRIO, id)
  end
  if v[6] then
    drop_holder(id, v[6])
    count_key_waiting(v[6], -1)
  end
  push_history(jk, { out = 'cancelled', fin = now, err = reason })
end
redis.call('HSET', jk, F_STATE, 'failed', F_TOKEN, '', F_FINISHED, now, F_ERROR, reason)
redis.call('ZADD', K_DLQ, now, id)
emit('ev', 'cancelled', 'id', id, 'error', reason)
-- A cancelled child counts as failed for its parent.
if v[7] then
  child_ended(id, v[7], 'failed', 'cancelled: ' .. reason)
end
return OK
