--[[
  A task without dependencies (its task key is its dependency key) that completes, with no gates
  waiting on it, writes its completion record in place of its claim in the live hash instead of
  releasing the claim and writing the record to `done`: one write instead of four when finishing
  (see finish-record.lua). claimedCompletion(live, tk) gives such a record, or false;
  keepClaimed(live, done, tk, dk) moves it to `done` before a new run of the identity claims it,
  as completed wins over whatever the new run does.
]]
local function claimedCompletion(live, tk)
  local cur = redis.call('HGET', live, tk)
  return cur and string.byte(cur, 1) == 123 and cur
end
local function keepClaimed(live, done, tk, dk)
  local record = claimedCompletion(live, tk)
  if record then redis.call('HSETNX', done, dk, record) end
end
