--[[
  Claims the identities of a batch, registers its gates and writes its jobs, in one script:
  atomic, one round trip (see tasks/atomic-add.ts). Everything that could refuse is checked
  before anything is written but the claims of identities without an entry (made by the check
  itself, and taken back), as Redis does not undo a script's writes when it stops with an error:
  if an identity is held by a live task, nothing is written and the holders are returned; if a
  job of the batch exists already or a parent it names is neither stored nor written earlier in
  the batch (what BullMQ's add scripts refuse, -5 and -7, or, for an existing job without a
  parent, keep as it is), the script stops with an error starting REFUSED and nothing is written.
  An identity whose last run completed from a claim's `since` on (the dedup window, see
  completed-holder.lua) is held by that completed task. A claimed identity's failure for good,
  and the entry hiding it (see hidden.lua), are dropped: dependents wait for its new run. Each
  gate is put in the waiters set of its dependency unless it is written open (delay 0) and the
  dependency has settled; a gate written delayed whose dependency has settled meanwhile gets its
  dependency key put in the `opening` set and returned, for the caller to open (or the
  reconciler, should the caller die first).
  Runs after what scripts.ts puts before it: `bullmqScripts`, BullMQ's add scripts and parent
  release as functions (KEYS, ARGV), numbered from 1 (see src/queue/bullmq/flow-commands.ts);
  RELEASE, the number of the parent release, the one that adds no job; REFUSED, the start of
  the error message.

  KEYS[1] live, KEYS[2] failed, KEYS[3] done, KEYS[4] readding, KEYS[5] opening
  KEYS[6..5+w] the waiters sets of the dependencies gates wait on
  then the key sets of the BullMQ commands (each set once, however many commands use it)

  ARGV[1] now (ms)
  ARGV[2] how long a re-add in progress hides a failure (ms)
  ARGV[3] number of claims n, ARGV[4] number of key sets k, ARGV[5] number of waiters sets w,
  ARGV[6] number of gates m
  then k key-set lengths; the w dependency keys of the waiters sets; n quadruples (taskKey,
  jobKey, dependencyKey, since: the earliest completion (ms) a new task of the identity
  duplicates, -1 for none); m triples (waiters set number from 1, gate id, '1' when written open
  else '0'); then the BullMQ commands, each as: script number (from 1), key-set number, argument
  count, arguments.

  Returns { per claim '' when claimed, else the job key of the live (or recently completed) task
  holding it; the dependency keys whose gates are to be opened }.
]]
--@include "holder.lua"
--@include "completed-holder.lua"
--@include "claimed.lua"
--@include "hidden.lua"
local live, failedKey, doneKey, readding, opening = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, hides = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, k, w, m = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local keySets, at = {}, 6 + w
for s = 1, k do
  local set = {}
  for j = 1, tonumber(ARGV[6 + s]) do
    set[j] = KEYS[at]
    at = at + 1
  end
  keySets[s] = set
end
local dks = 6 + k
local claims = dks + w + 1
local gates = claims + 4 * n
local first = gates + 3 * m

-- Checks. An identity without an entry is claimed by the check itself (HSETNX); those claims
-- are taken back if the batch is not written, and nothing else is written before the last check.
local out, fresh, stale = {}, {}, {}
local held = false
for c = 1, n do
  local a = claims + 4 * (c - 1)
  out[c] = ''
  if redis.call('HSETNX', live, ARGV[a], now .. '|' .. ARGV[a + 1]) == 1 then
    fresh[c] = true
  else
    local cur = redis.call('HGET', live, ARGV[a])
    local holder = holderOf(cur) or completedHolder(cur, tonumber(ARGV[a + 3]), ARGV[a + 1])
    if holder then
      out[c] = holder
      held = true
    else
      stale[c] = cur
    end
  end
end
local function unclaim()
  for c = 1, n do
    if fresh[c] then redis.call('HDEL', live, ARGV[claims + 4 * (c - 1)]) end
  end
end
if held then
  unclaim()
  return { out, {} }
end
local writes = {}
local i = first
while i <= #ARGV do
  if tonumber(ARGV[i]) ~= RELEASE then
    local args = cmsgpack.unpack(ARGV[i + 3])
    local jobKey = args[1] .. args[2]
    if args[2] == '' or writes[jobKey] or redis.call('EXISTS', jobKey) == 1 then
      unclaim()
      return redis.error_reply(REFUSED .. ' job ' .. jobKey .. ' exists already; nothing of the batch was written')
    end
    local parentKey = args[5]
    if parentKey and not writes[parentKey] and redis.call('EXISTS', parentKey) == 0 then
      unclaim()
      return redis.error_reply(REFUSED .. ' parent ' .. parentKey .. ' of job ' .. jobKey
        .. ' does not exist; nothing of the batch was written')
    end
    writes[jobKey] = true
  end
  i = i + 3 + tonumber(ARGV[i + 2])
end

-- Writes.
local anyFailed = redis.call('HLEN', failedKey) > 0
local anyHidden = anyFailed and redis.call('HLEN', readding) > 0
for c = 1, n do
  local a = claims + 4 * (c - 1)
  if stale[c] then
    -- The completion kept in place of a finished run's claim is moved to done before it goes.
    if string.byte(stale[c], 1) == 123 then redis.call('HSETNX', doneKey, ARGV[a + 2], stale[c]) end
    redis.call('HSET', live, ARGV[a], now .. '|' .. ARGV[a + 1])
  end
  -- A new run of an identity whose last run failed for good: dependents wait for it.
  if anyFailed then redis.call('HDEL', failedKey, ARGV[a + 2]) end
  if anyHidden then redis.call('HDEL', readding, ARGV[a + 2]) end
end
local settled, toOpen, queued = {}, {}, {}
for d = 1, w do
  local dk = ARGV[dks + d]
  if redis.call('HEXISTS', doneKey, dk) == 1 or claimedCompletion(live, dk) then
    settled[d] = true
  else
    settled[d] = redis.call('HEXISTS', failedKey, dk) == 1 and not failureHidden(readding, dk, now, hides)
  end
end
for g = 1, m do
  local a = gates + 3 * (g - 1)
  local d = tonumber(ARGV[a])
  if not (settled[d] and ARGV[a + 2] == '1') then
    redis.call('SADD', KEYS[5 + d], ARGV[a + 1])
    if settled[d] and not queued[d] then
      queued[d] = true
      redis.call('SADD', opening, ARGV[dks + d])
      toOpen[#toOpen + 1] = ARGV[dks + d]
    end
  end
end
local argv = {}
i = first
while i <= #ARGV do
  local script, set, argc = tonumber(ARGV[i]), keySets[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  for j = 1, argc do argv[j] = ARGV[i + 2 + j] end
  for j = argc + 1, #argv do argv[j] = nil end
  local result = bullmqScripts[script](set, argv)
  -- The checks above leave BullMQ nothing to refuse; should it refuse anyway, say so.
  if type(result) == 'number' and result < 0 then
    return redis.error_reply(REFUSED .. ' BullMQ refused a write of this batch after part of it was written (code '
      .. result .. ')')
  end
  i = i + 3 + argc
end
return { out, toOpen }
