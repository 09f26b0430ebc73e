-- dead_letter: act on the dead-letter list (jobs in state failed).
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: dead_letter_retry or dead_letter_purge (ids).
-- Rust side: common/src/moves/dead_letter.rs.
-- ARGV[3] = 'retry' or 'purge', ARGV[4] = batch limit, ARGV[5..] = ids
-- (none: the oldest ARGV[4] entries). Retry makes a job waiting again with a
-- fresh attempt budget and keeps its history; purge deletes it.
-- Returns the ids acted on; ids not in the list are skipped.
local now = now_ms()
local action = ARGV[3]
local ids = {}
if #ARGV >= 5 then
  for i = 5, #ARGV do
    ids[#ids + 1] = ARGV[i]
  end
else
  ids = redis.call('ZRANGE', K_DLQ, 0, tonumber(ARGV[4]) - 1)
end
local done = {}
for _, id in ipairs(ids) do
  if redis.call('ZREM', K_DLQ, id) == 1 then
    local jk = JOB_PREFIX .. id
    if action == 'retry' then
      push_history(jk, { out = 'retried', fin = now, err = 'moved back from the dead-letter list' })
      redis.call('HSET', jk, F_STATE, 'waiting', F_ATTEMPTS, 0, F_STALLS, 0)
      redis.call('HDEL', jk, F_FINISHED, F_TOKEN)
      to_waiting(id, redis.call('HGET', jk, F_PRIORITY), false)
    else
      redis.call('DEL', jk)
    end
    done[#done + 1] = id
  end
end
if #done > 0 then
  if action == 'retry' and not is_paused() then
    wake()
  end
  emit('ev', 'dead_letter_' .. action, 'ids', table.concat(done, ','))
end
return done
