--[[
  Removes a finished job that the archiver trims, by BullMQ's own removal (job hash, logs, sets,
  dedup key, the parent's record of it), checked and done in one step (see
  archive/remove-finished.ts). Spliced into BullMQ's removeJob once it has read its arguments
  (see src/queue/bullmq/remove-job.ts): uses its locals `jobId`, `prefix`, `jobKey`, `rcall` and
  its helpers isLocked and removeJobWithChildren.

  KEYS[1] job key, KEYS[2] the queue's repeat key (BullMQ's removeJob's)
  KEYS[3] BullMQ's set of the state the job was trimmed from
  KEYS[4] our archived set of that state (KEYS[3] again when there is no archive)

  ARGV[1] job id, ARGV[2] "0" (its children are not removed), ARGV[3] the queue's key prefix
    (BullMQ's removeJob's)
  ARGV[4] the gate queue's key prefix, `<prefix>:_gates:`

  Returns 0, removing nothing, unless the job is still in KEYS[3] (and archived with the finish
  time it has there) and not locked: a job retried since it was picked stays; otherwise what
  removeJob returns (1 when removed). Its children are not removed: a child of a parent that
  failed early may not have run yet, and BullMQ finishes a child whose parent is gone as any
  other job. Only the gates the job had leave with it, since each stood for it alone; a gate
  being worked on right now is left to finish, which then does nothing.
]]
do
  local finishedAt = rcall("ZSCORE", KEYS[3], jobId)
  if not finishedAt or (KEYS[4] ~= KEYS[3] and rcall("ZSCORE", KEYS[4], jobId) ~= finishedAt) then
    return 0
  end
  if isLocked(prefix, jobId, "0") then return 0 end
  local gates = ARGV[4]
  local gateOptions = { removeChildren = false, ignoreProcessed = false, ignoreLocked = true }
  for _, childKey in ipairs(rcall("SMEMBERS", jobKey .. ":dependencies")) do
    if string.sub(childKey, 1, #gates) == gates then
      removeJobWithChildren(gates, string.sub(childKey, #gates + 1), jobKey, gateOptions)
    end
  end
end
