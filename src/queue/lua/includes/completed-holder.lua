--[[
  completedHolder(cur, since, jk): the job key of the completed task whose record `cur` (its
  entry in the live hash, see settle-one.lua) is from `since` (ms) or later, or false. A new task
  of that identity is then a duplicate of it (the dedup window); `since` below 0 (a rerun asked
  for) counts no completion. `jk` is the new task's job key, whose prefix (and queue, for records
  that name none) the completed one's shares.
]]
local function completedHolder(cur, since, jk)
  if since < 0 or not cur or string.byte(cur, 1) ~= 123 then return false end
  local ok, rec = pcall(cjson.decode, cur)
  if not ok or type(rec) ~= 'table' or type(rec['at']) ~= 'number' or rec['at'] < since then return false end
  local pfx, queue = string.match(jk, '^(.*):([^:]*):[^:]*$')
  if type(rec['queue']) == 'string' then queue = rec['queue'] end
  if not pfx or rec['jobId'] == nil then return false end
  return pfx .. ':' .. queue .. ':' .. tostring(rec['jobId'])
end
