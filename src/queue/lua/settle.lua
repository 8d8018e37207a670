--[[
  Records the final outcomes of identities (settle-one.lua) and returns, per identity, the gates
  waiting on it. A completion also records that its module completed (see moduleKey in
  tasks/identity.ts), and announces the gates of dependencies on any task of the module, if some
  wait, on the channel consumers listen to.

  KEYS[1] live, KEYS[2] done, KEYS[3] failed, KEYS[4] opening
  KEYS[5..] per item: its waiters set, then the waiters set of its module

  ARGV[1] the gate opening channel
  ARGV[2..] per item six: 'completed' | 'failed', taskKey, dependencyKey, jobKey, record JSON,
    module key

  Returns per item the ids of the gates waiting on its identity.
]]
--@include "settle-one.lua"
local out = {}
for n = 1, (#KEYS - 4) / 2 do
  local a = 1 + (n - 1) * 6
  local outcome, record, mk = ARGV[a + 1], ARGV[a + 5], ARGV[a + 6]
  out[n] = settleOne(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[3 + 2 * n], outcome, ARGV[a + 2], ARGV[a + 3],
    ARGV[a + 4], record)
  if outcome == 'completed' then
    redis.call('HSET', KEYS[2], mk, record)
    if redis.call('EXISTS', KEYS[4 + 2 * n]) == 1 then
      redis.call('SADD', KEYS[4], mk)
      redis.call('PUBLISH', ARGV[1], mk)
    end
  end
end
return out
