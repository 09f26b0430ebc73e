-- key_limit: set or remove a concurrency-key limit (see fetch.lua).
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: key_limit (key, limit; both '' for none) when the limit changed.
-- Rust side: common/src/moves/key_limit.rs.
-- ARGV[3] = key ('' = the queue's limit, for every key without its own),
-- ARGV[4] = limit ('' = none: the key falls back to the queue's limit, the
-- queue's keys run unlimited).
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
