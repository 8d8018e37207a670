import { FlowProducer, Job, QueueKeys, type FlowJob, type FlowJobEntry, type Queue } from 'bullmq';
import { addDelayedJob } from 'bullmq/dist/esm/scripts/addDelayedJob-6.js';
import { addParentJob } from 'bullmq/dist/esm/scripts/addParentJob-6.js';
import { addPrioritizedJob } from 'bullmq/dist/esm/scripts/addPrioritizedJob-9.js';
import { addStandardJob } from 'bullmq/dist/esm/scripts/addStandardJob-9.js';
import { releaseParentIfNoPendingDependencies } from 'bullmq/dist/esm/scripts/releaseParentIfNoPendingDependencies-2.js';
import type { Redis } from 'ioredis';
import { encodeScriptCommands } from '../queue/command-encoding.ts';
import type { Keys } from '../queue/keys.ts';
import { TaskAddRefusedError } from '../errors.ts';
import {
  CLAIMED_LUA,
  COMPLETED_HOLDER_LUA,
  HIDDEN_LUA,
  HOLDER_LUA,
  READD_HIDES_MS,
  type ClaimItem,
} from './identity-store.ts';

interface BullmqScript {
  name: string;
  content: string;
  keys: number;
}

/** The BullMQ scripts a flow of tasks is written with, in the order the Lua dispatch numbers them. */
const EMBEDDED: BullmqScript[] = [
  addPrioritizedJob,
  addParentJob,
  addDelayedJob,
  addStandardJob,
  releaseParentIfNoPendingDependencies,
];

/**
 * A BullMQ script split so that it can run many times in one script without re-creating its
 * helper functions each time: `names`, the locals its header sets from KEYS and ARGV (declared
 * once, assigned per run, so helpers that see them see the run's values as in the original);
 * `functions`, its helpers, defined once; `body`, the header's assignments and the main code.
 * Undefined when the script has another shape (then it is embedded whole, which is slower).
 */
export function splitBullmqScript(content: string): { names: string[]; functions: string; body: string } | undefined {
  const lines = content.split('\n');
  let i = lines.findIndex((l) => l.startsWith('local '));
  const names: string[] = [];
  const assignments: string[] = [];
  for (let m; i >= 0 && (m = /^local (\w+)(?:\s*=\s*(.+))?$/.exec(lines[i]!)) && m[1] !== 'function'; i++) {
    names.push(m[1]!);
    // A local declared without a value starts each run as nil, as it starts each script.
    assignments.push(`${m[1]} = ${m[2] ?? 'nil'}`);
  }
  let last = -1;
  lines.forEach((l, n) => {
    if (l.startsWith('local function ')) last = n;
  });
  const end = lines.findIndex((l, n) => n > last && /^end\s*$/.test(l));
  if (!names.length || last < i || end < 0) return undefined;
  // Between the header and the main code only helper definitions and comments may stand at the
  // top level: code there would run once instead of per run.
  let inComment = false;
  for (const l of lines.slice(i, end + 1)) {
    if (inComment) inComment = !l.includes(']]');
    else if (l.startsWith('--[[')) inComment = !l.includes(']]');
    else if (!/^(local function |end\s*$|--|\s|$)/.test(l)) return undefined;
  }
  const functions = lines.slice(i, end + 1).join('\n');
  if (/\b(KEYS|ARGV)\b/.test(functions)) return undefined;
  return { names, functions, body: [...assignments, ...lines.slice(end + 1)].join('\n') };
}

/** Lua that defines local function `fn(KEYS, ARGV)` running `script`. */
function embed(script: BullmqScript, fn: string): string {
  const split = splitBullmqScript(script.content);
  if (!split) return `local function ${fn}(KEYS, ARGV)\n${script.content}\nend`;
  return `local ${fn}\ndo\nlocal ${split.names.join(', ')}\n${split.functions}\n${fn} = function(KEYS, ARGV)\n${split.body}\nend\nend`;
}

/** EMBEDDED number (from 1) of the parent release, the one embedded script that adds no job. */
const RELEASE_SCRIPT = EMBEDDED.indexOf(releaseParentIfNoPendingDependencies) + 1;
/** Starts the message of the error the script stops with when the batch cannot be written. */
const REFUSED = 'TM_ADD_REFUSED';

