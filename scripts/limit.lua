-- limit: ARGV[3] = '<max> <window ms>' sets the queue's rate limit (at most
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: limit (rate).
-- Rust side: common/src/moves/limit.rs.
-- max jobs start per window, see fetch.lua), '' removes it. Either way the
-- current window ends: a worker waiting for it to close fetches now. A
-- limited queue hands nothing over (an add could not count against the
-- limit), so the parkings go, as on a pause. Returns OK.
if ARGV[3] == '' then
  redis.call('HDEL', K_META, 'rl')
else
  redis.call('HSET', K_META, 'rl', ARGV[3])
  redis.call('DEL', K_PARKED)
end
redis.call('DEL', K_LIMITER)
wake()
emit('ev', 'limit', 'rate', ARGV[3])
return OK
