-- release: hand leased jobs back to waiting without using up an attempt
-- (graceful shutdown). ARGV[3..] = id, token per job.
-- Returns the number of jobs released; jobs whose lease is lost are skipped.
local now = now_ms()
local released = {}
for b = #ARGV - 1, 3, -2 do
  local id, token = ARGV[b], ARGV[b + 1]
  local jk = JOB_PREFIX .. id
  local v = redis.call('HMGET', jk, 'tk', 's', 'st', 'at', 'w', 'p')
  if v[1] == token and v[2] == 'active' then
    local attempt = tonumber(v[4]) or 1
    push_history(jk, { n = attempt, out = 'released', st = tonumber(v[3]), fin = now, w = v[5] or nil, tk = token,
      err = 'worker shut down before the job finished' })
    requeue(id, jk, attempt, v[6])
    released[#released + 1] = id
  end
end
announce_released(released)
return #released
