--[[
  holderOf(cur): the job key that holds an identity while it is live, or false, from its entry
  `cur` in the live hash. Claims are written by the script that writes their jobs, so a claim
  whose job is gone (removed by hand) or finished (its claim never released) holds nothing.
]]
--@include "claim-of.lua"
local function holderOf(cur)
  local _, curKey = claimOf(cur)
  if curKey and redis.call('EXISTS', curKey) == 1 and not redis.call('HGET', curKey, 'finishedOn') then
    return curKey
  end
  return false
end
