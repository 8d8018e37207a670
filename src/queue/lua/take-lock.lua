--[[
  Takes or renews a lock held by one owner at a time (the archiver's role, see
  archive/archiver.ts): set when free or already the owner's.

  KEYS[1] the lock

  ARGV[1] owner
  ARGV[2] how long it is held without renewal (ms)

  Returns 1 when the lock is (now) the owner's, else 0.
]]
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
