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
for i = 0, n - 1 do
  local b = 4 + i * 6
  local id, name, data, opts = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local prio, delay = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local created = 1
  if id == '' then
    id = tostring(redis.call('HINCRBY', K_META, 'id', 1))
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
