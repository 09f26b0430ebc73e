-- reap: recover jobs whose lease expired, and trim old completed jobs.
-- Also drops at most a batch of the idempotency-key index's entries whose
-- window is over (their keys expired by themselves, see add.lua).
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: stalled (recovered, failed). Counts s (stalls) and f
-- (dead-lettered), and files the queue's counters into its per-minute and
-- per-hour series (see count_stat and snapshot_stats in prelude.lua).
-- Rust side: common/src/moves/reap.rs.
-- ARGV[3] = stalls allowed before a job is dead-lettered, ARGV[4] = batch limit,
-- ARGV[5] = max age of completed jobs in ms (0: no age limit); optional
-- ARGV[6] = the calling worker's id, ARGV[7] = what it reports (JSON), ARGV[8] =
-- how long its registration holds (ms): the worker (re)registers as live.
-- Safe to run from any worker, any number of times.
-- Returns {recovered ids (list), dead-lettered ids (list), completed jobs trimmed,
-- flow records waiting for the relay (outcomes, stops and cascades)}.
local now = now_ms()
local max_stalls = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, limit)
local recovered, dead = {}, {}
-- Hand-off records ('id\ntoken\n' heads) of the jobs returned unclaimed.
local unclaimed = {}
local stalled = 0
for _, id in ipairs(expired) do
  local jk = JOB_PREFIX .. id
  redis.call('ZREM', K_ACTIVE, id)
  local v = redis.call('HMGET', jk, F_STATE, F_STARTED, F_ATTEMPTS, F_WORKER, F_PRIORITY, F_STALLS, F_TOKEN, F_CKEY, F_PARENT)
  if v[1] == 'active' and not v[4] then
    -- Handed over by an add (add.lua) but never claimed: the job did not start,
    -- so no stall is counted; its record leaves the hand-off list below.
    local attempt = tonumber(v[3]) or 1
    push_history(jk, { n = attempt, out = 'stalled', st = tonumber(v[2]), fin = now, tk = v[7],
      err = 'handed to a waiting worker that did not take it in time' })
    back_to_waiting(id, jk, attempt, v[5])
    if v[8] then
      count_key_waiting(v[8], 1)
    end
    recovered[#recovered + 1] = id
    unclaimed[id .. '\n' .. v[7] .. '\n'] = true
  elseif v[1] == 'active' then
    stalled = stalled + 1
    local stalls = (tonumber(v[6]) or 0) + 1
    local attempt = tonumber(v[3]) or 1
    push_history(jk, { n = attempt, out = 'stalled', st = tonumber(v[2]), fin = now, w = v[4] or nil, tk = v[7],
      err = 'lease expired: the worker stopped renewing it (crashed, killed or partitioned)' })
    if stalls > max_stalls then
      local message = 'stalled ' .. stalls .. ' times (allowed: ' .. max_stalls .. ')'
      redis.call('HSET', jk, F_STATE, 'failed', F_FINISHED, now, F_ERROR, message, F_STALLS, stalls, F_TOKEN, '')
      redis.call('ZADD', K_DLQ, now, id)
      if v[9] then
        child_ended(id, v[9], 'failed', message)
      end
      dead[#dead + 1] = id
      -- The lease held a slot of the job's concurrency key: it frees with the lease.
      if v[8] then
        free_key_slot(v[8])
      end
    else
      -- A stall does not use up an attempt: stalls have their own limit.
      redis.call('HSET', jk, F_STATE, 'waiting', F_STALLS, stalls, F_TOKEN, '', F_ATTEMPTS, attempt - 1)
      if v[8] then
        count_key_waiting(v[8], 1)
      end
      if v[8] and is_holder(id, v[8]) then
        -- A singleton key's holder keeps the key's slot (see fetch.lua).
        to_waiting(id, v[5], true)
      elseif v[8] then
        -- First among the jobs held for its key; its freed slot readies the key.
        hold(id, v[8], true)
        free_key_slot(v[8])
      else
        to_waiting(id, v[5], true)
      end
      recovered[#recovered + 1] = id
    end
  end
end
drop_handoff_records(unclaimed)
-- Parkings of workers that stopped without unparking (killed, say).
redis.call('ZREMRANGEBYSCORE', K_PARKED, '-inf', '(' .. now)
-- The live workers: this one, and none of those whose registration lapsed.
if ARGV[6] then
  register_worker(ARGV[6], now, now + tonumber(ARGV[8]), ARGV[7])
end
local lapsed = redis.call('ZRANGEBYSCORE', K_WORKERS, '-inf', '(' .. now, 'LIMIT', 0, limit)
if #lapsed > 0 then
  redis.call('ZREM', K_WORKERS, unpack(lapsed))
  redis.call('HDEL', K_WORKER_INFO, unpack(lapsed))
end
if #recovered > 0 and not is_paused() then
  wake()
end
if stalled > 0 then
  count_stat('s', stalled)
end
if #dead > 0 then
  count_stat('f', #dead)
end
snapshot_stats(K_META .. ':stats:m', math.floor(now / 60000), 1440)
snapshot_stats(K_META .. ':stats:h', math.floor(now / 3600000), 720)
if #recovered + #dead > 0 then
  emit('ev', 'stalled', 'recovered', table.concat(recovered, ','), 'failed', table.concat(dead, ','))
end

-- One command when no entry is due. Those due rank lowest, so they go by
-- rank; ZREMRANGEBYSCORE takes no batch limit.
local idem_over = redis.call('ZRANGEBYSCORE', K_META .. ':idem-keys', '-inf', now, 'LIMIT', 0, limit)
if #idem_over > 0 then
  redis.call('ZREMRANGEBYRANK', K_META .. ':idem-keys', 0, #idem_over - 1)
end

local trimmed = 0
local max_age = tonumber(ARGV[5])
if max_age > 0 then
  while trimmed < limit do
    local id = redis.call('LINDEX', K_COMPLETED, 0)
    if not id then
      break
    end
    local fin = tonumber(redis.call('HGET', JOB_PREFIX .. id, F_FINISHED))
    if fin and now - fin < max_age then
      break
    end
    redis.call('LPOP', K_COMPLETED)
    redis.call('DEL', JOB_PREFIX .. id)
    trimmed = trimmed + 1
  end
end
-- Flow records waiting for the relay (see relay_outbox in common/src/flow.rs):
-- the worker relays only when there are some, not with every pass.
local flow_pending = 0
for _, list in ipairs({ 'out', 'down', 'cx' }) do
  flow_pending = flow_pending + redis.call('LLEN', K_META .. ':flow:' .. list)
end
return { recovered, dead, trimmed, flow_pending }
