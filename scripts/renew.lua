-- renew: extend the leases a worker holds, in one call.
-- ARGV[3] = lease ms, then id, token per job.
-- Returns the ids whose lease is lost (token taken over, job gone or no longer active).
local now = now_ms()
local deadline = now + tonumber(ARGV[3])
local lost, renewed = {}, {}
for b = 4, #ARGV, 2 do
  local id, token = ARGV[b], ARGV[b + 1]
  local v = redis.call('HMGET', JOB_PREFIX .. id, 'tk', 's')
  if v[1] == token and v[2] == 'active' then
    renewed[#renewed + 1] = deadline
    renewed[#renewed + 1] = id
  else
    lost[#lost + 1] = id
  end
end
for i = 1, #renewed, CHUNK do
  redis.call('ZADD', K_ACTIVE, 'XX', unpack(renewed, i, math.min(i + CHUNK - 1, #renewed)))
end
return lost
