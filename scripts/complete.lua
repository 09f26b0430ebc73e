-- complete: acknowledge a batch of finished jobs.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: completed (ids); flows' children also, per parent, one
-- child_finished (ids, children, outcomes) and children_done or failed (see
-- apply_children in prelude.lua). Counts each job's run and wait time (see
-- count_durations in prelude.lua).
-- Rust side: common/src/moves/complete.rs.
-- ARGV[3] = completed jobs to keep (-1: all, 0: delete at once), ARGV[4] and
-- ARGV[5] = the sums of the jobs' run and wait times (ms), then 7 arguments
-- per job: id, token, result (JSON, '' = none), its run and wait time
-- buckets' fields (rb<n>, wb<n>: the worker picks them, see
-- common/src/stats.rs) and its run and wait times (ms). A job refused (not
-- found, lease lost, acknowledged already) is not counted: its times come
-- off the sums, so the jobs counted cost no number conversion.
-- Returns one code per job: OK, DUPLICATE (already acknowledged with this
-- token), LEASE_LOST or NOT_FOUND.
local _, now_text = clock()
local keep = tonumber(ARGV[3])
local out, done = {}, {}
-- The histograms' counts per bucket field (see count_durations) and the
-- times of the jobs refused, to take off the sums.
local buckets, touched = {}, {}
local refused_run, refused_wait = 0, 0
local function refuse(b, code)
  out[#out + 1] = code
  refused_run = refused_run + (tonumber(ARGV[b + 5]) or 0)
  refused_wait = refused_wait + (tonumber(ARGV[b + 6]) or 0)
end
-- The keys of the jobs that held a concurrency key's slot (freed together
-- after the loop), and the flow children's outcomes (applied per parent).
local freed, ended = nil, nil
for b = 6, #ARGV, 7 do
  local id, token, result = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local jk = JOB_PREFIX .. id
  local v = redis.call('HMGET', jk, F_TOKEN, F_STATE, F_CKEY, F_PARENT)
  if not v[2] then
    refuse(b, NOT_FOUND)
  elseif v[1] ~= token then
    refuse(b, LEASE_LOST)
  elseif v[2] ~= 'active' then
    refuse(b, DUPLICATE)
  else
    if result ~= '' then
      redis.call('HSET', jk, F_STATE, 'completed', F_FINISHED, now_text, F_RESULT, result)
    else
      redis.call('HSET', jk, F_STATE, 'completed', F_FINISHED, now_text)
    end
    done[#done + 1] = id
    for f = b + 3, b + 4 do
      local field = ARGV[f]
      local n = buckets[field]
      if n then
        buckets[field] = n + 1
      else
        buckets[field] = 1
        touched[#touched + 1] = field
      end
    end
    out[#out + 1] = OK
    if v[3] then
      freed = freed or {}
      freed[#freed + 1] = v[3]
    end
    -- A child of a flow tells its parent (see flow.lua), after the loop:
    -- one read, one write and one event per parent.
    if v[4] then
      ended = ended or {}
      ended[#ended + 1] = { id, v[4], 'ok', result }
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
  count_durations(buckets, touched, (tonumber(ARGV[4]) or 0) - refused_run, (tonumber(ARGV[5]) or 0) - refused_wait)
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
