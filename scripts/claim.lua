-- claim: a worker took jobs from the hand-off list (see add.lua); record them
-- as its own and extend their leases to its full lease.
-- ARGV[3] = lease ms, ARGV[4] = worker id, then id, token per job.
-- Returns the ids whose lease is lost (the reaper returned the job meanwhile).
local now = now_ms()
local deadline = tostring(now + tonumber(ARGV[3]))
local lost, leases, ids = {}, {}, {}
for b = 5, #ARGV, 2 do
  local id, token = ARGV[b], ARGV[b + 1]
  local jk = JOB_PREFIX .. id
  local v = redis.call('HMGET', jk, 'tk', 's')
  if v[1] == token and v[2] == 'active' then
    redis.call('HSET', jk, 'w', ARGV[4])
    leases[#leases + 1] = deadline
    leases[#leases + 1] = id
    ids[#ids + 1] = id
  else
    lost[#lost + 1] = id
  end
end
if #ids > 0 then
  redis.call('ZADD', K_ACTIVE, 'XX', unpack(leases))
  emit('ev', 'active', 'ids', table.concat(ids, ','), 'worker', ARGV[4])
end
return lost
