-- fetch: lease up to K jobs to one worker.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: active (ids, worker); dropped (ids listed as waiting with no job hash).
-- Rust side: common/src/moves/fetch.rs.
-- ARGV[3] = K, ARGV[4] = lease ms, ARGV[5] = worker id, ARGV[6] = promotion limit,
-- optional ARGV[7] = parking member ('<hand-off lease ms> <worker id>'), ARGV[8] =
-- how long a parking holds (ms): a worker whose batch comes back short waits for
-- work next, so it parks (adds may hand it a job, see add.lua); one whose batch
-- is full, or whose queue is paused or rate-limited, does not.
-- First promotes at most ARGV[6] due delayed jobs. Each leased job gets a fresh
-- token (fencing) and its attempt counter goes up by one.
-- A job with a concurrency key whose key is at its limit is held aside for
-- the key (see take_key_slot), not leased.
-- Returns {paused (0/1), ms until the next delayed job or the end of a used-up
--          rate-limit window (-1: none, or a full batch),
--          token ('' when nothing was leased), then per job: id, attempt, name,
--          payload head, payload rest ('' if stored whole), options, when it
--          was added (its wait is counted by the worker, see complete.lua)}.
-- The client joins the payload: building the joined text here costs Redis CPU.
local now, now_text = clock()
-- Attempt counters as text (see clock() on why numbers are avoided in calls).
local NEXT_ATTEMPT = { ['0'] = '1', ['1'] = '2', ['2'] = '3', ['3'] = '4', ['4'] = '5', ['5'] = '6' }
local k = tonumber(ARGV[3])