/**
 * Claims the identities of a batch, registers its gates and writes its jobs, in one script:
 * atomic, one round trip. Everything that could refuse is checked before anything is written but
 * the claims of identities without an entry (made by the check itself, and taken back), as Redis
 * does not undo a script's writes when it stops with an error: if an identity is held by a live
 * task, nothing is written and the holders are returned; if a job of the batch exists already or
 * a parent it names is neither stored nor written earlier in the batch (what BullMQ's add scripts
 * refuse, -5 and -7, or, for an existing job without a parent, keep as it is), the script stops
 * with an error and nothing is written. An identity whose last run completed from a claim's
 * `since` on (the dedup window, see COMPLETED_HOLDER_LUA) is held by that completed task.
 * A claimed identity's failure for good, and the entry hiding it (see HIDDEN_LUA), are dropped:
 * dependents wait for its new run. Each gate is put in the waiters set of its dependency unless
 * it is written open (delay 0) and the dependency has settled; a gate written delayed whose
 * dependency has settled meanwhile gets its dependency key put in the `opening` set and returned,
 * for the caller to open (or the reconciler, should the caller die first).
 * KEYS[1] live, KEYS[2] failed, KEYS[3] done, KEYS[4] readding, KEYS[5] opening, then w waiters
 * sets, then the key sets of the BullMQ commands (each set once, however many commands use it)
 * ARGV[1] now (ms), ARGV[2] how long a re-add in progress hides a failure (ms), ARGV[3] number of
 * claims n, ARGV[4] number of key sets k, ARGV[5] number of waiters sets w, ARGV[6] number of
 * gates m, then k key-set lengths, then the w dependency keys of the waiters sets, then n quadruples
 * (taskKey, jobKey, dependencyKey, since: the earliest completion (ms) a new task of the identity
 * duplicates, -1 for none), then m triples (waiters set number from 1, gate id, '1' when
 * written open else '0'), then the BullMQ commands, each as: script number (EMBEDDED order, from
 * 1), key-set number, argument count, arguments.
 * Returns { per claim '' when claimed, else the job key of the live (or recently completed) task
 * holding it; the
 * dependency keys whose gates are to be opened }.
 */
const ADD = `${HOLDER_LUA}${COMPLETED_HOLDER_LUA}${CLAIMED_LUA}${HIDDEN_LUA}
${EMBEDDED.map((s, n) => embed(s, `bullmq${n + 1}`)).join('\n')}
local scripts = { ${EMBEDDED.map((_, n) => `bullmq${n + 1}`).join(', ')} }
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
  if tonumber(ARGV[i]) ~= ${RELEASE_SCRIPT} then
    local args = cmsgpack.unpack(ARGV[i + 3])
    local jobKey = args[1] .. args[2]
    if args[2] == '' or writes[jobKey] or redis.call('EXISTS', jobKey) == 1 then
      unclaim()
      return redis.error_reply('${REFUSED} job ' .. jobKey .. ' exists already; nothing of the batch was written')
    end
    local parentKey = args[5]
    if parentKey and not writes[parentKey] and redis.call('EXISTS', parentKey) == 0 then
      unclaim()
      return redis.error_reply('${REFUSED} parent ' .. parentKey .. ' of job ' .. jobKey
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
  local result = scripts[script](set, argv)
  -- The checks above leave BullMQ nothing to refuse; should it refuse anyway, say so.
  if type(result) == 'number' and result < 0 then
    return redis.error_reply('${REFUSED} BullMQ refused a write of this batch after part of it was written (code '
      .. result .. ')')
  end
  i = i + 3 + argc
end
return { out, toOpen }
`;

type Arg = string | Buffer | number;
/** ioredis flattens an array argument, which spares a spread of tens of thousands of values. */
type Scripted = Redis & { tmAdd(numberOfKeysKeysAndArgs: Arg[]): Promise<[string[], string[]]> };

interface Command {
  script: number;
  args: Arg[];
}

