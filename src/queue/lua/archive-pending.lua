--[[
  Finished jobs of one state not yet archived nor set aside, oldest first (see
  archive/finished-jobs.ts). The archiver goes oldest first and removes only the oldest archived
  jobs, so the archived ones are the bottom of the set and the walk can start near the top of
  them; a job that arrived with an older finish time (a worker's clock behind) is found by the
  occasional walk from the oldest. A job counts as archived only with the same finish time, so
  one retried after it was archived is archived again when it finishes again.

  KEYS[1] BullMQ's set of the state (scored by finish time)
  KEYS[2] our archived set of that state (id -> the finish time it was archived with)
  KEYS[3] our set of the jobs of that state set aside (MongoDB refused their document even
    reduced; id -> finish time)

  ARGV[1] how many to return
  ARGV[2] where to start: -1 from the oldest, otherwise that many ranks below the count of
    archived and set-aside ones

  Returns flat pairs: id, finish time.
]]
local out = {}
local want = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local start = 0
if slack >= 0 then start = math.max(0, redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) - slack) end
local found = 0
while found < want do
  local chunk = redis.call('ZRANGE', KEYS[1], start, start + 499, 'WITHSCORES')
  if #chunk == 0 then break end
  for i = 1, #chunk, 2 do
    local id, at = chunk[i], chunk[i + 1]
    if redis.call('ZSCORE', KEYS[2], id) ~= at and redis.call('ZSCORE', KEYS[3], id) ~= at then
      found = found + 1
      out[#out + 1] = chunk[i]
      out[#out + 1] = chunk[i + 1]
      if found >= want then break end
    end
  end
  start = start + 500
end
return out
