--[[
  Gives back failures that hide-failures.lua hid for a batch that was not written: drops the
  entries that still point at the batch's job keys, and returns the dependency keys whose failure
  is visible again and has gates waiting (dependents added meanwhile, which must now fail), each
  put in the `opening` set so that a crash before they are opened leaves work the reconciler finds.

  KEYS[1] readding hash
  KEYS[2] failed hash
  KEYS[3] opening set
  KEYS[4..] per pair, the waiters set of its dependency key

  ARGV pairs: dependencyKey, jobKey

  Returns the dependency keys whose gates are to be opened.
]]
--@include "claim-of.lua"
local out = {}
for n = 1, #KEYS - 3 do
  local dk = ARGV[2 * n - 1]
  local _, jk = claimOf(redis.call('HGET', KEYS[1], dk))
  if jk == ARGV[2 * n] then
    redis.call('HDEL', KEYS[1], dk)
    if redis.call('HEXISTS', KEYS[2], dk) == 1 and redis.call('SCARD', KEYS[3 + n]) > 0 then
      redis.call('SADD', KEYS[3], dk)
      out[#out + 1] = dk
    end
  end
end
return out
