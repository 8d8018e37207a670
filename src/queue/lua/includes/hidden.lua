--[[
  failureHidden(readding, dk, now, hides): whether the failure for good recorded for `dk` is
  hidden by a re-add of it in progress (an entry of the `readding` hash, `<started at>|<job key>`,
  younger than `hides` ms): new dependents then wait for the new run instead of failing on the old one.
]]
--@include "claim-of.lua"
local function failureHidden(readding, dk, now, hides)
  local at = claimOf(redis.call('HGET', readding, dk))
  return at and now - at < hides
end
