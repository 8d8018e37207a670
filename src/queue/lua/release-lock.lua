--[[
  Gives up a lock taken with take-lock.lua, if the owner still holds it.

  KEYS[1] the lock

  ARGV[1] owner

  Returns 1 when it was released, else 0.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0
