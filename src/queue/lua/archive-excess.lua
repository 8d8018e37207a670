--[[
  The oldest finished jobs of one state beyond those kept that may leave Redis (see
  archive/finished-jobs.ts): with an archive only archived ones. Set-aside jobs stay, so the
  walk looks that many further, lest they hold the bottom of the set for good.

  KEYS[1] BullMQ's set of the state, KEYS[2] our archived set of it, KEYS[3] our set-aside set
    of it (as archive-pending.lua)

  ARGV[1] how many are kept
  ARGV[2] how many to return at the most
  ARGV[3] '1' when only archived ones may leave

  Returns their ids, oldest first.
]]
local out = {}
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return out end
local most = tonumber(ARGV[2])
local chunk = redis.call('ZRANGE', KEYS[1], 0, math.min(excess, most + redis.call('ZCARD', KEYS[3])) - 1, 'WITHSCORES')
for i = 1, #chunk, 2 do
  if ARGV[3] ~= '1' or redis.call('ZSCORE', KEYS[2], chunk[i]) == chunk[i + 1] then out[#out + 1] = chunk[i] end
  if #out >= most then break end
end
return out
