-- complete: acknowledge a batch of finished jobs.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: completed (ids); flows' children also, per parent, one
-- child_finished (ids, children, outcomes) and children_done or failed (see
-- apply_children in prelude.lua). Counts each job's run and wait time (see
-- count_durations in prelude.lua).
-- Rust side: common/src/moves/complete.rs.
-- ARGV[3] = completed jobs to keep (-1: all, 0: delete at once), then
-- 3 arguments per job: id, token, result (JSON, '' = none).
-- Returns one code per job: OK, DUPLICATE (already acknowledged with this
-- token), LEASE_LOST or NOT_FOUND.
local now, now_text = clock()
local keep = tonumber(ARGV[3])
local out, done = {}, {}
local runs, waits = {}, {}
-- The keys of the jobs that held a concurrency key's slot (freed together
-- after the loop), and the flow children's outcomes (applied per parent).
local freed, ended = nil, nil
for b = 4, #ARGV, 3 do
  local id, token, result = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local jk = JOB_PREFIX .. id
  local v = redis.call('HMGET', jk, F_TOKEN, F_STATE, F_STARTED, F_CREATED, F_CKEY, F_PARENT)
  if not v[2] then
    out[#out + 1] = NOT_FOUND
  elseif v[1] ~= token then
    out[#out + 1] = LEASE_LOST
  elseif v[2] ~= 'active' then
    out[#out + 1] = DUPLICATE
  else
    if result ~= '' then
      redis.call('HSET', jk, F_STATE, 'completed', F_FINISHED, now_text, F_RESULT, result)
    else
      redis.call('HSET', jk, F_STATE, 'completed', F_FINISHED, now_text)
    end
    done[#done + 1] = id
    local started = tonumber(v[3]) or now
    runs[#runs + 1] = now - started
    waits[#waits + 1] = started - (tonumber(v[4]) or started)
    out[#out + 1] = OK
    if v[5] then
      freed = freed or {}
      freed[#freed + 1] = v[5]
    end
    -- A child of a flow tells its parent (see flow.lua), after the loop:
    -- one read, one write and one event per parent.
    if v[6] then
      ended = ended or {}
      ended[#ended + 1] = { id, v[6], 'ok', result }
    end
  end
end
if #done > 0 then
  call_chunked('ZREM', K_ACTIVE, done)
  if keep == 0 then
    for _, id in ipairs(done) do
      redis.call('DEL', JOB_PREFIX .. id)
    end
  else
    call_chunked('RPUSH', K_COMPLETED, done)
    if keep > 0 then
      local excess = redis.call('LLEN', K_COMPLETED) - keep
      if excess > 0 then
        local old = redis.call('LPOP', K_COMPLETED, math.min(excess, CHUNK))
        for _, id in ipairs(old) do
          redis.call('DEL', JOB_PREFIX .. id)
        end
      end
    end
  end
  count_durations(runs, waits)
  emit('ev', 'completed', 'ids', table.concat(done, ','))
end
if freed then
  -- 'ckw' counts the jobs held for any key: with none, no key is looked up.
  local held = redis.call('HGET', K_META, 'ckw')
  free_key_slots(freed, not held or held == '0')
end
if ended then
  children_ended(ended)
end
return out
