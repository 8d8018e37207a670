--[[
  claimOf(cur): an entry of the live hash read as a claim, `<claimed at>|<job key>`: when it was
  made and the job key, or false for a completion record kept in its place (JSON, see
  claimed.lua) or no entry. Also reads the entries of the `readding` hash, which have the same form.
]]
local function claimOf(cur)
  if not cur or string.byte(cur, 1) == 123 then return false end
  local sep = string.find(cur, '|', 1, true)
  if not sep then return false end
  return tonumber(string.sub(cur, 1, sep - 1)), string.sub(cur, sep + 1)
end
