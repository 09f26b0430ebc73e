-- counts: one consistent snapshot of a queue.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: none.
-- Rust side: common/src/moves/counts.rs.
-- Returns {waiting, delayed, active, completed, failed, paused (0/1),
-- waiting-children}.
-- The active set holds the pin (not a job) whenever it holds anything.
local active = redis.call('ZCARD', K_ACTIVE)
if active > 0 then
  active = active - 1
end
return {
  -- Jobs held for their concurrency key wait too (see fetch.lua).
  redis.call('LLEN', K_WAIT) + redis.call('ZCARD', K_PRIO) + tonumber(redis.call('HGET', K_META, 'ckw') or '0'),
  redis.call('ZCARD', K_DELAYED),
  active,
  redis.call('LLEN', K_COMPLETED),
  redis.call('ZCARD', K_DLQ),
  is_paused() and 1 or 0,
  redis.call('ZCARD', flow_key('wc')),
}
