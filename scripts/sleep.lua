-- sleep: the lease holder puts its job to sleep until a wake time. The wake
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: sleeping (id, step, until).
-- Rust side: common/src/moves/sleep.rs.
-- time is stored as a durable step (outcome 'sleep', value: the wake time
-- in ms; see step.lua), the lease is given up and the job moves from active
-- to delayed, due at the wake time, giving back the attempt its lease
-- counted: a sleep spends no attempt and holds no worker, nor a slot of
-- its concurrency key (a singleton key's holder keeps the key).
-- ARGV[3] = id, ARGV[4] = the attempt's lease token, ARGV[5] = the step's
-- key ('~sleep#<occurrence>'), ARGV[6] = 'in' (ARGV[7] = ms from now, by
-- Redis' clock) or 'at' (ARGV[7] = Unix ms), ARGV[8] = most steps a job may
-- store, ARGV[9] = most bytes they may take.
-- Returns {status, detail}: {'sleeping', wake ms}; {'awake', wake ms} (the
-- wake time has passed already: recorded, and the job runs on under its
-- lease); {'stored', record} (this sleep was recorded before: the caller
-- must use it); {'lost', ''}; {'gone', ''}; {'limit', why}.
local id, token, key = ARGV[3], ARGV[4], ARGV[5]
local jk = JOB_PREFIX .. id
local v, refused = read_for_step(jk, key, token)
if not v then
  return refused
end
local now, now_text = clock()
local wake_at = tonumber(ARGV[7])
if ARGV[6] == 'in' then
  wake_at = now + wake_at
end
local wake_text = string.format('%d', wake_at)
local seq, refused = record_step(jk, key, v, 'sleep', '0', wake_text, function()
  return now_text
end, tonumber(ARGV[8]), tonumber(ARGV[9]))
if not seq then
  return refused
end
if wake_at <= now then
  return { 'awake', wake_text }
end
local attempt = tonumber(v[3]) or 1
redis.call('ZREM', K_ACTIVE, id)
redis.call('HSET', jk, F_STATE, 'delayed', F_TOKEN, '', F_ATTEMPTS, tostring(math.max(attempt - 1, 0)))
to_delayed(id, wake_text)
-- A sleeping job holds no slot of its concurrency key, unless it holds a
-- singleton key: that one it keeps while it sleeps (see free_key_slot).
local ckey = redis.call('HGET', jk, F_CKEY)
if ckey and not is_holder(id, ckey) then
  free_key_slot(ckey)
end
emit('ev', 'sleeping', 'id', id, 'step', key, 'until', wake_text)
return { 'sleeping', wake_text }
