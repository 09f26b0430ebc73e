-- release: hand leased jobs back to waiting without using up an attempt
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: released (ids).
-- Rust side: common/src/moves/release.rs.
-- (graceful shutdown). ARGV[3..] = id, token per job.
-- Returns the number of jobs released; jobs whose lease is lost are skipped.
local now = now_ms()
local released = {}
for b = #ARGV - 1, 3, -2 do
  local id, token = ARGV[b], ARGV[b + 1]
  local jk = JOB_PREFIX .. id
  local v = redis.call('HMGET', jk, F_TOKEN, F_STATE, F_STARTED, F_ATTEMPTS, F_WORKER, F_PRIORITY, F_CKEY)
  if v[1] == token and v[2] == 'active' then
    local attempt = tonumber(v[4]) or 1
    push_history(jk, { n = attempt, out = 'released', st = tonumber(v[3]), fin = now, w = v[5] or nil, tk = token,
      err = 'worker shut down before the job finished' })
    if v[7] and is_holder(id, v[7]) then
      -- A singleton key's holder keeps the key's slot (see fetch.lua).
      requeue(id, jk, attempt, v[6])
    elseif v[7] then
      -- A job of a concurrency key goes back first among the jobs held for
      -- its key, and the slot it frees readies the key (see fetch.lua).
      redis.call('ZREM', K_ACTIVE, id)
      redis.call('HSET', jk, F_STATE, 'waiting', F_TOKEN, '', F_ATTEMPTS, attempt - 1)
      hold(id, v[7], true)
      free_key_slot(v[7])
    else
      requeue(id, jk, attempt, v[6])
    end
    if v[7] then
      count_key_waiting(v[7], 1)
    end
    released[#released + 1] = id
  end
end
announce_released(released)
return #released
