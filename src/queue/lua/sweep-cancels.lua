--[[
  Forgets cancel requests whose run is over without honouring them: the job finished (its run
  completed before the cancel reached it, or it was finished by a consumer that does not listen
  for cancels) or is gone. A request names its job by id; its queue is in the request.
  Requests stored without a queue (before requests carried one) are left as they are.

  KEYS[1] cancel requests hash
  ARGV[1] key prefix

  Returns how many requests were forgotten.
]]
local n = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, request = pcall(cjson.decode, all[i + 1])
  local queue = ok and type(request) == 'table' and request['queue']
  if type(queue) == 'string' then
    local jobKey = ARGV[1] .. ':' .. queue .. ':' .. all[i]
    if redis.call('EXISTS', jobKey) == 0 or redis.call('HEXISTS', jobKey, 'finishedOn') == 1 then
      redis.call('HDEL', KEYS[1], all[i])
      n = n + 1
    end
  end
end
return n