/**
 * Turns flows into the BullMQ commands FlowProducer would queue in its MULTI, by handing
 * BullMQ's own code a transaction stand-in that records them instead of sending them.
 */
class FlowCommands extends FlowProducer {
  /**
   * `queue` gives the Queue object of a queue name (a flow of one is written through it);
   * `order` the place in the batch of each task's job key.
   */
  async commands(flows: FlowJob[], queue: (name: string) => Queue, order: Map<string, number>): Promise<Command[]> {
    const entries: FlowJobEntry[] = [];
    for (const flow of flows) {
      // A flow of one is most of what is added: its entry made directly spares FlowProducer's
      // per-node queue objects. The flows' order is kept (it is the FIFO order of the batch).
      if (flow.children?.length) await this.addNodes(entries, [flow]);
      else
        entries.push(new Job(queue(flow.queueName), flow.name, flow.data, flow.opts, flow.opts?.jobId).toFlowEntry({}));
    }
    inBatchOrder(entries, order);
    const commands: Command[] = [];
    const recorder = {
      runCommand(name: string, args: Arg[]) {
        const script = EMBEDDED.findIndex((s) => name.startsWith(`${s.name}:`));
        if (script < 0) throw new Error(`BullMQ would write this batch with ${name}, which Taskmaster does not embed`);
        commands.push({ script, args });
        return Promise.resolve(1);
      },
    } as never;
    // As RedisQueueBackend.addFlow does: parents are released once the whole tree is written.
    const parents = new Map<string, Arg[]>();
    const queueKeys = new Map<string, ReturnType<QueueKeys['getKeys']>>();
    const writes = entries.map((entry) => {
      const parentKey = entry.parentKeyOpts.parentKey;
      const parent = entry.jobData.parent;
      if (parent && parentKey)
        parents.set(parentKey, [parentKey, `${parentKey}:dependencies`, parent.queueKey ?? '', parent.id ?? '']);
      const queueKey = `${entry.prefix}:${entry.queueName}`;
      let keys = queueKeys.get(queueKey);
      if (!keys) queueKeys.set(queueKey, (keys = new QueueKeys(entry.prefix).getKeys(entry.queueName)));
      return this.backend.addJobToTransaction(
        recorder,
        entry.jobData,
        entry.jobId,
        { ...entry.parentKeyOpts, deferParentRelease: true },
        keys,
      );
    });
    await Promise.all(writes);
    const now = Date.now();
    for (const args of parents.values())
      this.backend.execCommand(recorder, releaseParentIfNoPendingDependencies.name, [...args, now]);
    return commands;
  }
}

/**
 * Puts the entries of a batch in the order their jobs are written so that tasks of equal
 * priority run in the batch's order: BullMQ numbers jobs as they are written into the waiting
 * or prioritised set, and a flow writes a dependency after the dependent it is a child of, which
 * would put it behind the tasks of the batch that come between. Dependents (flow parents) are
 * written first, as their children name them, into the set of those waiting for children, which
 * numbers nothing (a parent is numbered when its children complete); then every other job in
 * the batch's order; gates, in the internal queue, after them.
 */
function inBatchOrder(entries: FlowJobEntry[], order: Map<string, number>): void {
  const place = (e: FlowJobEntry) => {
    if (e.parentKeyOpts.addToWaitingChildren) return -1;
    return order.get(`${e.prefix}:${e.queueName}:${e.jobId}`) ?? order.size;
  };
  const places = new Map(entries.map((e) => [e, place(e)]));
  // Array.prototype.sort is stable: parents keep BullMQ's order, each above its children.
  entries.sort((a, b) => places.get(a)! - places.get(b)!);
}

/** An identity a batch claims; `rerun` when a completed run of it must not make it a duplicate. */
export type AddClaim = ClaimItem & { rerun?: boolean };

/** A gate of a batch, for the add script to register with its dependency. */
export interface GateRegistration {
  dependencyKey: string;
  gateId: string;
  /** Written without delay (its dependency had settled when the batch looked). */
  open: boolean;
}

/**
 * Writes batches of tasks: their identity claims, gate registrations and jobs (plain ones,
 * flows, gates) in one atomic script per batch.
 */
