-- counts: one consistent snapshot of a queue.
-- Returns {waiting, delayed, active, completed, failed, paused (0/1)}.
return {
  redis.call('LLEN', K_WAIT) + redis.call('ZCARD', K_PRIO),
  redis.call('ZCARD', K_DELAYED),
  redis.call('ZCARD', K_ACTIVE),
  redis.call('LLEN', K_COMPLETED),
  redis.call('ZCARD', K_DLQ),
  is_paused() and 1 or 0,
}
