--[[
  Records a task's outcome in the step that finishes its job: spliced into BullMQ's
  moveToFinished right after it has checked and removed the job's lock (see
  src/queue/bullmq/move-to-finished.ts), so a job cannot finish without its record and a
  completion costs no command of ours. Uses moveToFinished's locals `jobIdKey` and `rcall`.

  KEYS: BullMQ's own.
  ARGV[1..9] BullMQ's own; used here: ARGV[1] job id, ARGV[2] finishing time (ms), ARGV[4] the
    failed reason, ARGV[5] 'completed' | 'failed', ARGV[7] the queue's key prefix `<prefix>:<queue>:`
  ARGV[10..17] handed by the worker (see queue/finishing.ts), all empty for a job without
    identity keys: task key, dependency key, live hash, the identity's waiters set, the
    completion record (JSON), module key, the module's waiters set, done hash.
    Without them (a plain BullMQ worker on a connection with this script) they are read from the
    job's data and built here; the keys then come from the prefix in ARGV[7] (queue names hold
    no ':'), with the suffixes of src/queue/keys.ts, so the script is the same for every prefix.

  A task without dependencies (task key = dependency key) that completes while it holds its
  claim, with no gates waiting on it, keeps its record in place of the claim (see claimed.lua):
  one write instead of four. Gates waiting on the identity are announced on the opening channel;
  the `opening` set keeps them for the reconciler.
]]
do
  local tk, dk, live, waitersKey, record, mk, moduleWaiters, doneKey
  if #ARGV == 17 then
    -- Handed, with the keys and the completion record built: strings made in Lua cost Redis
    -- more than the same strings sent as arguments.
    if ARGV[11] ~= "" then
      tk, dk = ARGV[10], ARGV[11]
      live, waitersKey, record = ARGV[12], ARGV[13], ARGV[14]
      mk, moduleWaiters, doneKey = ARGV[15], ARGV[16], ARGV[17]
    end
  else
    local ok, data = pcall(cjson.decode, rcall("HGET", jobIdKey, "data") or "")
    local env = ok and type(data) == "table" and data["$taskmaster"]
    local ids = type(env) == "table" and type(env["params"]) == "table" and env["keys"]
    local pfx = string.match(ARGV[7], "^(.*):[^:]*:$")
    if pfx and type(ids) == "table" and type(ids["task"]) == "string" and type(ids["dependency"]) == "string" then
      tk, dk = ids["task"], ids["dependency"]
      live, waitersKey = pfx .. ":tm:live", pfx .. ":tm:waiters:" .. dk
      local queue = string.match(ARGV[7], "^.*:([^:]*):$")
      record = '{"jobId":' .. cjson.encode(ARGV[1]) .. ',"at":' .. ARGV[2]
        .. ',"queue":' .. cjson.encode(queue) .. '}'
      -- As moduleKey (tasks/identity.ts) makes it.
      mk = "m:" .. redis.sha1hex(rcall("HGET", jobIdKey, "name") or "")
      moduleWaiters, doneKey = pfx .. ":tm:waiters:" .. mk, pfx .. ":tm:done"
    end
  end
  if live then
    -- This path runs for most jobs, so it reads the claim (`<claimed at>|<job key>`) once and by
    -- its end, making no new string, and defines no functions.
    local cur = rcall("HGET", live, tk)
    local n = #jobIdKey
    local kept = false
    if tk == dk and ARGV[5] == "completed" and cur and string.byte(cur, -n - 1) == 124
      and string.find(cur, jobIdKey, -n, true) and rcall("EXISTS", waitersKey) == 0 then
      rcall("HSET", live, tk, record)
      kept = true
    end
    local pfx = not kept and string.match(ARGV[7], "^(.*):[^:]*:$")
    if pfx then
      --@include "settle-one.lua"
      if ARGV[5] ~= "completed" then record = string.sub(record, 1, -2) .. ',"reason":' .. cjson.encode(ARGV[4]) .. "}" end
      local waiters = settleOne(live, doneKey, pfx .. ":tm:failed", pfx .. ":tm:opening", waitersKey,
        ARGV[5], tk, dk, jobIdKey, record, cur)
      if #waiters > 0 then rcall("PUBLISH", pfx .. ":tm:opening:announce", dk) end
    end
    -- Its module completed: what dependencies on any task of the module wait for.
    if ARGV[5] == "completed" then
      rcall("HSET", doneKey, mk, record)
      if rcall("EXISTS", moduleWaiters) == 1 then
        local pfx = string.match(ARGV[7], "^(.*):[^:]*:$")
        rcall("SADD", pfx .. ":tm:opening", mk)
        rcall("PUBLISH", pfx .. ":tm:opening:announce", mk)
      end
    end
  end
end
