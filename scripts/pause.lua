-- pause: ARGV[3] = '1' stops workers from fetching this queue, '0' resumes.
-- KEYS: the queue's nine standard keys (see prelude.lua); ARGV[1] job key prefix, ARGV[2] events stream length.
-- Events: paused or resumed.
-- Rust side: common/src/moves/pause.rs.
-- Jobs already active finish normally; a job handed to a parked worker
-- before the pause still runs. Returns OK.
if ARGV[3] == '1' then
  redis.call('HSET', K_META, 'paused', 1)
  -- No add hands a job to a parked worker of a paused queue (see add.lua);
  -- workers park again when they fetch after the resume.
  redis.call('DEL', K_PARKED)
  emit('ev', 'paused')
else
  redis.call('HDEL', K_META, 'paused')
  wake()
  emit('ev', 'resumed')
end
return OK
