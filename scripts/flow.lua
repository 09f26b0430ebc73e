-- flow: jobs that wait for other jobs (a parent runs once its children ended).
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: added (count); apply: child_finished (ids, children, outcomes: one
-- each), then children_done or failed (see apply_child in prelude.lua).
-- Rust side: common/src/moves/flow.rs.
-- ARGV[3] = what to do:
--   'add': ARGV[4] = number of jobs, then per job: id, name, payload,
--     stored options ('' = defaults), priority, parent field ('' = none, see
--     F_PARENT in prelude.lua), number of children k, then k child refs
--     ('<queue>/<id>'). A job with children is created waiting-children,
--     one without waiting. The client adds parents before their children
--     (so a child never ends before its parent exists). An id that exists is
--     left alone. Returns per job: id, 1 (created) or 0 (existed), state.
--   'apply': ARGV[4..8] = parent id, child ref, policy, outcome ('ok' or
--     'failed'), result or error: a record of another queue's outbox (see
--     child_ended in prelude.lua) applied here, at most once per child.
--     Returns 1 (applied) or 0 (applied before, or no such parent).
--   'peek': ARGV[4] = n: the first n records of this queue's outbox.
--   'drop': ARGV[4] = a record: remove it from the outbox (once applied).
--     Returns how many were removed (0 or 1).
--   'children': ARGV[4] = parent id: flat list of child ref, outcome
--     ('?' while it runs, else '<outcome>\n<result or error>').
local mode = ARGV[3]
if mode == 'apply' then
  return apply_child(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]) and 1 or 0
elseif mode == 'peek' then
  return redis.call('LRANGE', flow_key('out'), 0, tonumber(ARGV[4]) - 1)
elseif mode == 'drop' then
  return redis.call('LREM', flow_key('out'), 1, ARGV[4])
elseif mode == 'children' then
  local pk = JOB_PREFIX .. ARGV[4]
  local kids = redis.call('HGET', pk, F_KIDS)
  local out = {}
  if not kids then
    return out
  end
  local refs = {}
  for ref in string.gmatch(kids, '[^\n]+') do
    refs[#refs + 1] = ref
  end
  for i = 1, #refs, CHUNK do
    local fields = {}
    for j = i, math.min(i + CHUNK - 1, #refs) do
      fields[#fields + 1] = KID_FIELD .. refs[j]
    end
    local values = redis.call('HMGET', pk, unpack(fields))
    for j, value in ipairs(values) do
      out[#out + 1] = refs[i + j - 1]
      out[#out + 1] = value or '?'
    end
  end
  return out
elseif mode ~= 'add' then
  return redis.error_reply('ERR flow: unknown mode ' .. tostring(mode))
end

local now, now_text = clock()
local n = tonumber(ARGV[4])
local out = {}
local b = 5
local created_count, ready = 0, false
for _ = 1, n do
  local id, name, payload, opts, prio, parent = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local k = tonumber(ARGV[b + 6])
  local first_ref = b + 7
  b = first_ref + k
  local jk = JOB_PREFIX .. id
  local state = redis.call('HGET', jk, F_STATE)
  if state then
    out[#out + 1] = id
    out[#out + 1] = 0
    out[#out + 1] = state
  else
    local p = tonumber(prio) or 0
    state = k > 0 and 'waiting-children' or 'waiting'
    -- The flow's fields go in the job's one HSET, with the first CHUNK
    -- children's; a bigger parent's others follow, CHUNK a call.
    local extra = nil
    if parent ~= '' then
      extra = { F_PARENT, parent }
    end
    local refs = nil
    if k > 0 then
      refs = {}
      for r = first_ref, first_ref + k - 1 do
        refs[#refs + 1] = ARGV[r]
      end
      extra = extra or {}
      extra[#extra + 1] = F_PENDING
      extra[#extra + 1] = tostring(k)
      extra[#extra + 1] = F_KIDS
      extra[#extra + 1] = table.concat(refs, '\n')
      for j = 1, math.min(CHUNK, k) do
        extra[#extra + 1] = KID_FIELD .. refs[j]
        extra[#extra + 1] = '?'
      end
    end
    write_job(jk, name, payload, opts, p, state, now_text, extra)
    if k > 0 then
      for i = CHUNK + 1, k, CHUNK do
        local fields = {}
        for j = i, math.min(i + CHUNK - 1, k) do
          fields[#fields + 1] = KID_FIELD .. refs[j]
          fields[#fields + 1] = '?'
        end
        redis.call('HSET', jk, unpack(fields))
      end
      redis.call('ZADD', flow_key('wc'), now_text, id)
    else
      to_waiting(id, p, false)
      ready = true
    end
    created_count = created_count + 1
    out[#out + 1] = id
    out[#out + 1] = 1
    out[#out + 1] = state
  end
end
if ready and not is_paused() then
  wake()
end
if created_count > 0 then
  emit('ev', 'added', 'count', tostring(created_count))
end
return out
