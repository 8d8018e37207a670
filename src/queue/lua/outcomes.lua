--[[
  Outcome per dependency key: 'c' and the record when it completed (in `done`, or kept in place
  of its claim, see claimed.lua), else 'f' and the record when it failed for good and no re-add
  of it is in progress (hidden.lua), else ''. One script, so a record moving from the live hash
  to `done` meanwhile cannot fall between two reads.

  KEYS[1] live, KEYS[2] done, KEYS[3] failed, KEYS[4] readding

  ARGV[1] now (ms)
  ARGV[2] how long a re-add in progress hides a failure (ms)
  ARGV[3..] the dependency keys

  Returns one string per dependency key.
]]
--@include "claim-of.lua"
--@include "claimed.lua"
--@include "hidden.lua"
local now, hides = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local dk = ARGV[i]
  local record = redis.call('HGET', KEYS[2], dk) or claimedCompletion(KEYS[1], dk)
  if record then
    out[i - 2] = 'c' .. record
  else
    local failed = redis.call('HGET', KEYS[3], dk)
    out[i - 2] = (failed and not failureHidden(KEYS[4], dk, now, hides)) and ('f' .. failed) or ''
  end
end
return out
