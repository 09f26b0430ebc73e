-- obliterate: delete the queue, its jobs and its keys, in bounded calls.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: none (the events stream is deleted with the queue).
-- Rust side: common/src/moves/obliterate.rs.
-- ARGV[3] = jobs to delete at most in this call, ARGV[4] = '1' to go ahead
-- even with running jobs or live workers.
-- Its idempotency keys go too (found through <meta>:idem-keys, see add.lua;
-- keys set before that index existed expire with their windows).
-- Returns {status, jobs deleted by this call}: status 'busy' (nothing done:
-- jobs are running or workers are live, and not forced), 'more' (call again)
-- or 'done' (every key of the queue is gone).
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
      keys[#keys + 1] = JOB_PREFIX .. id
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
redis.call('DEL', K_META, K_WAIT, K_PRIO, K_DELAYED, K_ACTIVE, K_COMPLETED, K_DLQ, K_EVENTS, K_WAKE,
  K_PARKED, K_HANDOFF, K_LIMITER, K_WORKERS, K_WORKER_INFO, K_META .. ':ck:active', K_META .. ':ck:held',
  K_META .. ':ck:limits', K_META .. ':ck:ready',
  K_META .. ':ck:waiting', idem_index, K_META .. ':stats', K_META .. ':stats:m', K_META .. ':stats:h',
  K_META .. ':flow:out')
return { 'done', deleted }
