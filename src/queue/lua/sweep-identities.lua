--[[
  Removes identity records older than a cutoff from one hash, a slice at a time (HSCAN), so a
  sweep of millions of records never blocks Redis for long.
  KEYS[1] a hash of identity records: `done` or `failed` (dependencyKey -> {"jobId","at",...}),
          or `live` (taskKey -> a claim "<at>|<job key>", or a completion record kept in its place),
          or `readding` (dependencyKey -> "<at>|<job key>" of a re-add in progress)
  ARGV[1] HSCAN cursor, ARGV[2] cutoff (ms): records with `at` before it go, ARGV[3] COUNT hint
  Returns { next cursor, records removed }.
  A claim is removed only when its job no longer exists or has finished (a crashed producer's
  claim, or one never released); the job key lies under the same prefix, so in the same slot
  on Redis Cluster when the prefix is hash-tagged.
]]
local scan = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[3])
local cutoff = tonumber(ARGV[2])
local entries = scan[2]
local removed = 0
for i = 1, #entries, 2 do
  local field, value = entries[i], entries[i + 1]
  local drop = false
  if string.byte(value, 1) == 123 then
    local at = tonumber(string.match(value, '"at":(%d+)'))
    drop = at ~= nil and at < cutoff
  else
    local sep = string.find(value, '|', 1, true)
    local at = sep and tonumber(string.sub(value, 1, sep - 1))
    if at and at < cutoff then
      local jobKey = string.sub(value, sep + 1)
      drop = redis.call('EXISTS', jobKey) == 0 or redis.call('HEXISTS', jobKey, 'finishedOn') == 1
    end
  end
  if drop then
    redis.call('HDEL', KEYS[1], field)
    removed = removed + 1
  end
end
return { scan[1], removed }
