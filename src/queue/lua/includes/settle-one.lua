--[[
  settleOne(live, done, failed, opening, waitersKey, outcome, tk, dk, jk, record[, cur]): records
  one identity's final outcome ('completed' or 'failed', `record` its JSON) and, if its claim in
  `live` (`cur`, when the caller has read it already) still points at job key `jk`, releases it;
  a completion keeps its record there instead, which answers identical tasks added within the
  dedup window (completed-holder.lua). Returns the gates waiting on the identity (the members of
  `waitersKey`), putting `dk` in the `opening` set when there are any, so that a crash before
  they are promoted leaves work the reconciler finds.
  Shared by the scripts that record outcomes: settle.lua, cancel.lua, finish-record.lua.
]]
--@include "claim-of.lua"
local function settleOne(live, done, failed, opening, waitersKey, outcome, tk, dk, jk, record, cur)
  if cur == nil then cur = redis.call('HGET', live, tk) end
  local _, claimed = claimOf(cur)
  if claimed == jk then
    if outcome == 'completed' then redis.call('HSET', live, tk, record) else redis.call('HDEL', live, tk) end
  end
  if outcome == 'completed' then
    redis.call('HSET', done, dk, record)
    redis.call('HDEL', failed, dk)
  else
    redis.call('HSET', failed, dk, record)
  end
  local waiters = redis.call('SMEMBERS', waitersKey)
  if #waiters > 0 then redis.call('SADD', opening, dk) end
  return waiters
end