export class AtomicAdder {
  private readonly flows: FlowCommands;
  private readonly redis: Scripted;

  constructor(
    redis: Redis,
    private readonly keys: Keys,
    prefix: string,
    private readonly queue: (name: string) => Queue,
    /** How long after a completion an identical task is its duplicate; undefined: as long as it is recorded. */
    private readonly dedupWindowMs: number | undefined,
  ) {
    this.redis = redis as Scripted;
    if (typeof this.redis.tmAdd !== 'function') {
      redis.defineCommand('tmAdd', { lua: ADD });
      // A batch is thousands of arguments, with a Buffer (packed options) per job.
      encodeScriptCommands(redis, 'tmAdd');
    }
    this.flows = new FlowCommands({ connection: redis, prefix });
  }

  /**
   * Claims `claims` and writes `flows`; resolves to undefined when done, or, when some identity
   * is held by a live task, to each claim's holder ('' where free) with nothing written.
   */
  async add(flows: FlowJob[], claims: AddClaim[], now = Date.now()): Promise<string[] | undefined> {
    return (await this.write(flows, claims, [], now)).held;
  }

  /**
   * As add, registering `gates` too; resolves to the holders when held (nothing written), else
   * to the dependency keys whose gates are to be opened (see ADD). Rejects with
   * TaskAddRefusedError, nothing written, when Redis cannot write the batch as it is.
   */
  async write(
    flows: FlowJob[],
    claims: AddClaim[],
    gates: GateRegistration[],
    now = Date.now(),
  ): Promise<{ held?: string[]; toOpen: string[] }> {
    const order = new Map(claims.map((c, i) => [c.jobKey, i]));
    const commands = await this.flows.commands(flows, this.queue, order);
    const waiters = new Map<string, number>();
    for (const g of gates) if (!waiters.has(g.dependencyKey)) waiters.set(g.dependencyKey, waiters.size + 1);
    const { live, failed, done, readding, opening } = this.keys;
    const keyArgs: Arg[] = [0, live, failed, done, readding, opening];
    for (const dk of waiters.keys()) keyArgs.push(this.keys.waiters(dk));
    const setIndex = new Map<string, number>();
    const lengths: Arg[] = [];
    const args: Arg[] = [];
    for (const { script, args: all } of commands) {
      const count = EMBEDDED[script]!.keys;
      const id = all.slice(0, count).join('\n');
      let set = setIndex.get(id);
      if (set === undefined) {
        setIndex.set(id, (set = setIndex.size + 1));
        for (let j = 0; j < count; j++) keyArgs.push(all[j]!);
        lengths.push(count);
      }
      args.push(script + 1, set, all.length - count);
      for (let j = count; j < all.length; j++) args.push(all[j]!);
    }
    keyArgs[0] = keyArgs.length - 1;
    keyArgs.push(now, READD_HIDES_MS, claims.length, lengths.length, waiters.size, gates.length);
    keyArgs.push(...lengths, ...waiters.keys());
    for (const c of claims) keyArgs.push(c.taskKey, c.jobKey, c.dependencyKey, this.completedSince(c, now));
    for (const g of gates) keyArgs.push(waiters.get(g.dependencyKey)!, g.gateId, g.open ? '1' : '0');
    for (const a of args) keyArgs.push(a);
    let out: [string[], string[]];
    try {
      out = await this.redis.tmAdd(keyArgs);
    } catch (err) {
      const message = err instanceof Error ? err.message : '';
      if (!message.startsWith(REFUSED)) throw err;
      const why = message.slice(REFUSED.length + 1);
      throw new TaskAddRefusedError(`Redis refused to write the batch: ${why}`, { cause: err });
    }
    const [holders, toOpen] = out;
    return holders.some((h) => h) ? { held: holders, toOpen: [] } : { toOpen };
  }

  /** The earliest completion a new task of the claim's identity duplicates (ms), -1 for none. */
  private completedSince(claim: AddClaim, now: number): number {
    if (claim.rerun) return -1;
    return this.dedupWindowMs === undefined ? 0 : now - this.dedupWindowMs;
  }

  close(): Promise<void> {
    return this.flows.close();
  }
}
