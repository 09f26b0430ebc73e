-- add: enqueue one or many jobs.
-- ARGV[3] = number of jobs, then 6 arguments per job:
--   id ('' = generate), name, data (JSON), options ('' = defaults), priority, delay ms.
-- An explicit id that already exists is left alone (idempotent add).
-- Returns a flat list: id, created (1) or already existed (0), per job.
local n = tonumber(ARGV[3])
local now, now_text = clock()
local out = {}
local fifo = {}
local ready = false
local prio_ready = false
local min_due = nil
local created_count = 0

-- Generated ids: one HINCRBY reserves them all, and their text is built from a
-- cached tens part plus a digit (tostring() of a number costs a printf).
local generated = 0
for i = 0, n - 1 do
  if ARGV[4 + i * 6] == '' then
    generated = generated + 1
  end
end
local next_id = 0
if generated > 0 then
  next_id = redis.call('HINCRBY', K_META, 'id', tostring(generated)) - generated + 1
end
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

for i = 0, n - 1 do
  local b = 4 + i * 6
  local id, name, data, opts = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  -- Most jobs have neither: comparing text spares two number conversions.
  local prio, delay = 0, 0
  if ARGV[b + 4] ~= '0' then
    prio = tonumber(ARGV[b + 4])
  end
  if ARGV[b + 5] ~= '0' then
    delay = tonumber(ARGV[b + 5])
  end
  local created = 1
  if id == '' then
    id = new_id()
  elseif redis.call('EXISTS', JOB_PREFIX .. id) == 1 then
    created = 0
  end
  if created == 1 then
    created_count = created_count + 1
    local jk = JOB_PREFIX .. id
    if delay > 0 then
      write_job(jk, name, data, opts, prio, 'delayed', now_text)
      local due = now + delay
      redis.call('ZADD', K_DELAYED, due, id)
      if min_due == nil or due < min_due then
        min_due = due
      end
    else
      write_job(jk, name, data, opts, prio, 'waiting', now_text)
      if prio > 0 then
        to_waiting(id, prio, false)
        prio_ready = true
      else
        fifo[#fifo + 1] = id
      end
      ready = true
    end
  end
  out[#out + 1] = id
  out[#out + 1] = created
end
-- Workers only need waking when the queue goes from empty to not empty: while
-- it holds jobs, a worker is either busy (it fetches again when a slot frees)
-- or was already woken (fetch passes the marker on while jobs remain). This
-- spares the pause and marker checks on a busy queue.
local was_empty = false
for i = 1, #fifo, CHUNK do
  local last = math.min(i + CHUNK - 1, #fifo)
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
  if n == 1 then
    emit('ev', 'added', 'id', out[1])
  else
    emit('ev', 'added', 'count', created_count, 'first', out[1], 'last', out[#out - 1])
  end
end
return out
