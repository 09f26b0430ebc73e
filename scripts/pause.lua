-- pause: ARGV[3] = '1' stops workers from fetching this queue, '0' resumes.
-- Jobs already active finish normally. Returns OK.
if ARGV[3] == '1' then
  redis.call('HSET', K_META, 'paused', 1)
  emit('ev', 'paused')
else
  redis.call('HDEL', K_META, 'paused')
  wake()
  emit('ev', 'resumed')
end
return OK
