-- progress: a handler records how far its attempt has come. ARGV[3] = id,
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: progress (id, progress).
-- Rust side: common/src/moves/progress.rs.
-- ARGV[4] = the attempt's lease token, ARGV[5] = the progress (JSON).
-- Stored as '<token> <progress>': readers show it for the attempt holding
-- that token, or for a job no longer running (how far its last attempt
-- came). Returns OK, LEASE_LOST (not the lease holder) or NOT_FOUND.
local id, token = ARGV[3], ARGV[4]
local jk = JOB_PREFIX .. id
local v = redis.call('HMGET', jk, F_STATE, F_TOKEN)
if not v[1] then
  return NOT_FOUND
end
if v[1] ~= 'active' or v[2] ~= token then
  return LEASE_LOST
end
redis.call('HSET', jk, F_PROGRESS, token .. ' ' .. ARGV[5])
emit('ev', 'progress', 'id', id, 'progress', ARGV[5])
return OK
