-- promote: make delayed jobs (waiting out a delay, or a retry's backoff)
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: promoted (ids).
-- Rust side: common/src/moves/promote.rs.
-- waiting now, at the back of their priority. ARGV[3] = at most how many,
-- then the ids; with no ids, the earliest due ones. Returns the ids promoted
-- (ids that are not delayed are skipped).
local ids
if #ARGV == 3 then
  ids = redis.call('ZRANGE', K_DELAYED, 0, tonumber(ARGV[3]) - 1)
else
  ids = { unpack(ARGV, 4, math.min(#ARGV, 3 + tonumber(ARGV[3]))) }
end
local done = {}
for _, id in ipairs(ids) do
  if redis.call('ZREM', K_DELAYED, id) == 1 then
    local jk = JOB_PREFIX .. id
    local v = redis.call('HMGET', jk, F_PRIORITY, F_CKEY)
    redis.call('HSET', jk, F_STATE, 'waiting')
    to_waiting(id, v[1], false)
    if v[2] then
      count_key_waiting(v[2], 1)
    end
    done[#done + 1] = id
  end
end
if #done > 0 then
  if not is_paused() then
    wake()
  end
  emit('ev', 'promoted', 'ids', table.concat(done, ','))
end
return done
