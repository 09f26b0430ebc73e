-- remove: delete one job that is not active. ARGV[3] = id.
-- Returns OK, NOT_FOUND or JOB_ACTIVE. Removing a waiting or completed job
-- scans its list (LREM), like removing from the middle of any queue.
local id = ARGV[3]
local jk = JOB_PREFIX .. id
local s = redis.call('HGET', jk, 's')
if not s then
  return NOT_FOUND
end
if s == 'active' then
  return JOB_ACTIVE
end
if s == 'waiting' then
  if redis.call('LREM', K_WAIT, 1, id) == 0 then
    redis.call('ZREM', K_PRIO, id)
  end
elseif s == 'delayed' then
  redis.call('ZREM', K_DELAYED, id)
elseif s == 'completed' then
  redis.call('LREM', K_COMPLETED, 1, id)
elseif s == 'failed' then
  redis.call('ZREM', K_DLQ, id)
end
redis.call('DEL', jk)
emit('ev', 'removed', 'id', id)
return OK
