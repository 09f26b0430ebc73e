-- quern prelude: the helpers every script may use (see common/src/scripts.rs).
-- Loaded two ways. As a Redis Function library (Redis 7.0+): this file once,
-- then each script as a function whose body starts with bind(KEYS, ARGV);
-- the helpers are defined once, at load, instead of on every call. As
-- EVALSHA scripts (Redis 6.2, or where FCALL is refused): each script gets
-- everything above the first `-- @block` line, then only the blocks it (or a
-- block it gets) mentions by one of the names on their `-- @block` line, as
-- defining helpers costs Redis CPU on every call. A block may only use blocks
-- above it.
-- Every script gets the same KEYS, all inside one hash tag, so one call touches
-- one cluster slot. Job hashes live at JOB_PREFIX .. id, in that same slot.
local K_META, K_WAIT, K_PRIO, K_DELAYED, K_ACTIVE, K_COMPLETED, K_DLQ, K_EVENTS, K_WAKE
-- Workers parked on their wait (sorted set) and the jobs adds handed to them
-- (list); see add.lua and fetch.lua. The rate limit's counter of jobs started
-- in the current window (see fetch.lua). The live workers (sorted set) and
-- what they report (hash), see reap.lua. Keep in sync with common/src/keys.rs.
local K_PARKED, K_HANDOFF, K_LIMITER, K_WORKERS, K_WORKER_INFO
local JOB_PREFIX, MAX_EVENTS

-- Point the names above at this call's keys and first two arguments. Calls
-- run one at a time, so names shared by the calls of a library are safe.
local function bind(keys, argv)
  K_META, K_WAIT, K_PRIO, K_DELAYED, K_ACTIVE, K_COMPLETED, K_DLQ, K_EVENTS, K_WAKE =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8], keys[9]
  K_PARKED, K_HANDOFF = K_WAKE .. ':parked', K_WAKE .. ':handoff'
  K_LIMITER, K_WORKERS, K_WORKER_INFO = K_META .. ':limiter', K_META .. ':workers', K_META .. ':workers:info'
  JOB_PREFIX, MAX_EVENTS = argv[1], argv[2]
end

-- The fields of a job's hash (JOB_PREFIX .. id). Short names keep a job in
-- Redis' compact hash encoding. Keep in sync with common/src/fields.rs (a
-- test checks); scripts name fields only through these.
local F_NAME = 'n' -- the job name (selects the handler)
local F_CREATED = 't' -- when it was added (Redis ms)
local F_DATA = 'd' -- the payload, or its first 64-byte piece
local F_DATA2 = 'd2' -- the payload's second piece (d3 .. d9 follow)
local F_PIECES = 'dn' -- how many pieces the payload is stored in (absent: one)
local F_OPTIONS = 'o' -- stored options (JSON; absent: defaults)
local F_PRIORITY = 'p' -- priority above 0 (absent: 0)
local F_STATE = 's' -- waiting, delayed, active, completed or failed
local F_TOKEN = 'tk' -- the current lease (fencing) token
local F_STARTED = 'st' -- when the latest attempt started (Redis ms)
local F_WORKER = 'w' -- the worker running or that ran the latest attempt
local F_ATTEMPTS = 'at' -- attempts started in this round
local F_FINISHED = 'fin' -- when it completed or failed for good (Redis ms)
local F_ERROR = 'e' -- the last error message
local F_RESULT = 'r' -- the handler's result (JSON)
local F_STALLS = 'stl' -- times its lease expired
local F_HISTORY = 'h' -- the attempt history (JSON array)
local F_PROGRESS = 'pg' -- the latest progress: <token> <JSON>
local F_CKEY = 'ck' -- its concurrency key (absent: none), see free_key_slot
local F_IDEM = 'ik' -- its idempotency key (absent: none), see add.lua
-- Its parent in a flow (absent: none), see flow.lua: '<parent queue, or empty
-- when the same queue>\n<parent id>\n<failure policy>\n<this child's ref>'.
local F_PARENT = 'pa'

-- Kept at +inf in K_ACTIVE: a member over 64 bytes keeps the set in skiplist
-- encoding, where adding and removing leases does not scan the whole set. Not a
-- job (ids have no spaces). Keep in sync with ACTIVE_PIN in common/src/keys.rs.
local ACTIVE_PIN = '~ not a job: keeps this sorted set in skiplist encoding, which is faster ~'

-- Result codes. Keep in sync with common/src/error.rs (ScriptCode).
local OK, DUPLICATE, DEAD = 1, 2, 3
local LEASE_LOST, NOT_FOUND, JOB_ACTIVE, WRONG_STATE = -1, -2, -3, -4

-- Attempt history entries kept per job (oldest dropped first).
local HISTORY_LIMIT = 25
-- Arguments handed to one variadic command; keeps unpack() inside Lua's C stack.
local CHUNK = 1000

-- @block clock
-- Redis time in milliseconds: due times and leases never trust client clocks.
-- Returns the number and its decimal text. The text is built with string
-- operations because Redis turns a Lua number given to redis.call into text
-- with printf("%.17g"), which costs more than a simple command.
local function clock()
  local t = redis.call('TIME')
  local us = t[2]
  local ms = string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
  return tonumber(t[1]) * 1000 + tonumber(ms), t[1] .. ms
end

