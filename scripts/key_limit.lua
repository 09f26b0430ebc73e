-- key_limit: set or remove a concurrency-key limit (see fetch.lua).
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: key_limit (key, limit; both '' for none) when the limit changed.
-- Rust side: common/src/moves/key_limit.rs.
-- ARGV[3] = key ('' = the queue's limit, for every key without its own),
-- ARGV[4] = limit ('' = none: the key falls back to the queue's limit, the
-- queue's keys run unlimited; 's' = the singleton mode: limit 1, and the
-- running job keeps the key across its retries' backoff).
-- The key (every key with held jobs, when the queue's limit changes: one
-- entry per such key, an operator's rare call) is made ready, so fetch
-- serves its held jobs under the new limit. Returns how many keys were made
-- ready.
local key, limit = ARGV[3], ARGV[4]
local changed
if key == '' then
  if limit == '' then
    changed = redis.call('HDEL', K_META, 'ckl') == 1
  else
    changed = redis.call('HGET', K_META, 'ckl') ~= limit
    redis.call('HSET', K_META, 'ckl', limit)
  end
elseif limit == '' then
  changed = redis.call('HDEL', ck_key('limits'), key) == 1
else
  changed = redis.call('HGET', ck_key('limits'), key) ~= limit
  redis.call('HSET', ck_key('limits'), key, limit)
end
if changed then
  emit('ev', 'key_limit', 'key', key, 'limit', limit)
end
-- Keys leaving the singleton mode: a holder between attempts gives its slot
-- back (it takes one again when it runs); a running one keeps it until it
-- ends, as any job.
local function effective(k)
  return redis.call('HGET', ck_key('limits'), k) or redis.call('HGET', K_META, 'ckl')
end
local holders = {}
if key ~= '' then
  holders = { key }
else
  for _, field in ipairs(redis.call('HKEYS', ck_key('active'))) do
    if string.sub(field, 1, 1) == '\n' and field ~= CK_PIN then
      holders[#holders + 1] = string.sub(field, 2)
    end
  end
end
for _, k in ipairs(holders) do
  local holder = redis.call('HGET', ck_key('active'), '\n' .. k)
  if holder and effective(k) ~= 's' then
    redis.call('HDEL', ck_key('active'), '\n' .. k)
    if redis.call('HGET', JOB_PREFIX .. holder, F_STATE) ~= 'active' then
      free_key_slot(k)
    end
  end
end
local keys = { key }
if key == '' then
  keys = redis.call('HKEYS', ck_key('held'))
end
local readied = {}
for _, k in ipairs(keys) do
  if redis.call('HEXISTS', ck_key('held'), k) == 1 then
    readied[#readied + 1] = k
  end
end
call_chunked('RPUSH', ck_key('ready'), readied)
if #readied > 0 and not is_paused() then
  wake()
end
return #readied
