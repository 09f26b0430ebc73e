-- renew: extend the leases a worker holds, in one call; also how a worker
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: active (ids, worker) when claiming hand-offs; none for a plain renewal.
-- Rust side: common/src/moves/renew.rs.
-- claims a job handed over to it (see add.lua).
-- ARGV[3] = lease ms, ARGV[4] = worker id to record as the jobs' worker ('' =
-- leave it: plain renewal), then id, token per job.
-- Returns the ids whose lease is lost (token taken over, job gone or no longer active).
local now = now_ms()
local deadline = now + tonumber(ARGV[3])
local claimer = ARGV[4]
local lost, renewed, claimed = {}, {}, {}
for b = 5, #ARGV, 2 do
  local id, token = ARGV[b], ARGV[b + 1]
  local v = redis.call('HMGET', JOB_PREFIX .. id, F_TOKEN, F_STATE)
  if v[1] == token and v[2] == 'active' then
    renewed[#renewed + 1] = deadline
    renewed[#renewed + 1] = id
    if claimer ~= '' then
      redis.call('HSET', JOB_PREFIX .. id, F_WORKER, claimer)
      claimed[#claimed + 1] = id
    end
  else
    lost[#lost + 1] = id
  end
end
for i = 1, #renewed, CHUNK do
  redis.call('ZADD', K_ACTIVE, 'XX', unpack(renewed, i, math.min(i + CHUNK - 1, #renewed)))
end
if #claimed > 0 then
  emit('ev', 'active', 'ids', table.concat(claimed, ','), 'worker', claimer)
end
return lost
