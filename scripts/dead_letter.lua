-- dead_letter: act on the dead-letter list (jobs in state failed).
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
      redis.call('HSET', jk, 's', 'waiting', 'at', 0, 'stl', 0)
      redis.call('HDEL', jk, 'fin', 'tk')
      to_waiting(id, redis.call('HGET', jk, 'p'), false)
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
