-- dead_letter: act on the dead-letter list (jobs in state failed).
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: dead_letter_retry or dead_letter_purge (ids).
-- Rust side: common/src/moves/dead_letter.rs.
-- ARGV[3] = 'retry', 'retry_from' or 'purge', ARGV[4] = batch limit,
-- ARGV[5..] = ids (none: the oldest ARGV[4] entries); for 'retry_from',
-- ARGV[5] is a durable step's key ('<name>#<occurrence>') and the ids follow.
-- Retry makes a job waiting again with a fresh attempt budget and keeps its
-- history and its finished durable steps (the job resumes after them);
-- 'retry_from' first forgets the given step and every step stored after it
-- (they run again), and skips a job that has no such step; purge deletes a
-- job. Returns the ids acted on; ids not in the list are skipped.
local now = now_ms()
local action = ARGV[3]
local ids = {}
local first_id = 5
local from_step
if action == 'retry_from' then
  from_step, first_id = ARGV[5], 6
end
if #ARGV >= first_id then
  for i = first_id, #ARGV do
    ids[#ids + 1] = ARGV[i]
  end
else
  ids = redis.call('ZRANGE', K_DLQ, 0, tonumber(ARGV[4]) - 1)
end

-- Forget step `key` of job `jk` and every step stored after it; false if
-- the job has no such step. Reads every field of the job: bounded by the
-- step limit its workers set.
local function forget_steps_from(jk, key)
  local from = redis.call('HGET', jk, STEP_FIELD .. key)
  local from_seq = from and tonumber(string.match(from, '^(%d+) '))
  if not from_seq then
    return false
  end
  local all = redis.call('HGETALL', jk)
  local gone, count, bytes = {}, 0, 0
  for i = 1, #all, 2 do
    local field, record = all[i], all[i + 1]
    if string.sub(field, 1, #STEP_FIELD) == STEP_FIELD then
      local seq = tonumber(string.match(record, '^(%d+) ')) or from_seq
      if seq >= from_seq then
        gone[#gone + 1] = field
      else
        count = count + 1
        bytes = bytes + #field + #record
      end
    end
  end
  call_chunked('HDEL', jk, gone)
  redis.call('HSET', jk, F_STEP_COUNT, count, F_STEP_BYTES, bytes)
  return true
end

local done = {}
for _, id in ipairs(ids) do
  local jk = JOB_PREFIX .. id
  local listed = redis.call('ZSCORE', K_DLQ, id)
  if listed and from_step and not forget_steps_from(jk, from_step) then
    listed = nil
  end
  if listed then
    redis.call('ZREM', K_DLQ, id)
    if action ~= 'purge' then
      local why = 'moved back from the dead-letter list'
      if from_step then
        why = why .. ', to run again from step ' .. from_step
      end
      push_history(jk, { out = 'retried', fin = now, err = why })
      redis.call('HSET', jk, F_STATE, 'waiting', F_ATTEMPTS, 0, F_STALLS, 0)
      redis.call('HDEL', jk, F_FINISHED, F_TOKEN)
      local v = redis.call('HMGET', jk, F_PRIORITY, F_CKEY)
      to_waiting(id, v[1], false)
      if v[2] then
        count_key_waiting(v[2], 1)
      end
    else
      redis.call('DEL', jk)
    end
    done[#done + 1] = id
  end
end
if #done > 0 then
  if action ~= 'purge' then
    if not is_paused() then
      wake()
    end
    emit('ev', 'dead_letter_retry', 'ids', table.concat(done, ','))
  else
    emit('ev', 'dead_letter_purge', 'ids', table.concat(done, ','))
  end
end
return done
