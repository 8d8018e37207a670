--[[
  Hides the failures for good of identities that a batch is about to add again, until its jobs
  are written (the add script then drops the failure and the entry) or given up
  (give-back-failures.lua).

  KEYS[1] failed hash
  KEYS[2] readding hash

  ARGV[1] now (ms)
  ARGV[2..] pairs: dependencyKey, jobKey

  Returns the 1-based numbers of the pairs whose failure was hidden.
]]
local out = {}
if redis.call('HLEN', KEYS[1]) == 0 then return out end
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[1] .. '|' .. ARGV[i + 1])
    out[#out + 1] = i / 2
  end
end
return out
