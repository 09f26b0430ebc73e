-- add: enqueue one or many jobs.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: added (id; or count, first, last); deduplicated (id, key).
-- Rust side: common/src/moves/add.rs.
-- ARGV[3] = number of jobs, ARGV[4] = form of the jobs that follow:
--   'plain': every job gets a generated id and has no options, priority or
--            delay (most adds); 3 arguments per job: name, payload head,
--            payload tail.
--   'full':  7 arguments per job: id ('' = generate), name, payload head,
--            payload tail, options ('' = defaults), priority, delay ms.
--   'keyed': as 'full', plus 4 arguments per job: idempotency key ('' =
--            none), its window in ms (see below), concurrency key ('' =
--            none; such a job is never handed over, see fetch.lua), and
--            '1' to add nothing when that key is busy (a job of it running,
--            holding it between attempts, or set aside), else ''.
-- The client cuts a payload of 65 to 128 bytes into two pieces of at most 64
-- bytes (head, tail) when it can (see write_split_job); otherwise head is the
-- whole payload and tail is ''.
-- An explicit id that already exists is left alone (idempotent add).
-- A job with an idempotency key whose key was set less than its window ago
-- (<meta>:idem:<key>, holding the first job's id, expiring after the window)
-- adds nothing and answers that first job's id, whatever became of that job;
-- otherwise the add sets the key to the job's id for the window, and lists
-- the key in <meta>:idem-keys (sorted set: key -> when its window ends, ms),
-- the index by which deleting the queue finds its keys without a SCAN; the
-- reaper trims entries whose window is over (see reap.lua).
-- Returns, for 'plain', the first generated id (the others follow it); for
-- 'full' and 'keyed', a flat list: id, created (1), already existed (0),
-- deduplicated by its idempotency key (2), or skipped because its key was
-- busy (3; the id is then the key's singleton holder, or ''), per job.
local n = tonumber(ARGV[3])
local plain = ARGV[4] == 'plain'
local keyed = ARGV[4] == 'keyed'
-- The concurrency keys' hash has its pin (see CK_PIN), set by the first job
-- with a key in this call.
local pinned = false
local stride = plain and 3 or (keyed and 11 or 7)
local now, now_text = clock()

-- Generated ids: one HINCRBY reserves them all, and their text is built from a
-- cached tens part plus a digit (tostring() of a number costs a printf).
local generated = n
if not plain then
  generated = 0
  for b = 5, 4 + n * stride, stride do
    if ARGV[b] == '' then
      generated = generated + 1
    end
  end
end
local next_id = 0
if generated > 0 then
  local count = plain and ARGV[3] or tostring(generated)
  next_id = redis.call('HINCRBY', K_META, 'id', count) - generated + 1
end
local first_generated = next_id
local DIGITS = { '0', '1', '2', '3', '4', '5', '6', '7', '8', '9' }
local tens, tens_text = -1, ''
local function new_id()
  local x = next_id
  next_id = next_id + 1
  local digit = x % 10
  local t = (x - digit) / 10
  if t ~= tens then
    tens = t
    tens_text = t > 0 and tostring(t) or ''
  end
  return tens_text .. DIGITS[digit + 1]
end

-- One job added to a queue with nothing waiting while a worker is parked on
-- its wait (see fetch.lua): lease it here and put it on the hand-off list,
-- which the parked workers block on. The job reaches a handler without the
-- waiting list, a wake-up marker or a fetch call. The lease is the short one
-- the worker registered; the worker claims the job and extends it on receipt
-- (renew.lua), and the reaper returns a job nobody claimed without counting a
-- stall. Returns whether the job was handed over.
local function hand_off(id, name, head, tail, opts)
  local parked = redis.call('ZRANGEBYSCORE', K_PARKED, now_text, '+inf', 'LIMIT', '0', '1')
  -- Nothing waiting (no queue jumping) and no hand-off pending (one at a time:
  -- an add meanwhile wakes a worker instead). A paused queue has no parkings:
  -- pause.lua clears them and fetch.lua does not park a paused worker.
  if #parked == 0 or redis.call('EXISTS', K_WAIT, K_PRIO, K_HANDOFF) > 0 then
    return false
  end
  -- The counter, then Redis' clock: a failover that loses the counter's last
  -- increments (writes not yet replicated) issues new tokens, not old ones
  -- again (that would take the same count in the same millisecond).
  local token = redis.call('HINCRBY', K_META, 'tok', 1) .. '-' .. now_text
  local lease = tonumber(string.match(parked[1], '^%d+'))
  redis.call('HSET', JOB_PREFIX .. id, F_STATE, 'active', F_TOKEN, token, F_STARTED, now_text, F_ATTEMPTS, '1')
  redis.call('ZADD', K_ACTIVE, tostring(now + lease), id, 'inf', ACTIVE_PIN)
  redis.call('RPUSH', K_HANDOFF, id .. '\n' .. token .. '\n1\n' .. name .. '\n' .. opts .. '\n' .. head .. tail)
  return true
end

local fifo, nf = {}, 0
local out = {}
local ready, prio_ready = false, false
local min_due = nil
local created_count = 0
local first_created, last_created = nil, nil
if plain then
  for b = 5, 4 + n * stride, stride do
    local id = new_id()
    write_split_job(JOB_PREFIX .. id, ARGV[b], ARGV[b + 1], ARGV[b + 2], '', 0, 'waiting', now_text)
    nf = nf + 1
    fifo[nf] = id
  end
  if n == 1 and hand_off(fifo[1], ARGV[5], ARGV[6], ARGV[7], '') then
    nf = 0
  end
  created_count = n
  ready = n > 0
else
  for b = 5, 4 + n * stride, stride do
    local id, name, head, tail, opts = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    -- Most jobs have neither: comparing text spares two number conversions.
    local prio, delay = 0, 0
    if ARGV[b + 5] ~= '0' then
      prio = tonumber(ARGV[b + 5])
    end
    if ARGV[b + 6] ~= '0' then
      delay = tonumber(ARGV[b + 6])
    end
    local created = 1
    local idem_key = keyed and ARGV[b + 7] ~= '' and K_META .. ':idem:' .. ARGV[b + 7]
    local ckey = keyed and ARGV[b + 9] ~= '' and ARGV[b + 9]
    if ckey and not pinned then
      pinned = true
      redis.call('HSET', ck_key('active'), CK_PIN, '0')
    end
    local earlier = idem_key and redis.call('GET', idem_key)
    if earlier then
      created = 2
      emit('ev', 'deduplicated', 'id', earlier, 'key', ARGV[b + 7])
      id = earlier
    elseif ckey and ARGV[b + 10] == '1' and (redis.call('HEXISTS', ck_key('active'), ckey) == 1
        or redis.call('HEXISTS', ck_key('held'), ckey) == 1) then
      created = 3
      id = redis.call('HGET', ck_key('active'), '\n' .. ckey) or ''
    elseif id == '' then
      id = new_id()
    elseif redis.call('EXISTS', JOB_PREFIX .. id) == 1 then
      created = 0
    end
    if idem_key and not earlier and created ~= 3 then
      redis.call('SET', idem_key, id, 'PX', ARGV[b + 8])
      redis.call('ZADD', K_META .. ':idem-keys', now + tonumber(ARGV[b + 8]), ARGV[b + 7])
    end
    if created == 1 then
      created_count = created_count + 1
      first_created = first_created or id
      last_created = id
      local jk = JOB_PREFIX .. id
      -- The keys go in the job's own HSET.
      local extra = nil
      if idem_key and ckey then
        extra = { F_IDEM, ARGV[b + 7], F_CKEY, ckey }
      elseif idem_key then
        extra = { F_IDEM, ARGV[b + 7] }
      elseif ckey then
        extra = { F_CKEY, ckey }
      end
      if delay > 0 then
        write_split_job(jk, name, head, tail, opts, prio, 'delayed', now_text, extra)
        local due = now + delay
        redis.call('ZADD', K_DELAYED, due, id)
        if min_due == nil or due < min_due then
          min_due = due
        end
      else
        write_split_job(jk, name, head, tail, opts, prio, 'waiting', now_text, extra)
        if ckey then
          count_key_waiting(ckey, 1)
        end
        if prio > 0 then
          to_waiting(id, prio, false)
          prio_ready = true
        elseif not (n == 1 and not ckey and hand_off(id, name, head, tail, opts)) then
          nf = nf + 1
          fifo[nf] = id
        end
        ready = true
      end
    end
    out[#out + 1] = id
    out[#out + 1] = created
  end
end
-- Workers only need waking when the queue goes from empty to not empty: while
-- it holds jobs, a worker is either busy (it fetches again when a slot frees)
-- or was already woken (fetch passes the marker on while jobs remain). This
-- spares the pause and marker checks on a busy queue.
local was_empty = false
for i = 1, nf, CHUNK do
  local last = math.min(i + CHUNK - 1, nf)
  if redis.call('RPUSH', K_WAIT, unpack(fifo, i, last)) == last then
    was_empty = true
  end
end
if (was_empty or prio_ready) and not is_paused() then
  wake()
end
if min_due ~= nil and not ready and not is_paused() then
  local first = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  if tonumber(first[2]) == min_due then
    wake()
  end
end
if created_count > 0 then
  local first, last = first_created, last_created
  if plain then
    first, last = fifo[1], fifo[nf]
  end
  if n == 1 then
    emit('ev', 'added', 'id', first)
  else
    emit('ev', 'added', 'count', tostring(created_count), 'first', first, 'last', last)
  end
end
if plain then
  return first_generated
end
return out
