--[[
  Cancels one job, decided against its state in this one step (see tasks/cancellations.ts):
  a finished job is left as it is; a running one gets a stored, announced request to stop;
  any other is removed as BullMQ's removeJob removes it, and its cancel is recorded with it.
  Runs after the definitions scripts.ts puts before it: rcall, bullmqRemoveJob(KEYS, ARGV)
  (BullMQ's removeJob script, see src/queue/bullmq/remove-job.ts) and moveParentOn (BullMQ's
  moveParentToWaitIfNeeded, see src/queue/bullmq/parent-mover.ts).

  KEYS[1] job key
  KEYS[2] cancel requests hash
  KEYS[3] list of snapshots of tasks cancelled before they ran
  KEYS[4] live, KEYS[5] done, KEYS[6] failed, KEYS[7] opening (identity records)
  KEYS[8] the waiters set of the job's identity

  ARGV[1] job id
  ARGV[2] queue key prefix, `<prefix>:<queue>:`
  ARGV[3] now (ms)
  ARGV[4] the request stored for a running job (JSON)
  ARGV[5] the channel requests are announced on
  ARGV[6] the snapshot kept for the archive (JSON)
  ARGV[7] task key, ARGV[8] dependency key, ARGV[9] the identity's outcome record (JSON)
  ARGV[10] the reason a flow parent finds among its failed children
  ARGV[11] the gate queue's key prefix, `<prefix>:_gates:`

  Returns {'not-found'}, {'finished', 'completed' | 'failed'}, {'cancelling'}, or
  {'removed', the state it was in, the ids of the gates waiting on its identity...}.
]]
--@include "settle-one.lua"
local jobKey, requests = KEYS[1], KEYS[2]
local jobId, qk, now = ARGV[1], ARGV[2], ARGV[3]

if rcall('EXISTS', jobKey) == 0 then return {'not-found'} end

local finished = (rcall('ZSCORE', qk .. 'completed', jobId) and 'completed')
  or (rcall('ZSCORE', qk .. 'failed', jobId) and 'failed')
if not finished and rcall('HEXISTS', jobKey, 'finishedOn') == 1 then
  finished = rcall('HEXISTS', jobKey, 'failedReason') == 1 and 'failed' or 'completed'
end
if finished then return {'finished', finished} end

-- Held by a consumer (or active with its lock lapsed, until the stalled check takes it back):
-- whoever runs it stops it; the stored request reaches a consumer that missed the message.
if rcall('EXISTS', jobKey .. ':lock') == 1 or rcall('LPOS', qk .. 'active', jobId) then
  rcall('HSET', requests, jobId, ARGV[4])
  rcall('PUBLISH', ARGV[5], jobId)
  return {'cancelling'}
end

local was = 'waiting'
if rcall('ZSCORE', qk .. 'waiting-children', jobId) then was = 'waiting-children'
elseif rcall('ZSCORE', qk .. 'delayed', jobId) then was = 'delayed'
elseif rcall('ZSCORE', qk .. 'prioritized', jobId) then was = 'prioritized' end

-- A flow parent waiting on this job (a task's in-batch dependency, added with
-- continueParentOnFailure) learns of the cancel as it learns of a failed child: it is recorded
-- among the parent's failed children and the parent moves on at once, to fail naming it. Done
-- before the removal, which would otherwise release the parent as if this job had completed.
-- Parents of other flows are left to BullMQ's removal.
local attrs = rcall('HMGET', jobKey, 'parentKey', 'parent')
local parentKey, rawParent = attrs[1], attrs[2]
if parentKey and rawParent then
  local ok, parent = pcall(cjson.decode, rawParent)
  if ok and type(parent) == 'table' and parent['cpof'] and rcall('EXISTS', parentKey) == 1
    and rcall('SREM', parentKey .. ':dependencies', jobKey) == 1 then
    rcall('HSET', parentKey .. ':failed', jobKey, ARGV[10])
    moveParentOn(parent['queueKey'], parentKey, parent['id'], now)
  end
end

-- Gates exist only for this job and go with it; dependencies in its own batch are tasks in
-- their own right and stay. Read before the removal deletes the set.
local children = rcall('SMEMBERS', jobKey .. ':dependencies')
-- Not locked (checked above), so BullMQ refuses only a job scheduler's job, which has no flow
-- parent: then nothing has been written yet.
local removed = bullmqRemoveJob({jobKey, qk .. 'repeat'}, {jobId, '0', qk})
if removed ~= 1 then return redis.error_reply('BullMQ refused to remove job ' .. jobId .. ': ' .. tostring(removed)) end
local gq = ARGV[11]
for _, childKey in ipairs(children) do
  if string.sub(childKey, 1, #gq) == gq then
    -- A gate being completed right now is locked and stays; its parent is gone, so it is inert.
    bullmqRemoveJob({childKey, gq .. 'repeat'}, {string.sub(childKey, #gq + 1), '0', gq})
  end
end

rcall('RPUSH', KEYS[3], ARGV[6])
local waiters = settleOne(KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], 'failed', ARGV[7], ARGV[8], jobKey, ARGV[9])
local out = {'removed', was}
for _, id in ipairs(waiters) do out[#out + 1] = id end
return out
