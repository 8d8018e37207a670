--[[
  Opens a slice of the gates registered as waiting on one dependency key (see tasks/gates.ts).
  A gate that sleeps (delayed) is promoted and leaves the waiters set in this one step: a gate
  is never left asleep without its registration, since a gate that wakes registers again before
  it reads the outcome. A gate that exists but does not sleep (waiting, or running) reads the
  outcome itself and stays registered; one whose job is gone (removed with its dependent) or
  finished leaves the set: the add script registers a gate in the step that writes it, so a
  registered gate without a job is not one about to be written.
  Runs after scripts.ts puts BullMQ's promote script before it as bullmqPromote(KEYS, ARGV)
  (see src/queue/bullmq/promote.ts).

  KEYS[1] the dependency's waiters set
  KEYS[2] opening set
  KEYS[3..11] the gate queue's keys as BullMQ's promote takes them: delayed, wait, paused, meta,
    prioritized, active, pc (priority counter), events, marker

  ARGV[1] dependency key
  ARGV[2] the gate queue's key prefix, `<prefix>:_gates:`
  ARGV[3] SSCAN cursor ('0' for the first slice)
  ARGV[4] how many members a slice looks at (SSCAN COUNT)

  Returns {next cursor ('0' when done), gates promoted, gates left registered}. When the scan is
  done and no gate is registered any more, the dependency key leaves `opening`; otherwise it
  stays, for the reconciler to look again.
]]
local waiters, opening = KEYS[1], KEYS[2]
local dk, gatePrefix = ARGV[1], ARGV[2]
local promoteKeys = { KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11] }
local scan = redis.call('SSCAN', waiters, ARGV[3], 'COUNT', ARGV[4])
local promoted, left = 0, 0
for _, id in ipairs(scan[2]) do
  if bullmqPromote(promoteKeys, { gatePrefix, id }) == 0 then
    redis.call('SREM', waiters, id)
    promoted = promoted + 1
  elseif redis.call('EXISTS', gatePrefix .. id) == 0 or redis.call('HEXISTS', gatePrefix .. id, 'finishedOn') == 1 then
    redis.call('SREM', waiters, id)
  else
    left = left + 1
  end
end
if scan[1] == '0' and redis.call('SCARD', waiters) == 0 then
  redis.call('SREM', opening, dk)
end
return { scan[1], promoted, left }
