import { moveToFinished } from 'bullmq/dist/esm/scripts/moveToFinished-14.js';
import { version } from 'bullmq/dist/esm/version.js';
import type { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { encodeScriptCommands } from '../queue/command-encoding.ts';
import { keysFor } from '../queue/keys.ts';
import { SETTLE_ONE_LUA, type Outcome } from '../tasks/identity-store.ts';
import { moduleKey } from '../tasks/identity.ts';
import { storedKeys } from '../tasks/task.ts';

/** The line of BullMQ's script right after it has checked and removed the job's lock. */
const ANCHOR = '    updateJobFields(jobIdKey, ARGV[9]);\n';
/** BullMQ's own arguments end at ARGV[9] (the anchor's); what passIdentityKeys hands may follow. */
const BULLMQ_ARGS = 9;
/** What passIdentityKeys hands the script after BullMQ's arguments, in this order. */
const HANDED = ['task', 'dependency', 'live', 'waiters', 'record', 'module', 'moduleWaiters', 'done'] as const;
/** The ARGV index of a handed argument. */
const arg = (name: (typeof HANDED)[number]) => BULLMQ_ARGS + 1 + HANDED.indexOf(name);
/** One string per handed argument, in HANDED's order. */
type Handed = StringsFor<typeof HANDED>;
type StringsFor<T extends readonly unknown[]> = { [K in keyof T]: string };
/** What is handed for a job without identity keys. */
const NONE_HANDED = HANDED.map(() => '');

/**
 * BullMQ's finishing script (completed, or failed for good) with the task's outcome recorded
 * in the same step, once the job's lock has been checked: a job cannot finish without its
 * record, and a completion costs no command of ours. A task without dependencies and without
 * gates waiting on it keeps its record in place of its claim (see CLAIMED_LUA), one write
 * instead of four. The identity keys, our keys for them and the completion record come as
 * arguments after BullMQ's own (see passIdentityKeys; empty ones for a job without identity
 * keys) or, when a caller did not add them, are read from the job's data and built here. Jobs
 * whose data does not carry identity keys (tasks from plain BullMQ producers) are left to
 * Outcomes, as the same test in JobTask.keysStored tells the worker. Gates waiting on the identity are announced on
 * `openingChannel`; the `opening` set keeps them for the reconciler.
 * Keys not handed are found from the queue's key prefix BullMQ passes (ARGV[7],
 * `<prefix>:<queue>:`; queue names hold no ':'), not written into the script: the script is
 * then the same for every prefix, so Redis compiles and keeps one copy however many share it.
 * Undefined when BullMQ's script no longer has the line this goes after.
 */
export function finishScript(): string | undefined {
  const at = moveToFinished.content.indexOf(ANCHOR);
  if (at < 0 || moveToFinished.content.indexOf(ANCHOR, at + 1) >= 0) return undefined;
  // Each key is the prefix followed by what keysFor gives for an empty prefix.
  const k = keysFor('');
  const key = (suffix: string) => `pfx .. ${JSON.stringify(suffix)}`;
  const record = `
    do
      local tk, dk, live, waitersKey, record, mk, moduleWaiters, doneKey
      if #ARGV == ${BULLMQ_ARGS + HANDED.length} then
        -- Handed by passIdentityKeys, with the keys and the completion record built: strings
        -- made in Lua cost Redis more than the same strings sent as arguments. All empty when
        -- the worker found no identity in the job's data.
        if ARGV[${arg('dependency')}] ~= "" then
          tk, dk = ARGV[${arg('task')}], ARGV[${arg('dependency')}]
          live, waitersKey, record = ARGV[${arg('live')}], ARGV[${arg('waiters')}], ARGV[${arg('record')}]
          mk, moduleWaiters, doneKey = ARGV[${arg('module')}], ARGV[${arg('moduleWaiters')}], ARGV[${arg('done')}]
        end
      else
        local ok, data = pcall(cjson.decode, rcall("HGET", jobIdKey, "data") or "")
        local env = ok and type(data) == "table" and data["$taskmaster"]
        local ids = type(env) == "table" and type(env["params"]) == "table" and env["keys"]
        local pfx = string.match(ARGV[7], "^(.*):[^:]*:$")
        if pfx and type(ids) == "table" and type(ids["task"]) == "string" and type(ids["dependency"]) == "string" then
          tk, dk = ids["task"], ids["dependency"]
          live, waitersKey = ${key(k.live)}, ${key(k.waiters(''))} .. dk
          local queue = string.match(ARGV[7], "^.*:([^:]*):$")
          record = '{"jobId":' .. cjson.encode(ARGV[1]) .. ',"at":' .. ARGV[2]
            .. ',"queue":' .. cjson.encode(queue) .. '}'
          -- As moduleKey (tasks/identity.ts) makes it.
          mk = "m:" .. redis.sha1hex(rcall("HGET", jobIdKey, "name") or "")
          moduleWaiters, doneKey = ${key(k.waiters(''))} .. mk, ${key(k.done)}
        end
      end
      if live then
        -- A task without dependencies that completes while it holds its claim, with no gates
        -- waiting on it, keeps its record in place of the claim (see CLAIMED_LUA). This path
        -- runs for most jobs, so it reads the claim (\`<claimed at>|<job key>\`) by its end,
        -- making no new string, and defines no functions.
        local kept = false
        if tk == dk and ARGV[5] == "completed" and rcall("EXISTS", waitersKey) == 0 then
          local cur = rcall("HGET", live, tk)
          local n = #jobIdKey
          if cur and string.byte(cur, -n - 1) == 124 and string.find(cur, jobIdKey, -n, true) then
            rcall("HSET", live, tk, record)
            kept = true
          end
        end
        local pfx = not kept and string.match(ARGV[7], "^(.*):[^:]*:$")
        if pfx then
          ${SETTLE_ONE_LUA}
          if ARGV[5] ~= "completed" then record = string.sub(record, 1, -2) .. ',"reason":' .. cjson.encode(ARGV[4]) .. "}" end
          local waiters = settleOne(live, ${key(k.done)}, ${key(k.failed)}, ${key(k.opening)}, waitersKey,
            ARGV[5], tk, dk, jobIdKey, record)
          if #waiters > 0 then rcall("PUBLISH", ${key(k.openingChannel)}, dk) end
        end
        -- Its module completed: what dependencies on any task of the module wait for.
        if ARGV[5] == "completed" then
          rcall("HSET", doneKey, mk, record)
          if rcall("EXISTS", moduleWaiters) == 1 then
            local pfx = string.match(ARGV[7], "^(.*):[^:]*:$")
            rcall("SADD", ${key(k.opening)}, mk)
            rcall("PUBLISH", ${key(k.openingChannel)}, mk)
          end
        end
      end
    end
`;
  return moveToFinished.content.slice(0, at) + record + moveToFinished.content.slice(at);
}

/**
 * Makes `connection` finish jobs with finishScript. BullMQ defines its scripts on a connection
 * only where they are not defined yet, and this replaces its own where it already did.
 * Returns false (and changes nothing) when the script cannot be built.
 */
export function installFinishScript(connection: Redis): boolean {
  const lua = finishScript();
  if (!lua) return false;
  const name = `${moveToFinished.name}:${version}`;
  connection.defineCommand(name, { numberOfKeys: moveToFinished.keys, lua });
  // Sent once per job: worth encoding the quicker way.
  encodeScriptCommands(connection, name);
  return true;
}

/** BullMQ's moveToFinishedArgs: (job, val, propVal, shouldRemove, target, token, timestamp, fetchNext, fieldsToUpdate). */
type FinishArgs = (
  job: { id?: string; name: string; data: unknown },
  val: unknown,
  propVal: unknown,
  shouldRemove: unknown,
  target: unknown,
  token: unknown,
  timestamp: unknown,
  fetchNext?: unknown,
  fieldsToUpdate?: unknown,
) => unknown[];

/**
 * Makes `worker` hand the finishing script what it needs to record each job's outcome: the
 * identity keys, our keys for them and the completion record, built here rather than in the
 * script (see finishScript), so that the script need not read and decode the job's data nor
 * make strings in Redis, where every job's finishing step is spent and which a busy queue
 * waits on. The identity keys come from the job data the worker has already parsed, by the
 * same test as JobTask.keysStored.
 */
export function passIdentityKeys(worker: Worker): void {
  const backend = worker.backend as unknown as { moveToFinishedArgs: FinishArgs; moveToFinishedKeys: string[] };
  const args: FinishArgs = backend.moveToFinishedArgs.bind(backend);
  const keys = keysFor(worker.opts.prefix ?? 'bull');
  const queue = worker.name;
  backend.moveToFinishedArgs = (
    job,
    val,
    propVal,
    shouldRemove,
    target,
    token,
    timestamp,
    fetchNext,
    fieldsToUpdate,
  ) => {
    const out = args(job, val, propVal, shouldRemove, target, token, timestamp, fetchNext, fieldsToUpdate);
    const n = backend.moveToFinishedKeys.length;
    // Only where BullMQ's arguments are what the script expects; otherwise it reads the data.
    if (out.length !== n + BULLMQ_ARGS) return out;
    // None (a plain BullMQ producer's job) is said too, so the script does not look for them.
    const ids = storedKeys(job.data);
    if (!ids) out.push(...NONE_HANDED);
    else {
      // The record as Outcomes writes it; `at` is the finishing time BullMQ hands the script.
      const record: Outcome = { jobId: out[n] as string, at: out[n + 1] as number, queue };
      const mk = moduleKey(job.name);
      out.push(
        ...([
          ids.task,
          ids.dependency,
          keys.live,
          keys.waiters(ids.dependency),
          JSON.stringify(record),
          mk,
          keys.waiters(mk),
          keys.done,
        ] satisfies Handed),
      );
    }
    return out;
  };
}