-- @block now_ms
local function now_ms()
  local now = clock()
  return now
end

-- @block call_chunked
-- Run `cmd key items...` in chunks.
local function call_chunked(cmd, key, items)
  for i = 1, #items, CHUNK do
    redis.call(cmd, key, unpack(items, i, math.min(i + CHUNK - 1, #items)))
  end
end

-- @block emit
local function emit(...)
  if MAX_EVENTS ~= '0' then
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', MAX_EVENTS, '*', ...)
  end
end

-- @block is_paused
local function is_paused()
  return redis.call('HEXISTS', K_META, 'paused') == 1
end

-- @block wake
-- Wake one blocked worker. The list never holds more than one marker; a worker
-- that finds more work after fetching passes the marker on.
local function wake()
  if redis.call('LLEN', K_WAKE) == 0 then
    redis.call('RPUSH', K_WAKE, '1')
  end
end

-- @block to_waiting
-- Make `id` waiting. Priority 0 (the default and the highest) lives on a list,
-- FIFO; other priorities live in a sorted set scored by (priority, sequence).
-- `front` puts a job back at the head of its priority (released or stalled).
local function to_waiting(id, prio, front)
  local p = tonumber(prio) or 0
  if p > 0 then
    local seq = 0
    if not front then
      seq = redis.call('HINCRBY', K_META, 'pseq', 1) % 4294967296
    end
    redis.call('ZADD', K_PRIO, p * 4294967296 + seq, id)
  elseif front then
    redis.call('LPUSH', K_WAIT, id)
  else
    redis.call('RPUSH', K_WAIT, id)
  end
end

-- @block to_delayed
-- Schedule `id` at `due` (ms); wake a worker if it became the earliest timer,
-- so blocked workers shorten their wait.
local function to_delayed(id, due)
  redis.call('ZADD', K_DELAYED, due, id)
  local first = redis.call('ZRANGE', K_DELAYED, 0, 0)
  if first[1] == id then
    wake()
  end
end

-- @block back_to_waiting requeue announce_released
-- Put job `id` back at the head of waiting, unrun: its lease token is cleared
-- and the attempt the lease counted is given back.
local function back_to_waiting(id, jk, attempt, prio)
  redis.call('HSET', jk, F_STATE, 'waiting', F_TOKEN, '', F_ATTEMPTS, attempt - 1)
  to_waiting(id, prio, true)
end

-- The same for a job still in the active set.
local function requeue(id, jk, attempt, prio)
  redis.call('ZREM', K_ACTIVE, id)
  back_to_waiting(id, jk, attempt, prio)
end

-- Tell that jobs `ids` went back to waiting unrun, and wake a worker for them.
local function announce_released(ids)
  if #ids > 0 then
    if not is_paused() then
      wake()
    end
    emit('ev', 'released', 'ids', table.concat(ids, ','))
  end
end

-- @block ck_key CK_PIN count_key_waiting new_key_batch add_to_key_batch apply_key_counts apply_key_waiting unhold hold free_key_slot free_key_slots drop_held is_holder drop_holder
-- Concurrency keys. A job with a key (F_CKEY) waits like any job; when fetch
-- meets it while its key is at its limit, it sets the job aside ("held") on
-- the key's list instead of leasing it. When a slot of the key frees, the key
-- goes on the ready list, which fetch serves first, a job per key in turn.
-- Per queue, all beside K_META: <meta>:ck:active (hash: key -> jobs of the
-- key leased now), <meta>:ck:held (hash: key -> jobs held for it),
-- <meta>:ck:w:<key> (list: those jobs, oldest first), <meta>:ck:ready (list
-- of keys that may have a slot free for a held job; an entry may be stale),
-- <meta>:ck:limits (hash: key -> its own limit), <meta>:ck:waiting (hash:
-- key -> the key's waiting jobs, held or not, see count_key_waiting); the
-- queue's limit is field 'ckl' of K_META, and field 'ckw' counts all held
-- jobs. A limit 's' is the
-- singleton mode: one job of the key at a time, and that job (its holder,
-- field '\n<key>' of <meta>:ck:active) keeps the key's slot across its
-- retries' backoff, until it ends for good.
local function ck_key(suffix)
  return K_META .. ':ck:' .. suffix
end
-- A field of <meta>:ck:active that is no key (keys hold no newline): over 64
-- bytes, it keeps the hash in hashtable encoding, where a field is found
-- without scanning the others (a key's field is read, counted and deleted per
-- job). Set by add.lua. Keep in sync with KEYS_ACTIVE_PIN in common/src/keys.rs.
local CK_PIN = '\n\n not a key: keeps this hash in hashtable encoding, where fields are found fast'

-- `n` jobs of key `key` became waiting (n > 0) or stopped waiting (n < 0).
-- Only the scripts' keyed branches call it, where the job's key was read
-- already: jobs without a key pay nothing. A field at 0 goes, so the hash
-- holds the keys with waiting jobs only.
local function count_key_waiting(key, n)
  if redis.call('HINCRBY', ck_key('waiting'), key, n) <= 0 then
    redis.call('HDEL', ck_key('waiting'), key)
  end
end

-- The same for a script that moves many keyed jobs (fetch): changes are
-- collected in a batch (new_key_batch, add_to_key_batch) and applied by
-- apply_key_waiting in one HMGET and one HSET (and one HDEL for the counts
-- gone to 0) per CHUNK keys, not a call or two per job.
local function new_key_batch()
  return { keys = {}, n = {} }
end
local function add_to_key_batch(batch, key, n)
  local had = batch.n[key]
  if had then
    batch.n[key] = had + n
  else
    batch.n[key] = n
    batch.keys[#batch.keys + 1] = key
  end
end
-- Add a batch's changes to the per-key counts of hash `hash`; a count at 0
-- or below goes, and with it field '\n<key>' when `with_holder` (the
-- singleton holder of <meta>:ck:active).
local function apply_key_counts(hash, batch, with_holder)
  for i = 1, #batch.keys, CHUNK do
    local last = math.min(i + CHUNK - 1, #batch.keys)
    local cur = redis.call('HMGET', hash, unpack(batch.keys, i, last))
    local set, gone = {}, {}
    for j = i, last do
      local key = batch.keys[j]
      local n = (tonumber(cur[j - i + 1]) or 0) + batch.n[key]
      if n > 0 then
        set[#set + 1] = key
        set[#set + 1] = string.format('%d', n)
      else
        gone[#gone + 1] = key
        if with_holder then
          gone[#gone + 1] = '\n' .. key
        end
      end
    end
    if #set > 0 then
      redis.call('HSET', hash, unpack(set))
    end
    if #gone > 0 then
      redis.call('HDEL', hash, unpack(gone))
    end
  end
end
local function apply_key_waiting(batch)
  apply_key_counts(ck_key('waiting'), batch, false)
end

-- One job held for `key` left its list.
local function unhold(key)
  if redis.call('HINCRBY', ck_key('held'), key, -1) <= 0 then
    redis.call('HDEL', ck_key('held'), key)
  end
  redis.call('HINCRBY', K_META, 'ckw', -1)
end

-- Hold waiting job `id` for `key`: last, or first (a job that was running).
local function hold(id, key, first)
  redis.call(first and 'LPUSH' or 'RPUSH', ck_key('w:' .. key), id)
  redis.call('HINCRBY', ck_key('held'), key, 1)
  redis.call('HINCRBY', K_META, 'ckw', 1)
end

-- A lease of a job with key `key` ended (completed, failed, released,
-- reaped, cancelled): the key has a slot free, so if jobs are held for it,
-- the key is ready, and a worker is woken for it. `none_held`: the caller
-- knows that no job of any key is held (K_META's 'ckw'), so none is looked for.
local function free_key_slot(key, none_held)
  local active = ck_key('active')
  if redis.call('HINCRBY', active, key, -1) <= 0 then
    redis.call('HDEL', active, key, '\n' .. key)
  end
  if not none_held and redis.call('HEXISTS', ck_key('held'), key) == 1 then
    redis.call('RPUSH', ck_key('ready'), key)
    if not is_paused() then
      wake()
    end
  end
end

-- free_key_slot for the leases of many jobs that ended (complete): `keys`
-- lists their keys (a key once per lease). One HMGET, then one HSET of the
-- counts left and one HDEL of the keys left with none, per CHUNK keys.
local function free_key_slots(keys, none_held)
  -- add_to_key_batch(batch, key, -1) for each, inlined: this runs per job.
  local batch = new_key_batch()
  local n, distinct = batch.n, batch.keys
  for _, key in ipairs(keys) do
    local had = n[key]
    if had then
      n[key] = had - 1
    else
      n[key] = -1
      distinct[#distinct + 1] = key
    end
  end
  apply_key_counts(ck_key('active'), batch, true)
  if not none_held then
    local woken = false
    for _, key in ipairs(batch.keys) do
      if redis.call('HEXISTS', ck_key('held'), key) == 1 then
        redis.call('RPUSH', ck_key('ready'), key)
        woken = true
      end
    end
    if woken and not is_paused() then
      wake()
    end
  end
end

-- Whether job `id` holds its singleton key `key` (see fetch.lua).
local function is_holder(id, key)
  return redis.call('HGET', ck_key('active'), '\n' .. key) == id
end

-- Job `id`, not running, ends for good (cancelled, removed): if it is its
-- singleton key's holder (between attempts), the key's slot frees.
local function drop_holder(id, key)
  if is_holder(id, key) then
    free_key_slot(key)
  end
end

-- Take waiting job `id` of key `key` off the key's list, if it is held
-- there. Returns whether it was.
local function drop_held(id, key)
  if redis.call('LREM', ck_key('w:' .. key), 1, id) == 1 then
    unhold(key)
    return true
  end
  return false
end

-- @block drop_handoff_records
-- Take the records of these jobs off the hand-off list: `heads` is a set of
-- 'id\ntoken\n' record heads (see add.lua). Scans the list, which holds at
-- most a few records (one hand-off is pending at a time).
local function drop_handoff_records(heads)
  if next(heads) then
    for _, record in ipairs(redis.call('LRANGE', K_HANDOFF, 0, -1)) do
      local head = string.match(record, '^[^\n]*\n[^\n]*\n')
      if head and heads[head] then
        redis.call('LREM', K_HANDOFF, 1, record)
      end
    end
  end
end

-- @block push_history
local function push_history(jk, entry)
  local raw = redis.call('HGET', jk, F_HISTORY)
  local h = {}
  if raw then
    -- A history that is not a JSON list (a hand-edited or corrupt record)
    -- must not block the job's moves: it starts again, and says so.
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then
      h = decoded
    else
      h = { { out = 'history_reset', err = 'the stored attempt history was unreadable and was started afresh' } }
    end
  end
  h[#h + 1] = entry
  while #h > HISTORY_LIMIT do
    table.remove(h, 1)
  end
  redis.call('HSET', jk, F_HISTORY, cjson.encode(h))
end

-- @block PIECE MAX_PIECES PIECE_NAMES put_payload
-- Payloads of 65 to about 576 bytes are stored in pieces of at most 64 bytes
-- (fields d, d2 .. d9, and dn = the number of pieces): Redis keeps a hash in its
-- compact listpack encoding only while every value fits in 64 bytes
-- (hash-max-listpack-value), and that encoding halves a typical job's memory.
-- Smaller and bigger payloads are stored whole in d.
local PIECE, MAX_PIECES = 64, 9
local PIECE_NAMES = { F_DATA, F_DATA2, 'd3', 'd4', 'd5', 'd6', 'd7', 'd8', 'd9' }
local function put_payload(fields, data)
  local len = #data
  local pieces = {}
  if len > PIECE and len <= MAX_PIECES * PIECE then
    local from = 1
    while from <= len and #pieces <= MAX_PIECES do
      local to = math.min(from + PIECE - 1, len)
      -- Never cut inside a UTF-8 sequence (continuation bytes are 0x80-0xBF):
      -- every piece must be valid text on its own.
      while to < len and to > from do
        local b = string.byte(data, to + 1)
        if b < 128 or b > 191 then
          break
        end
        to = to - 1
      end
      pieces[#pieces + 1] = string.sub(data, from, to)
      from = to + 1
    end
  end
  if #pieces < 2 or #pieces > MAX_PIECES then
    fields[#fields + 1] = F_DATA
    fields[#fields + 1] = data
    return
  end
  fields[#fields + 1] = F_DATA
  fields[#fields + 1] = pieces[1]
  for i = 2, #pieces do
    fields[#fields + 1] = PIECE_NAMES[i]
    fields[#fields + 1] = pieces[i]
  end
  fields[#fields + 1] = F_PIECES
  fields[#fields + 1] = string.char(48 + #pieces)
end

-- @block write_plain_job
-- The hash of a job without priority whose payload is whole (second nil) or
-- in two pieces, in one HSET and without argument tables (the common jobs).
local function write_plain_job(jk, name, first, second, opts, state, now_text)
  if not second then
    if opts == '' then
      redis.call('HSET', jk, F_NAME, name, F_CREATED, now_text, F_DATA, first, F_STATE, state)
    else
      redis.call('HSET', jk, F_NAME, name, F_CREATED, now_text, F_DATA, first, F_OPTIONS, opts, F_STATE, state)
    end
  elseif opts == '' then
    redis.call('HSET', jk, F_NAME, name, F_CREATED, now_text, F_DATA, first, F_DATA2, second, F_PIECES, '2', F_STATE, state)
  else
    redis.call('HSET', jk, F_NAME, name, F_CREATED, now_text, F_DATA, first, F_DATA2, second, F_PIECES, '2', F_OPTIONS, opts, F_STATE, state)
  end
end

-- @block write_job
-- Create the hash of a new job in `state` ('waiting' or 'delayed').
-- Payloads of one or two pieces without a priority, the common jobs, skip the
-- general path: building argument tables costs more Redis CPU than the HSET.
-- `extra` (optional): more field, value pairs for the same HSET (a flow's or
-- a keyed job's fields; a second HSET would cost more than the table).
local function write_job(jk, name, data, opts, prio, state, now_text, extra)
  if prio == 0 and not extra then
    local len = #data
    local first, second
    if len <= PIECE or len > MAX_PIECES * PIECE then
      first = data
    elseif len <= 2 * PIECE then
      local to = PIECE
      local b = string.byte(data, to + 1)
      while to > 1 and b >= 128 and b <= 191 do
        to = to - 1
        b = string.byte(data, to + 1)
      end
      if len - to <= PIECE then
        first, second = string.sub(data, 1, to), string.sub(data, to + 1)
      end
    end
    if first then
      write_plain_job(jk, name, first, second, opts, state, now_text)
      return
    end
  end
  local fields = { F_NAME, name, F_CREATED, now_text }
  put_payload(fields, data)
  if opts ~= '' then
    fields[#fields + 1] = F_OPTIONS
    fields[#fields + 1] = opts
  end
  if prio > 0 then
    fields[#fields + 1] = F_PRIORITY
    fields[#fields + 1] = tostring(prio)
  end
  fields[#fields + 1] = F_STATE
  fields[#fields + 1] = state
  if extra then
    for i = 1, #extra do
      fields[#fields + 1] = extra[i]
    end
  end
  redis.call('HSET', jk, unpack(fields))
end

-- @block write_split_job
-- Create the hash of a new job whose payload the client sent as head and
-- tail: two pieces of at most 64 bytes each (tail ~= ''), or the whole
-- payload in head (tail == ''). Cutting is the client's work: in Lua it cost
-- more Redis CPU than the HSET. `extra`: as for write_job.
local function write_split_job(jk, name, head, tail, opts, prio, state, now_text, extra)
  if tail == '' then
    write_job(jk, name, head, opts, prio, state, now_text, extra)
  elseif prio ~= 0 or extra then
    write_job(jk, name, head .. tail, opts, prio, state, now_text, extra)
  else
    write_plain_job(jk, name, head, tail, opts, state, now_text)
  end
end

-- @block register_worker
-- List worker `id` as live until `until_ms`, reporting `info` (JSON), and keep
-- when it was first seen: <first seen ms> <last seen ms> <info>. See reap.lua.
local function register_worker(id, now, until_ms, info)
  local since = string.match(redis.call('HGET', K_WORKER_INFO, id) or '', '^(%d+) ') or tostring(now)
  redis.call('ZADD', K_WORKERS, tostring(until_ms), id)
  redis.call('HSET', K_WORKER_INFO, id, since .. ' ' .. tostring(now) .. ' ' .. info)
end

-- @block F_STEP_SEQ F_STEP_COUNT F_STEP_BYTES STEP_FIELD
-- The job hash's fields of durable steps (only jobs that use steps have
-- them; kept out of the header so other scripts do not define them).
local F_STEP_SEQ = 'sx' -- durable steps recorded so far (numbers the records)
local F_STEP_COUNT = 'sn' -- durable steps stored now
local F_STEP_BYTES = 'sb' -- bytes the stored steps take
-- A durable step's record is field STEP_FIELD .. '<name>#<occurrence>' of
-- the job hash (see step.lua), so it lives and dies with the job.
local STEP_FIELD = 's:'

-- @block read_for_step record_step
-- What a step or sleep script needs of job `jk`, in one HMGET: state,
-- token, attempts, then the record of step `key` and the step counters.
-- Returns them, or nil and the reply refusing the write: {'gone', ''} (no
-- such job) or {'lost', ''} (not the lease holder of `token`).
local function read_for_step(jk, key, token)
  local v = redis.call('HMGET', jk, F_STATE, F_TOKEN, F_ATTEMPTS, STEP_FIELD .. key, F_STEP_SEQ, F_STEP_COUNT,
    F_STEP_BYTES)
  if not v[1] then
    return nil, { 'gone', '' }
  end
  if v[1] ~= 'active' or v[2] ~= token then
    return nil, { 'lost', '' }
  end
  return v
end

-- Store durable step `key` of job `jk`, whose fields `v` were read by
-- read_for_step (see step.lua for the record's form); `now` gives Redis'
-- clock (ms, as text) and is called only once the record will be stored. A
-- finished record ('ok' or 'sleep') is never replaced. Returns the record's
-- seq (text) when stored, else nil and {status, detail}: {'stored', the
-- record there}, or {'limit', why} when the job would hold more than
-- `max_steps` steps or `max_bytes` bytes of them.
local function record_step(jk, key, v, outcome, took, value, now, max_steps, max_bytes)
  local old, count = v[4], tonumber(v[6]) or 0
  local field = STEP_FIELD .. key
  local old_size = 0
  if old then
    local failed = string.find(old, ' failed\n', 1, true)
    if not failed or failed + 7 ~= string.find(old, '\n', 1, true) then
      return nil, { 'stored', old }
    end
    old_size = #field + #old
    count = count - 1
  end
  local seq = tostring((tonumber(v[5]) or 0) + 1)
  local attempt = v[3] or '0'
  -- The clock's text has 13 digits (until the year 2286).
  local size = #field + #seq + #attempt + 13 + #took + #outcome + #value + 5
  local bytes = (tonumber(v[7]) or 0) - old_size + size
  if count + 1 > max_steps then
    return nil, { 'limit', 'the job holds ' .. count .. ' durable steps, the most this worker allows' }
  end
  if bytes > max_bytes then
    return nil, { 'limit', 'storing step ' .. key .. ' (' .. #value .. ' bytes) would make the job\'s steps take '
      .. bytes .. ' bytes; this worker allows at most ' .. max_bytes }
  end
  local record = seq .. ' ' .. attempt .. ' ' .. now() .. ' ' .. took .. ' ' .. outcome .. '\n' .. value
  redis.call('HSET', jk, field, record, F_STEP_SEQ, seq, F_STEP_COUNT, tostring(count + 1), F_STEP_BYTES,
    tostring(bytes))
  return seq
end

-- @block count_stat count_durations
-- The queue's counters since it began (hash K_META .. ':stats', see
-- common/src/stats.rs): f dead-lettered by failure or stalls, r retries
-- scheduled, s leases expired (stalls); and the run and wait time histograms
-- of completed jobs: rb1 .. rb17 and wb1 .. wb17 count the jobs in each
-- bucket (not cumulative; the last is above every bound), rs and ws the sums
-- in ms. One HINCRBY per event kind, and one HMGET and one HSET per batch
-- of completed jobs, keep the cost per job low; reap.lua turns the totals into
-- per-minute and per-hour series.
local function count_stat(field, n)
  redis.call('HINCRBY', K_META .. ':stats', field, n)
end
-- The bucket fields a worker may name (common/src/stats.rs picks them).
local STAT_BUCKET_FIELD = {
  rb1 = true, rb2 = true, rb3 = true, rb4 = true, rb5 = true, rb6 = true, rb7 = true, rb8 = true,
  rb9 = true, rb10 = true, rb11 = true, rb12 = true, rb13 = true, rb14 = true, rb15 = true,
  rb16 = true, rb17 = true, wb1 = true, wb2 = true, wb3 = true, wb4 = true, wb5 = true, wb6 = true,
  wb7 = true, wb8 = true, wb9 = true, wb10 = true, wb11 = true, wb12 = true, wb13 = true,
  wb14 = true, wb15 = true, wb16 = true, wb17 = true
}
-- Count completed jobs: `counts` maps bucket fields to jobs, `fields` lists
-- them; `run_sum` and `wait_sum` are the jobs' run and wait times, ms. The
-- worker picks each job's buckets, so a job costs no number conversion and
-- no search here (they cost more Redis CPU than the rest of the counting);
-- a field that is no bucket's is ignored.
local function count_durations(counts, fields, run_sum, wait_sum)
  local names = {}
  for _, f in ipairs(fields) do
    if STAT_BUCKET_FIELD[f] then
      names[#names + 1] = f
    end
  end
  names[#names + 1] = 'rs'
  names[#names + 1] = 'ws'
  counts.rs = math.max(0, run_sum)
  counts.ws = math.max(0, wait_sum)
  -- One read and one write for the batch: a call per touched field (HINCRBY)
  -- cost about a microsecond per completed job in small batches.
  local stats = K_META .. ':stats'
  local cur = redis.call('HMGET', stats, unpack(names))
  local args = {}
  for i, f in ipairs(names) do
    args[#args + 1] = f
    args[#args + 1] = string.format('%d', (tonumber(cur[i]) or 0) + counts[f])
  end
  redis.call('HSET', stats, unpack(args))
end

-- @block snapshot_stats
-- Turn the counters into a series: hash `series` keeps, per time slot
-- (minute or hour number since the epoch), what changed in the slot as
-- 'field=delta ...' (slots with no change are absent), plus `at` (the slot of
-- the last snapshot) and `last` (the counters then). Runs from reap.lua: one
-- HMGET while the slot is unchanged, a few commands once per slot. The delta
-- since the last snapshot (the first time: everything counted so far) is
-- filed under the slot that just ended. Slots older than `keep` are dropped.
-- Only HMGET, HSET and HDEL: the worker's ACL role needs no more.
local STAT_FIELDS = { 'f', 'r', 's', 'rs', 'ws' }
for i = 1, 17 do
  STAT_FIELDS[#STAT_FIELDS + 1] = 'rb' .. i
  STAT_FIELDS[#STAT_FIELDS + 1] = 'wb' .. i
end
local function snapshot_stats(series, slot, keep)
  local slot_text = string.format('%d', slot)
  local v = redis.call('HMGET', series, 'at', 'last')
  if v[1] == slot_text then
    return
  end
  local values = redis.call('HMGET', K_META .. ':stats', unpack(STAT_FIELDS))
  local prev = {}
  for k, n in string.gmatch(v[2] or '', '(%w+)=(%-?%d+)') do
    prev[k] = tonumber(n)
  end
  local parts, delta = {}, {}
  for i, name in ipairs(STAT_FIELDS) do
    local n = tonumber(values[i])
    if n then
      parts[#parts + 1] = name .. '=' .. string.format('%d', n)
    end
    local d = (n or 0) - (prev[name] or 0)
    if d ~= 0 then
      delta[#delta + 1] = name .. '=' .. string.format('%d', d)
    end
  end
  if #delta > 0 then
    redis.call('HSET', series, 'at', slot_text, 'last', table.concat(parts, ' '),
      string.format('%d', slot - 1), table.concat(delta, ' '))
  else
    redis.call('HSET', series, 'at', slot_text, 'last', table.concat(parts, ' '))
  end
  -- Drop the slots that left the window since the last snapshot, at `at`:
  -- those filed then lie in at-keep .. at-1, so at most keep+1 fields,
  -- however long no reaper ran.
  local from = slot - 1 - keep
  local lo, hi = from, from
  local last_at = tonumber(v[1])
  if last_at and last_at < slot then
    lo, hi = last_at - keep, math.min(last_at - 1, from)
  end
  local old = {}
  for s = lo, hi do
    old[#old + 1] = string.format('%d', s)
  end
  if #old > 0 then
    call_chunked('HDEL', series, old)
  end
end

-- @block F_PENDING F_KIDS KID_FIELD flow_key child_ended apply_child apply_children children_ended
-- Flows (see flow.lua). A parent's hash holds F_PENDING, its children not
-- yet finished; F_KIDS, the refs of all its children ('<queue>/<id>',
-- newline-separated); and per child KID_FIELD .. ref: '?' while it runs,
-- then '<ok|failed|ignored|removed>\n<result JSON or error>'. The outcomes
-- live with the parent, whatever the children's retention.
local F_PENDING = 'pc'
local F_KIDS = 'kl'
local KID_FIELD = 'k:'
-- <meta>:flow:wc (sorted set: parents waiting for children, by add time);
-- <meta>:flow:out (list: outcome records of this queue's children whose
-- parent is in another queue, for a worker's relay to apply there).
local function flow_key(suffix)
  return K_META .. ':flow:' .. suffix
end

local apply_child


-- Job `id` ended for good ('ok' with its result, or 'failed' with its
-- error) and has parent field `parent`: apply the outcome to a parent of
-- this queue at once; for a parent in another queue, leave a record in this
-- queue's outbox (no script touches two slots).
local function child_ended(id, parent, outcome, text)
  local pq, pid, policy, ref = string.match(parent, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$')
  if not pid then
    emit('ev', 'flow_error', 'id', id, 'error', 'unreadable parent field')
    return
  end
  if pq == '' then
    apply_child(pid, ref, policy, outcome, text)
  else
    redis.call('RPUSH', flow_key('out'), pq .. '\n' .. pid .. '\n' .. policy .. '\n' .. ref .. '\n' .. outcome .. '\n' .. text)
  end
end

-- Apply the outcomes of children of parent `pid` of this queue, each once:
-- `entries` holds {child ref, policy, outcome, result or error} lists; a
-- child already applied (or a parent gone) changes nothing. The last child
-- to finish makes the parent waiting; a failed child under policy
-- fail_parent dead-letters a parent still waiting for children (the first
-- such child is named). One read and one write of the parent, and one
-- child_finished event, for them all. Returns how many were applied.
local function apply_children(pid, entries)
  local pk = JOB_PREFIX .. pid
  local fields = { F_STATE, F_PENDING, F_PARENT, F_PRIORITY }
  for i, e in ipairs(entries) do
    fields[4 + i] = KID_FIELD .. e[1]
  end
  local v = redis.call('HMGET', pk, unpack(fields))
  if not v[1] then
    return 0
  end
  local pending = tonumber(v[2])
  local set, seen, failed, refs, outcomes = {}, {}, nil, {}, {}
  for i, e in ipairs(entries) do
    local ref, policy, outcome, text = e[1], e[2], e[3], e[4]
    if v[4 + i] == '?' and not seen[ref] then
      seen[ref] = true
      local stored = outcome
      if outcome ~= 'ok' then
        if policy == 'ignore' then
          stored = 'ignored'
        elseif policy == 'remove' then
          stored = 'removed'
        else
          stored = 'failed'
        end
      end
      pending = (pending or 1) - 1
      set[#set + 1] = fields[4 + i]
      set[#set + 1] = stored .. '\n' .. text
      refs[#refs + 1] = ref
      outcomes[#outcomes + 1] = stored
      if stored == 'failed' and policy ~= 'continue' and not failed then
        failed = 'child ' .. ref .. ' failed: ' .. text
      end
    end
  end
  if #set == 0 then
    return 0
  end
  local applied = #set / 2
  set[#set + 1] = F_PENDING
  set[#set + 1] = tostring(pending)
  redis.call('HSET', pk, unpack(set))
  local ids = string.rep(pid .. ',', #refs - 1) .. pid
  emit('ev', 'child_finished', 'ids', ids, 'children', table.concat(refs, ','), 'outcomes', table.concat(outcomes, ','))
  if v[1] ~= 'waiting-children' then
    return applied
  end
  if failed then
    local _, now_text = clock()
    redis.call('ZREM', flow_key('wc'), pid)
    redis.call('HSET', pk, F_STATE, 'failed', F_FINISHED, now_text, F_ERROR, failed)
    redis.call('ZADD', K_DLQ, now_text, pid)
    count_stat('f', 1)
    emit('ev', 'failed', 'id', pid, 'error', failed)
    if v[3] then
      child_ended(pid, v[3], 'failed', failed)
    end
  elseif pending <= 0 then
    redis.call('ZREM', flow_key('wc'), pid)
    redis.call('HSET', pk, F_STATE, 'waiting')
    to_waiting(pid, v[4], false)
    if not is_paused() then
      wake()
    end
    emit('ev', 'children_done', 'id', pid)
  end
  return applied
end

-- Apply child `ref`'s outcome to parent `pid` of this queue, once (see
-- apply_children). Returns whether applied.
apply_child = function(pid, ref, policy, outcome, text)
  return apply_children(pid, { { ref, policy, outcome, text } }) > 0
end

-- child_ended for many jobs that ended together (complete.lua): `ended`
-- holds {id, parent field, outcome, text} lists. The children of one parent
-- of this queue are applied together (CHUNK at a time).
local function children_ended(ended)
  local order, by_parent = {}, {}
  for _, e in ipairs(ended) do
    local pq, pid, policy, ref = string.match(e[2], '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$')
    if pq == '' then
      local list = by_parent[pid]
      if not list then
        list = {}
        by_parent[pid] = list
        order[#order + 1] = pid
      end
      list[#list + 1] = { ref, policy, e[3], e[4] }
    else
      -- Another queue's parent, or an unreadable field: as for one job.
      child_ended(e[1], e[2], e[3], e[4])
    end
  end
  for _, pid in ipairs(order) do
    local list = by_parent[pid]
    for i = 1, #list, CHUNK do
      apply_children(pid, { unpack(list, i, math.min(i + CHUNK - 1, #list)) })
    end
  end
end

-- @block parent_is queue_cascade cancel_job remove_job
-- Ending a job early (cancel.lua, remove.lua, and a cancelled or removed
-- parent's children: flow.lua 'cascade' and 'stop').

-- Whether job `id` of this queue is a child of parent `pid` of queue `pq`
-- ('' = this queue), by its parent field: an id used again by another job
-- is left alone.
local function parent_is(id, pq, pid)
  local pa = redis.call('HGET', JOB_PREFIX .. id, F_PARENT)
  local head = pq .. '\n' .. pid .. '\n'
  return pa ~= false and pa ~= nil and string.sub(pa, 1, #head) == head
end

-- Parent `id` (hash `jk`) was cancelled or removed while it waited for
-- children: they go the same way, in bounded calls (flow.lua 'cascade').
-- A task '<action>\n<parent id>\n<byte offset>\n<reason>' goes on
-- <meta>:flow:cx and the parent's child refs are copied to
-- <meta>:flow:cx:<parent id> (the parent may be deleted meanwhile).
local function queue_cascade(id, jk, action, reason)
  local v = redis.call('HMGET', jk, F_KIDS, F_PENDING)
  if v[1] and (tonumber(v[2]) or 1) > 0 then
    redis.call('SET', flow_key('cx:' .. id), v[1])
    redis.call('RPUSH', flow_key('cx'), action .. '\n' .. id .. '\n1\n' .. reason)
  end
end

-- Cancel job `id` for good (see cancel.lua). Returns OK, NOT_FOUND or
-- WRONG_STATE (completed, or dead-lettered already).
local function cancel_job(id, reason)
  local now = now_ms()
  local jk = JOB_PREFIX .. id
  local v = redis.call('HMGET', jk, F_STATE, F_TOKEN, F_STARTED, F_ATTEMPTS, F_WORKER, F_CKEY, F_PARENT)
  local s = v[1]
  if not s then
    return NOT_FOUND
  end
  if s == 'completed' or s == 'failed' then
    return WRONG_STATE
  end
  if s == 'active' then
    redis.call('ZREM', K_ACTIVE, id)
    -- Handed over by an add and not claimed yet: no worker is to take it.
    if not v[5] then
      drop_handoff_records({ [id .. '\n' .. v[2] .. '\n'] = true })
    end
    push_history(jk, { n = tonumber(v[4]), out = 'cancelled', st = tonumber(v[3]), fin = now, w = v[5] or nil, tk = v[2], err = reason })
    if v[6] then
      free_key_slot(v[6])
    end
  elseif s == 'waiting-children' then
    redis.call('ZREM', flow_key('wc'), id)
    push_history(jk, { out = 'cancelled', fin = now, err = reason })
    queue_cascade(id, jk, 'cancel', reason)
  elseif s == 'delayed' then
    redis.call('ZREM', K_DELAYED, id)
    if v[6] then
      drop_holder(id, v[6])
    end
    push_history(jk, { out = 'cancelled', fin = now, err = reason })
  else
    if redis.call('LREM', K_WAIT, 1, id) == 0 and not (v[6] and drop_held(id, v[6])) then
      redis.call('ZREM', K_PRIO, id)
    end
    if v[6] then
      drop_holder(id, v[6])
      count_key_waiting(v[6], -1)
    end
    push_history(jk, { out = 'cancelled', fin = now, err = reason })
  end
  redis.call('HSET', jk, F_STATE, 'failed', F_TOKEN, '', F_FINISHED, now, F_ERROR, reason)
  redis.call('ZADD', K_DLQ, now, id)
  emit('ev', 'cancelled', 'id', id, 'error', reason)
  -- A cancelled child counts as failed for its parent.
  if v[7] then
    child_ended(id, v[7], 'failed', 'cancelled: ' .. reason)
  end
  return OK
end

-- Delete job `id` (see remove.lua). `with_parent`: a removed parent's
-- child, deleted only if it has not ended (else WRONG_STATE), even when
-- running (its lease is revoked as a cancel's is). Returns OK, NOT_FOUND,
-- JOB_ACTIVE or WRONG_STATE.
local function remove_job(id, with_parent)
  local jk = JOB_PREFIX .. id
  local v = redis.call('HMGET', jk, F_STATE, F_CKEY, F_PARENT, F_TOKEN, F_WORKER)
  local s = v[1]
  if not s then
    return NOT_FOUND
  end
  if with_parent and (s == 'completed' or s == 'failed') then
    return WRONG_STATE
  end
  if s == 'active' then
    if not with_parent then
      return JOB_ACTIVE
    end
    redis.call('ZREM', K_ACTIVE, id)
    if not v[5] then
      drop_handoff_records({ [id .. '\n' .. v[4] .. '\n'] = true })
    end
    if v[2] then
      free_key_slot(v[2])
    end
  elseif s == 'waiting' then
    if redis.call('LREM', K_WAIT, 1, id) == 0 and not (v[2] and drop_held(id, v[2])) then
      redis.call('ZREM', K_PRIO, id)
    end
    if v[2] then
      drop_holder(id, v[2])
      count_key_waiting(v[2], -1)
    end
  elseif s == 'waiting-children' then
    redis.call('ZREM', flow_key('wc'), id)
    queue_cascade(id, jk, 'remove', 'removed')
  elseif s == 'delayed' then
    redis.call('ZREM', K_DELAYED, id)
    if v[2] then
      drop_holder(id, v[2])
    end
  elseif s == 'completed' then
    redis.call('LREM', K_COMPLETED, 1, id)
  elseif s == 'failed' then
    redis.call('ZREM', K_DLQ, id)
  end
  redis.call('DEL', jk)
  -- A child removed before it finished counts as failed for its parent.
  if v[3] and s ~= 'completed' and s ~= 'failed' then
    child_ended(id, v[3], 'failed', 'removed')
  end
  emit('ev', 'removed', 'id', id)
  return OK
end
