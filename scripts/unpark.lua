-- unpark: a stopping worker no longer takes hand-offs (see add.lua).
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: released (ids) for unclaimed hand-offs sent back.
-- Rust side: common/src/moves/unpark.rs.
-- ARGV[3] = its parking member; optional ARGV[4] = its id, ARGV[5] = how long
-- it stays listed as live (ms; '0': it leaves, see reap.lua), ARGV[6] = what
-- it reports meanwhile (JSON). When no other worker is parked, the jobs left
-- on the hand-off list go back to the head of waiting, unrun and without
-- using an attempt. Returns how many went back.
local now, now_text = clock()
redis.call('ZREM', K_PARKED, ARGV[3])
if ARGV[5] == '0' then
  redis.call('ZREM', K_WORKERS, ARGV[4])
  redis.call('HDEL', K_WORKER_INFO, ARGV[4])
elseif ARGV[5] then
  register_worker(ARGV[4], now, now + tonumber(ARGV[5]), ARGV[6])
end
if redis.call('ZCOUNT', K_PARKED, now_text, '+inf') > 0 then
  return 0
end
local back = {}
local records = redis.call('LRANGE', K_HANDOFF, 0, -1)
redis.call('DEL', K_HANDOFF)
for i = #records, 1, -1 do
  local id, token = string.match(records[i], '^([^\n]*)\n([^\n]*)\n')
  local jk = JOB_PREFIX .. id
  local v = redis.call('HMGET', jk, F_TOKEN, F_STATE, F_ATTEMPTS, F_PRIORITY)
  if v[1] == token and v[2] == 'active' then
    requeue(id, jk, tonumber(v[3]) or 1, v[4])
    back[#back + 1] = id
  end
end
announce_released(back)
return #back
