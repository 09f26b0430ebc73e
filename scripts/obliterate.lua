-- obliterate: delete the queue, its jobs and its keys, in bounded calls.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: none (the events stream is deleted with the queue).
-- Rust side: common/src/moves/obliterate.rs.
-- ARGV[3] = jobs to delete at most in this call, ARGV[4] = '1' to go ahead
-- even with running jobs or live workers, ARGV[5] = '1' when the caller
-- relayed the flow outbox and what is left of it cannot be read (it goes,
-- with the stops and cascade tasks left).
-- A job deleted before it ended whose parent is in another queue is that
-- parent's child removed: it leaves a record in the flow outbox (see
-- child_ended in prelude.lua), as remove.lua does; a parent in this queue
-- is being deleted too. A parent deleted while it waited for children has
-- its children in other queues removed (see queue_cascade in prelude.lua).
-- The queue's last keys go only once the outbox, the stops and the cascade
-- tasks are done (relayed), so no record for another queue is lost here.
-- Its idempotency keys go too (found through <meta>:idem-keys, see add.lua;
-- keys set before that index existed expire with their windows).
-- Returns {status, jobs deleted by this call}: status 'busy' (nothing done:
-- jobs are running or workers are live, and not forced), 'more' (call again),
-- 'relay' (every job is gone; relay the flow records, see relay_outbox in
-- common/src/flow.rs, then call again) or 'done' (every key of the queue is
-- gone).
local now = now_ms()
local limit = tonumber(ARGV[3])
if ARGV[4] ~= '1' then
  local running = redis.call('ZCARD', K_ACTIVE)
  if redis.call('ZSCORE', K_ACTIVE, ACTIVE_PIN) then
    running = running - 1
  end
  if running > 0 or redis.call('ZCOUNT', K_WORKERS, now, '+inf') > 0 then
    return { 'busy', 0 }
  end
end

local deleted = 0
local function delete_jobs(ids)
  local keys = {}
  for _, id in ipairs(ids) do
    if id ~= ACTIVE_PIN then
      local jk = JOB_PREFIX .. id
      keys[#keys + 1] = jk
      local v = redis.call('HMGET', jk, F_STATE, F_PARENT)
      -- A parent field starting with a newline names a parent of this queue.
      if v[2] and string.byte(v[2], 1) ~= 10 and v[1] ~= 'completed' and v[1] ~= 'failed' then
        child_ended(id, v[2], 'failed', 'removed: its queue was deleted')
      end
      -- Its children in other queues are removed, as remove.lua's are.
      if v[1] == 'waiting-children' then
        queue_cascade(id, jk, 'remove', 'removed')
      end
    end
  end
  for i = 1, #keys, CHUNK do
    redis.call('DEL', unpack(keys, i, math.min(i + CHUNK - 1, #keys)))
  end
  deleted = deleted + #keys
end
-- Every job is on one of these (a handed-over one is also active).
for _, list in ipairs({ K_WAIT, K_COMPLETED }) do
  while deleted < limit do
    local ids = redis.call('LRANGE', list, 0, limit - deleted - 1)
    if #ids == 0 then
      break
    end
    delete_jobs(ids)
    redis.call('LTRIM', list, #ids, -1)
  end
end
for _, set in ipairs({ K_PRIO, K_DELAYED, K_ACTIVE, K_DLQ, K_META .. ':flow:wc' }) do
  while deleted < limit do
    local ids = redis.call('ZRANGE', set, 0, limit - deleted - 1)
    if #ids == 0 or (#ids == 1 and ids[1] == ACTIVE_PIN) then
      break
    end
    delete_jobs(ids)
    call_chunked('ZREM', set, ids)
  end
end
-- Jobs held for their concurrency key (see fetch.lua), a list per key.
for _, key in ipairs(redis.call('HKEYS', K_META .. ':ck:held')) do
  local list = K_META .. ':ck:w:' .. key
  while deleted < limit do
    local ids = redis.call('LRANGE', list, 0, limit - deleted - 1)
    if #ids == 0 then
      redis.call('HDEL', K_META .. ':ck:held', key)
      break
    end
    delete_jobs(ids)
    redis.call('LTRIM', list, #ids, -1)
  end
end
-- Idempotency keys, found through their index (see add.lua); each counts
-- against the call's limit like a job.
local idem_index = K_META .. ':idem-keys'
local work = deleted
while work < limit do
  local keys = redis.call('ZRANGE', idem_index, 0, limit - work - 1)
  if #keys == 0 then
    break
  end
  local names = {}
  for i, key in ipairs(keys) do
    names[i] = K_META .. ':idem:' .. key
  end
  for i = 1, #names, CHUNK do
    redis.call('DEL', unpack(names, i, math.min(i + CHUNK - 1, #names)))
  end
  redis.call('ZREMRANGEBYRANK', idem_index, 0, #keys - 1)
  work = work + #keys
end
if work >= limit then
  return { 'more', deleted }
end
if ARGV[5] ~= '1' then
  for _, list in ipairs({ 'out', 'down', 'cx' }) do
    if redis.call('LLEN', flow_key(list)) > 0 then
      return { 'relay', deleted }
    end
  end
end
for _, task in ipairs(redis.call('LRANGE', flow_key('cx'), 0, -1)) do
  redis.call('DEL', flow_key('cx:' .. (string.match(task, '^[^\n]*\n([^\n]*)') or '')))
end
redis.call('DEL', K_META, K_WAIT, K_PRIO, K_DELAYED, K_ACTIVE, K_COMPLETED, K_DLQ, K_EVENTS, K_WAKE,
  K_PARKED, K_HANDOFF, K_LIMITER, K_WORKERS, K_WORKER_INFO, K_META .. ':ck:active', K_META .. ':ck:held',
  K_META .. ':ck:limits', K_META .. ':ck:ready',
  K_META .. ':ck:waiting', idem_index, K_META .. ':stats', K_META .. ':stats:m', K_META .. ':stats:h',
  K_META .. ':flow:out', K_META .. ':flow:down', K_META .. ':flow:cx')
return { 'done', deleted }
