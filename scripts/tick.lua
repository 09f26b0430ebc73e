-- tick: enqueue one tick of a schedule, at most once ever.
-- KEYS: the queue's nine standard keys (see prelude.lua), then KEYS[10] (below); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: added (id) when the tick's job is enqueued.
-- Rust side: common/src/moves/tick.rs.
-- Runs in the target queue's slot. KEYS[10] is the schedule's state hash in
-- that queue (<prefix>:{queue}:sched:<name>); its field `wm` (the watermark)
-- is the last tick handled, in ms. A tick at or below the watermark is refused,
-- so a tick is enqueued at most once even by two schedulers, a skewed clock, a
-- restart, or after the tick's job was trimmed.
-- ARGV[3] action: 'enqueue', 'chain' or 'miss' (record ticks dropped by the
-- misfire policy)
-- ARGV[4] tick (ms since the epoch, UTC)
-- 'enqueue': ARGV[5] job id, ARGV[6] job name, ARGV[7] data (JSON), ARGV[8]
-- stored options, ARGV[9] priority, ARGV[10] delay ms, ARGV[11] overlap
-- policy ('allow' or 'skip'). 'miss': ARGV[5] number of ticks missed.
-- 'chain': ARGV[5] the tick's job id (the last link's), ARGV[6] the queue's
-- name, ARGV[7] stored options, ARGV[8] priority, ARGV[9] overlap policy,
-- ARGV[10] number of links L, then per link: job name, data (JSON). Link n
-- of the L-1 first is job '<id>#<n>'; each is the only child of the next
-- (policy fail_parent, see flow.lua), so the links run in order and a link
-- that fails dead-letters the rest. A link that exists is left alone.
-- Returns {status, now ms, detail}; status is one of
--   added, overlap (previous tick's job still pending: skipped), exists,
--   missed, stale (tick <= watermark), early (tick not yet due by Redis time).
local K_STATE = KEYS[10]
local action, tick = ARGV[3], tonumber(ARGV[4])
local now, now_text = clock()
if tick > now then
  return { 'early', now_text, tostring(now) }
end
local wm = tonumber(redis.call('HGET', K_STATE, 'wm') or '-1')
if tick <= wm then
  return { 'stale', now_text, tostring(wm) }
end

if action == 'miss' then
  redis.call('HSET', K_STATE, 'wm', ARGV[4], 'last_missed', ARGV[4])
  redis.call('HINCRBY', K_STATE, 'missed', tonumber(ARGV[5]))
  return { 'missed', now_text, ARGV[5] }
end

local chain = action == 'chain'
local id, name, data, opts = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local prio, delay, overlap = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
if chain then
  opts, prio, delay, overlap = ARGV[7], tonumber(ARGV[8]), 0, ARGV[9]
end

if overlap == 'skip' then
  local prev = redis.call('HGET', K_STATE, 'id')
  if prev then
    local s = redis.call('HGET', JOB_PREFIX .. prev, F_STATE)
    if s == 'waiting' or s == 'delayed' or s == 'active' or s == 'waiting-children' then
      redis.call('HSET', K_STATE, 'wm', ARGV[4], 'last_overlap', ARGV[4])
      redis.call('HINCRBY', K_STATE, 'overlaps', 1)
      return { 'overlap', now_text, prev }
    end
  end
end

local jk = JOB_PREFIX .. id
if redis.call('EXISTS', jk) == 1 then
  redis.call('HSET', K_STATE, 'wm', ARGV[4], 'id', id)
  return { 'exists', now_text, id }
end

if chain then
  local queue, links = ARGV[6], tonumber(ARGV[10])
  local function link_id(n)
    return n == links and id or id .. '#' .. n
  end
  for n = 1, links do
    local lid = link_id(n)
    local ljk = JOB_PREFIX .. lid
    if redis.call('EXISTS', ljk) == 0 then
      local lname, ldata = ARGV[9 + 2 * n], ARGV[10 + 2 * n]
      if n == 1 then
        write_job(ljk, lname, ldata, opts, prio, 'waiting', now_text)
        to_waiting(lid, prio, false)
        if not is_paused() then
          wake()
        end
      else
        write_job(ljk, lname, ldata, opts, prio, 'waiting-children', now_text)
        local ref = queue .. '/' .. link_id(n - 1)
        redis.call('HSET', ljk, F_PENDING, '1', F_KIDS, ref, KID_FIELD .. ref, '?')
        redis.call('ZADD', flow_key('wc'), now_text, lid)
      end
      if n < links then
        redis.call('HSET', ljk, F_PARENT, '\n' .. link_id(n + 1) .. '\nfail_parent\n' .. queue .. '/' .. lid)
      end
    end
  end
elseif delay > 0 then
  write_job(jk, name, data, opts, prio, 'delayed', now_text)
  if not is_paused() then
    to_delayed(id, now + delay)
  else
    redis.call('ZADD', K_DELAYED, now + delay, id)
  end
else
  write_job(jk, name, data, opts, prio, 'waiting', now_text)
  to_waiting(id, prio, false)
  if not is_paused() then
    wake()
  end
end
redis.call('HSET', K_STATE, 'wm', ARGV[4], 'id', id, 'at', now_text)
redis.call('HINCRBY', K_STATE, 'runs', 1)
emit('ev', 'added', 'id', id)
return { 'added', now_text, id }