local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now_text, 'LIMIT', '0', ARGV[6])
if #due > 0 then
  local promoted_keys = nil
  redis.call('ZREMRANGEBYRANK', K_DELAYED, 0, #due - 1)
  local fifo = {}
  for _, id in ipairs(due) do
    local jk = JOB_PREFIX .. id
    -- One read for both fields: a job's concurrency key costs no extra call.
    local pk = redis.call('HMGET', jk, F_PRIORITY, F_CKEY)
    local p = pk[1]
    redis.call('HSET', jk, F_STATE, 'waiting')
    if pk[2] then
      promoted_keys = promoted_keys or new_key_batch()
      add_to_key_batch(promoted_keys, pk[2], 1)
    end
    if p then
      to_waiting(id, p, false)
    else
      fifo[#fifo + 1] = id
    end
  end
  call_chunked('RPUSH', K_WAIT, fifo)
  if promoted_keys then
    apply_key_waiting(promoted_keys)
  end
end

local park = ARGV[7] or ''
local function parks(short)
  if park == '' then
    return
  end
  if short then
    redis.call('ZADD', K_PARKED, tostring(now + tonumber(ARGV[8])), park)
  else
    redis.call('ZREM', K_PARKED, park)
  end
end

local out = { 0, -1, '', '' }
local state = redis.call('HMGET', K_META, 'paused', 'rl', 'ckl', 'ckw')
if state[1] then
  parks(false)
  out[1] = 1
  return out
end

-- A rate limit (see limit.lua): take at most what the current window has
-- left; the window opens with its first start and K_LIMITER counts the starts
-- until it expires. A limited queue hands nothing over, so its workers do not
-- park (see add.lua).
local take, limit_max, limit_ms, started = k, nil, nil, 0
if state[2] then
  limit_max, limit_ms = string.match(state[2], '^(%d+) (%d+)$')
  limit_max = tonumber(limit_max)
  started = tonumber(redis.call('GET', K_LIMITER) or '0')
  take = math.max(0, math.min(k, limit_max - started))
  parks(false)
  park = ''
end

-- Pop up to n waiting ids: priority 0 first (a list), then the others.
local function pop(n)
  local ids = redis.call('LPOP', K_WAIT, n) or {}
  if #ids < n then
    local want = n - #ids
    local z = redis.call('ZPOPMIN', K_PRIO, want)
    for i = 1, #z, 2 do
      ids[#ids + 1] = z[i]
    end
    -- This call took the last prioritized jobs: restart their sequence, so the 32-bit
    -- sequence in the scores (FIFO within a priority) wraps only on a queue
    -- that never drains its prioritized jobs for 2^32 adds.
    if #z > 0 and (#z < want * 2 or redis.call('ZCARD', K_PRIO) == 0) then
      redis.call('HDEL', K_META, 'pseq')
    end
  end
  return ids
end

-- Concurrency keys (see hold and free_key_slot in prelude.lua): a job whose
-- key is at its limit is not leased (nothing is claimed to be given back)
-- but held on its key's list, and fetch pops on in its place, up to KEY_SCAN
-- ids in all, so a busy key never blocks other jobs. Held jobs run when
-- their key is ready: a slot of it freed.
local KEY_SCAN = k + 200
local key_limits = nil
local function limit_of(key)
  if key_limits == nil then
    key_limits = redis.call('EXISTS', ck_key('limits')) == 1
  end
  return key_limits and redis.call('HGET', ck_key('limits'), key) or state[3]
end
-- The key of <meta>:ck:active, made on first use (plain jobs never need it).
local ck_active = nil
local function key_has_room(key, limit)
  ck_active = ck_active or ck_key('active')
  limit = limit or limit_of(key)
  if limit == 's' then
    limit = '1'
  end
  return not limit or tonumber(redis.call('HGET', ck_active, key) or '0') < tonumber(limit)
end
-- Take a slot of `key` for job `id`, or hold the job for the key. Counts
-- first and undoes in the rarer busy case: one call when the key has room.
local function take_key_slot(key, id)
  ck_active = ck_active or ck_key('active')
  local limit = limit_of(key)
  -- A singleton key's holder back from its backoff has the slot already.
  if limit == 's' and redis.call('HGET', ck_active, '\n' .. key) == id then
    return true
  end
  local n = redis.call('HINCRBY', ck_active, key, 1)
  local max = limit == 's' and 1 or tonumber(limit)
  if max and n > max then
    if n == 1 then
      redis.call('HDEL', ck_active, key)
    else
      redis.call('HINCRBY', ck_active, key, -1)
    end
    hold(id, key, false)
    return false
  end
  if limit == 's' then
    redis.call('HSET', ck_active, '\n' .. key, id)
  end
  return true
end
-- Held jobs of ready keys, oldest of each key first, one per key in turn
-- (fair: a key with many held jobs goes to the back after each); each has its
-- key's slot taken already. A key without room or held jobs is dropped: a
-- later free readies it again.
local slotted = {}
local function from_ready(n)
  local ids = {}
  local tries = 0
  while #ids < n and tries < n + 100 do
    tries = tries + 1
    local key = redis.call('LPOP', ck_key('ready'))
    if not key then
      break
    end
    local limit = limit_of(key)
    if key_has_room(key, limit) then
      local id = redis.call('LPOP', ck_key('w:' .. key))
      if id then
        unhold(key)
        redis.call('HINCRBY', ck_active, key, 1)
        if limit == 's' then
          redis.call('HSET', ck_active, '\n' .. key, id)
        end
        ids[#ids + 1] = id
        slotted[id] = key
        if redis.call('HEXISTS', ck_key('held'), key) == 1 and key_has_room(key) then
          redis.call('RPUSH', ck_key('ready'), key)
        end
      end
    end
  end
  return ids
end

local ids = {}
if take > 0 then
  -- Held jobs first: they waited longest. 'ckw' counts them (absent: none).
  if state[4] and state[4] ~= '0' then
    ids = from_ready(take)
  end
  if #ids < take then
    for _, id in ipairs(pop(take - #ids)) do
      ids[#ids + 1] = id
    end
  end
end

-- Ids taken off the waiting list (dropped ones too: the batch is full or
-- short by what was taken, so a worker never parks while jobs wait), less
-- the ones held for their key.
local got = #ids
local held = 0
if got > 0 then
  -- One token per fetch call: a job gets one lease per call, so the token is
  -- still unique to each lease of each job (that is all fencing needs).
  -- The counter, then Redis' clock: a failover that loses the counter's last
  -- increments (writes not yet replicated) issues new tokens, not old ones
  -- again (that would take the same count in the same millisecond).
  local token = redis.call('HINCRBY', K_META, 'tok', 1) .. '-' .. now_text
  local deadline = tostring(now + tonumber(ARGV[4]))
  out[3] = token
  local leased, nl, no = {}, 0, 4
  -- The waiting counts of the leased jobs' keys, changed together below.
  local leased_keys = nil
  local dropped = nil
  local i, scanned = 1, #ids
  while i <= #ids do
    local id = ids[i]
    local jk = JOB_PREFIX .. id
    local v = redis.call('HMGET', jk, F_NAME, F_DATA, F_OPTIONS, F_ATTEMPTS, F_PIECES, F_DATA2, F_CKEY, F_CREATED)
    if v[7] and not slotted[id] and not take_key_slot(v[7], id) then
      held = held + 1
    elseif v[1] then
      local attempt = (tonumber(v[4]) or 0) + 1
      local attempt_text = NEXT_ATTEMPT[v[4] or '0'] or tostring(attempt)
      redis.call('HSET', jk, F_STATE, 'active', F_TOKEN, token, F_STARTED, now_text, F_WORKER, ARGV[5], F_ATTEMPTS, attempt_text)
      if v[7] then
        leased_keys = leased_keys or new_key_batch()
        add_to_key_batch(leased_keys, v[7], -1)
      end
      leased[nl + 1] = deadline
      leased[nl + 2] = id
      nl = nl + 2
      local rest = v[6] or ''
      if v[5] and v[5] ~= '2' then
        rest = rest .. table.concat(redis.call('HMGET', jk, unpack(PIECE_NAMES, 3, tonumber(v[5]))))
      end
      out[no + 1] = id
      out[no + 2] = attempt
      out[no + 3] = v[1]
      out[no + 4] = v[2]
      out[no + 5] = rest
      out[no + 6] = v[3] or ''
      out[no + 7] = v[8] or ''
      no = no + 7
    else
      -- Listed as waiting, but no job behind the id (a hand-edited or
      -- corrupt queue): it leaves the list here, and says so.
      dropped = dropped or {}
      dropped[#dropped + 1] = id
      -- A job of a key took a slot of it on the way here: give it back.
      local key = slotted[id] or v[7]
      if key then
        free_key_slot(key)
        count_key_waiting(key, -1)
      end
    end
    -- Held jobs left room in the batch: pop on, within the scan's bound.
    if i == #ids and nl / 2 + (dropped and #dropped or 0) < take and held > 0 and scanned < KEY_SCAN then
      local more = pop(math.min(take - nl / 2 - (dropped and #dropped or 0), KEY_SCAN - scanned))
      scanned = scanned + #more
      for _, m in ipairs(more) do
        ids[#ids + 1] = m
      end
    end
    i = i + 1
  end
  got = nl / 2 + (dropped and #dropped or 0)
  if dropped then
    out[4] = table.concat(dropped, ',')
    emit('ev', 'dropped', 'ids', out[4])
  end
  if dropped or held > 0 then
    local kept = {}
    for j = 2, nl, 2 do
      kept[#kept + 1] = leased[j]
    end
    ids = kept
  end
  if leased_keys then
    apply_key_waiting(leased_keys)
  end
  if #leased > 0 then
    leased[#leased + 1] = 'inf'
    leased[#leased + 1] = ACTIVE_PIN
    redis.call('ZADD', K_ACTIVE, unpack(leased))
    if limit_max then
      local n = nl / 2
      if started == 0 then
        redis.call('SET', K_LIMITER, tostring(n), 'PX', limit_ms)
      else
        redis.call('INCRBY', K_LIMITER, n)
      end
      started = started + n
    end
  end
  if #ids > 0 then
    emit('ev', 'active', 'ids', table.concat(ids, ','), 'worker', ARGV[5])
  end
  -- A full batch (or a scan cut short by held jobs) may have left jobs
  -- behind: pass the wake-up on to another worker.
  if (got == k or held > 0) and (redis.call('LLEN', K_WAIT) > 0 or redis.call('ZCARD', K_PRIO) > 0
      or redis.call('LLEN', ck_key('ready')) > 0) then
    wake()
  end
end
parks(got < k)
-- A short batch means the worker will wait: tell it when the next delayed job is due.
if got < k then
  local nxt = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  if #nxt > 0 then
    out[2] = math.max(0, tonumber(nxt[2]) - now)
  end
  -- The window is used up: fetch again when it closes.
  if limit_max and started >= limit_max then
    local closes = redis.call('PTTL', K_LIMITER)
    if closes < 0 then
      closes = tonumber(limit_ms)
    end
    if out[2] < 0 or closes < out[2] then
      out[2] = closes
    end
  end
end
return out
