-- fail: record a failed attempt, then retry or dead-letter the job.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: retrying (id, error, delay) or failed (id, error). Counts r
-- (retried) or f (dead-lettered), see count_stat in prelude.lua.
-- Rust side: common/src/moves/fail.rs.
-- ARGV[3] = id, ARGV[4] = token, ARGV[5] = error message, ARGV[6] = outcome
-- kind (error, permanent, timeout, panic, ...), ARGV[7] = retry delay ms, or -1
-- to dead-letter (the worker decides from the job's attempts and backoff).
-- Returns OK (retry scheduled), DEAD (dead-lettered), DUPLICATE, LEASE_LOST or NOT_FOUND.
local now = now_ms()
local id, token, message, kind = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local delay = tonumber(ARGV[7])
local jk = JOB_PREFIX .. id
local v = redis.call('HMGET', jk, F_TOKEN, F_STATE, F_STARTED, F_ATTEMPTS, F_WORKER, F_PRIORITY, F_CKEY, F_PARENT)
if not v[2] then
  return NOT_FOUND
end
if v[1] ~= token then
  return LEASE_LOST
end
if v[2] ~= 'active' then
  return DUPLICATE
end
push_history(jk, { n = tonumber(v[4]), out = kind, st = tonumber(v[3]), fin = now, w = v[5] or nil, tk = token, err = message })
redis.call('ZREM', K_ACTIVE, id)
-- The job's concurrency key slot frees, unless the job holds a singleton
-- key and will run again: it keeps the key across the backoff.
if v[7] and (delay < 0 or not is_holder(id, v[7])) then
  free_key_slot(v[7])
end
if delay < 0 then
  redis.call('HSET', jk, F_STATE, 'failed', F_FINISHED, now, F_ERROR, message)
  redis.call('ZADD', K_DLQ, now, id)
  count_stat('f', 1)
  emit('ev', 'failed', 'id', id, 'error', message)
  if v[8] then
    child_ended(id, v[8], 'failed', message)
  end
  return DEAD
end
if delay == 0 then
  redis.call('HSET', jk, F_STATE, 'waiting', F_ERROR, message)
  to_waiting(id, v[6], false)
  if v[7] then
    count_key_waiting(v[7], 1)
  end
  if not is_paused() then
    wake()
  end
else
  redis.call('HSET', jk, F_STATE, 'delayed', F_ERROR, message)
  to_delayed(id, now + delay)
end
count_stat('r', 1)
emit('ev', 'retrying', 'id', id, 'error', message, 'delay', delay)
return OK
