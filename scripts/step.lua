-- step: the lease holder stores the outcome of one durable step of its job.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: step (id, step, outcome).
-- Rust side: common/src/moves/step.rs.
-- ARGV[3] = id, ARGV[4] = the attempt's lease token, ARGV[5] = the step's
-- key ('<name>#<occurrence>'), ARGV[6] = outcome ('ok' or 'failed'), ARGV[7]
-- = how long the step ran (ms), ARGV[8] = its result (JSON) or error
-- message, ARGV[9] = most steps a job may store, ARGV[10] = most bytes they
-- may take.
-- The record is field 's:<key>' of the job hash, so it goes wherever the
-- job goes (retried, dead-lettered, trimmed, removed): '<seq> <attempt>
-- <finished ms> <took ms> <outcome>' newline value; seq numbers the job's
-- records in the order they were stored. A finished record ('ok', or a
-- sleep's) is never replaced; a 'failed' one is, when the step runs again
-- after a retry from the dead-letter list.
-- Returns {status, detail}: {'ok', seq}; {'stored', record} (finished
-- already: the caller must use the stored record); {'lost', ''} (not the
-- lease holder: nothing stored); {'gone', ''} (no such job); {'limit', why}.
local id, token, key, outcome = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local jk = JOB_PREFIX .. id
local v, refused = read_for_step(jk, key, token)
if not v then
  return refused
end
-- Once the record will be stored: the event, whose stream id is Redis'
-- clock (its ms stand in for a TIME call).
local function now()
  if MAX_EVENTS ~= '0' then
    local event = redis.call('XADD', K_EVENTS, 'MAXLEN', '~', MAX_EVENTS, '*', 'ev', 'step', 'id', id, 'step', key,
      'outcome', outcome)
    return string.match(event, '^%d+')
  end
  local _, text = clock()
  return text
end
local seq, refused = record_step(jk, key, v, outcome, ARGV[7], ARGV[8], now, tonumber(ARGV[9]), tonumber(ARGV[10]))
if not seq then
  return refused
end
return { 'ok', seq }
