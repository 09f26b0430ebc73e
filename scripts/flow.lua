-- flow: jobs that wait for other jobs (a parent runs once its children ended).
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: added (count); apply: child_finished (ids, children, outcomes: one
-- each), then children_done or failed (see apply_child in prelude.lua);
-- cascade and stop: cancelled or removed (ids), as cancel.lua and remove.lua.
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
--   'peek': ARGV[4] = n: the first n records of this queue's outbox;
--     optional ARGV[5] = 'down': of its list of stops instead (below).
--   'drop': ARGV[4] = a record: remove it from the outbox (once applied);
--     optional ARGV[5] = 'down': from the list of stops. Returns how many
--     were removed (0 or 1).
--   'children': ARGV[4] = parent id: flat list of child ref, outcome
--     ('?' while it runs, else '<outcome>\n<result or error>').
--   'cascade': ARGV[4] = most children to look at in this call. Works
--     through the tasks queue_cascade (prelude.lua) left when a parent
--     waiting for children was cancelled or removed: each child of this
--     queue that is still this parent's (parent_is) and has not ended is
--     cancelled (cancel_job, its error 'parent <queue>/<id> cancelled:
--     <reason>') or removed (remove_job, even when running); a child that is
--     a parent waiting in turn leaves a task of its own (the grandchildren
--     follow). A child in another queue that the parent has not recorded as
--     ended gets a stop record on <meta>:flow:down, '<child queue>\n<child
--     id>\n<cancel|remove>\n<parent queue>\n<parent id>\n<reason>', for
--     the relay to apply there with 'stop'. Returns the tasks left.
--   'stop': ARGV[4..8] = child id, 'cancel' or 'remove', parent queue,
--     parent id, reason: a stop record of the parent's queue applied in
--     the child's. A job that is not that parent's child, or has ended, is
--     left alone, so applying a record again changes nothing. Returns 1
--     (stopped now) or 0.
local mode = ARGV[3]
if mode == 'apply' then
  return apply_child(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]) and 1 or 0
elseif mode == 'peek' then
  return redis.call('LRANGE', flow_key(ARGV[5] == 'down' and 'down' or 'out'), 0, tonumber(ARGV[4]) - 1)
elseif mode == 'drop' then
  return redis.call('LREM', flow_key(ARGV[5] == 'down' and 'down' or 'out'), 1, ARGV[4])
elseif mode == 'stop' then
  local id, action, pq, pid, reason = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  if not parent_is(id, pq, pid) then
    return 0
  end
  local code
  if action == 'remove' then
    code = remove_job(id, true)
  else
    code = cancel_job(id, 'parent ' .. pq .. '/' .. pid .. ' cancelled: ' .. reason)
  end
  return code == OK and 1 or 0
elseif mode == 'cascade' then
  local budget = tonumber(ARGV[4])
  local here = string.match(K_META, '{([^}]*)}')
  while budget > 0 do
    local task = redis.call('LPOP', flow_key('cx'))
    if not task then
      break
    end
    local action, pid, at, reason = string.match(task, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
    if not pid then
      emit('ev', 'flow_error', 'error', 'unreadable cascade task dropped: ' .. task)
    else
      local kk = flow_key('cx:' .. pid)
      local kids = redis.call('GET', kk) or ''
      local pk = JOB_PREFIX .. pid
      local pos = tonumber(at) or 1
      while pos <= #kids and budget > 0 do
        local nl = string.find(kids, '\n', pos, true) or (#kids + 1)
        local ref = string.sub(kids, pos, nl - 1)
        pos = nl + 1
        budget = budget - 1
        local cq, cid = string.match(ref, '^([^/]*)/(.+)$')
        if cq == here then
          if parent_is(cid, '', pid) then
            if action == 'remove' then
              remove_job(cid, true)
            else
              cancel_job(cid, 'parent ' .. here .. '/' .. pid .. ' cancelled: ' .. reason)
            end
          end
        elseif cq then
          local recorded = redis.call('HGET', pk, KID_FIELD .. ref)
          if not recorded or recorded == '?' then
            redis.call('RPUSH', flow_key('down'), cq .. '\n' .. cid .. '\n' .. action .. '\n' .. here .. '\n' .. pid .. '\n' .. reason)
          end
        end
      end
      if pos <= #kids then
        -- Back at the head, for the next call to go on from here.
        redis.call('LPUSH', flow_key('cx'), action .. '\n' .. pid .. '\n' .. pos .. '\n' .. reason)
      else
        redis.call('DEL', kk)
      end
    end
  end
  return redis.call('LLEN', flow_key('cx'))
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
