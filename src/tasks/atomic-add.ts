import { FlowProducer, Job, QueueKeys, type FlowJob, type FlowJobEntry, type Queue } from 'bullmq';
import { addDelayedJob } from 'bullmq/dist/esm/scripts/addDelayedJob-6.js';
import { addParentJob } from 'bullmq/dist/esm/scripts/addParentJob-6.js';
import { addPrioritizedJob } from 'bullmq/dist/esm/scripts/addPrioritizedJob-9.js';
import { addStandardJob } from 'bullmq/dist/esm/scripts/addStandardJob-9.js';
import { releaseParentIfNoPendingDependencies } from 'bullmq/dist/esm/scripts/releaseParentIfNoPendingDependencies-2.js';
import type { Redis } from 'ioredis';
import { encodeScriptCommands } from '../queue/command-encoding.ts';
import type { Keys } from '../queue/keys.ts';
import { CLAIM_GRACE_MS, CLAIMED_LUA, HOLDER_LUA, type ClaimItem } from './identity-store.ts';

interface BullmqScript {
  name: string;
  content: string;
  keys: number;
}

/** The BullMQ scripts a flow of tasks is written with, in the order the Lua dispatch numbers them. */
const EMBEDDED: BullmqScript[] = [addPrioritizedJob, addParentJob, addDelayedJob, addStandardJob, releaseParentIfNoPendingDependencies];

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

/**
 * Claims the identities of a batch and writes its jobs, in one script: atomic, one round trip.
 * If any identity is held by a live task, nothing is written and the holders are returned.
 * KEYS[1] live hash, KEYS[2] failed hash, KEYS[3] done hash, then the key sets of the BullMQ
 * commands (each set once, however many commands use it)
 * ARGV[1] now (ms), ARGV[2] claim grace (ms), ARGV[3] number of claims n, ARGV[4] number of key
 * sets k, then k key-set lengths, then n triples (taskKey, jobKey, dependencyKey), then the
 * BullMQ commands, each as: script number (EMBEDDED order, from 1), key-set number, argument
 * count, arguments.
 * Returns, per claim, '' when claimed, else the job key of the live task holding it.
 */
const ADD = `${HOLDER_LUA}${CLAIMED_LUA}
${EMBEDDED.map((s, n) => embed(s, `bullmq${n + 1}`)).join('\n')}
local scripts = { ${EMBEDDED.map((_, n) => `bullmq${n + 1}`).join(', ')} }
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, k = tonumber(ARGV[3]), tonumber(ARGV[4])
local keySets, at = {}, 4
for s = 1, k do
  local set = {}
  for j = 1, tonumber(ARGV[4 + s]) do
    set[j] = KEYS[at]
    at = at + 1
  end
  keySets[s] = set
end
local claims = 5 + k
local out, fresh, stale = {}, {}, {}
local held = false
for c = 1, n do
  local a = claims + 3 * (c - 1)
  local claim = now .. '|' .. ARGV[a + 1]
  out[c] = ''
  if redis.call('HSETNX', KEYS[1], ARGV[a], claim) == 1 then
    fresh[c] = true
  else
    local holder = holderOf(ARGV[a], now, grace)
    if holder then
      out[c] = holder
      held = true
    else
      stale[c] = claim
    end
  end
end
if held then
  -- Nothing is written: undo this call's new claims (stale ones were left in place).
  for c = 1, n do
    if fresh[c] then redis.call('HDEL', KEYS[1], ARGV[claims + 3 * (c - 1)]) end
  end
  return out
end
local anyFailed = redis.call('HLEN', KEYS[2]) > 0
for c = 1, n do
  local a = claims + 3 * (c - 1)
  if stale[c] then
    -- The claim of a finished run: the completion it may stand for is kept before it goes.
    keepClaimed(KEYS[1], KEYS[3], ARGV[a], ARGV[a + 2])
    redis.call('HSET', KEYS[1], ARGV[a], stale[c])
  end
  -- A new run of an identity whose last run failed for good: dependents wait for it.
  if anyFailed then redis.call('HDEL', KEYS[2], ARGV[a + 2]) end
end
local argv = {}
local i = claims + 3 * n
while i <= #ARGV do
  local script, set, argc = tonumber(ARGV[i]), keySets[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  for j = 1, argc do argv[j] = ARGV[i + 2 + j] end
  for j = argc + 1, #argv do argv[j] = nil end
  local result = scripts[script](set, argv)
  -- A negative code means a missing parent or a job that exists elsewhere in another flow;
  -- new ids under parents written just before cannot meet either.
  if type(result) == 'number' and result < 0 then
    return redis.error_reply('BullMQ refused a write of this batch (code ' .. result .. ')')
  end
  i = i + 3 + argc
end
return out
`;

type Arg = string | Buffer | number;
/** ioredis flattens an array argument, which spares a spread of tens of thousands of values. */
type Scripted = Redis & { tmAdd(numberOfKeysKeysAndArgs: Arg[]): Promise<string[]> };

interface Command {
  script: number;
  args: Arg[];
}

/**
 * Turns flows into the BullMQ commands FlowProducer would queue in its MULTI, by handing
 * BullMQ's own code a transaction stand-in that records them instead of sending them.
 */
class FlowCommands extends FlowProducer {
  /** `queue` gives the Queue object of a queue name (a flow of one is written through it). */
  async commands(flows: FlowJob[], queue: (name: string) => Queue): Promise<Command[]> {
    const entries: FlowJobEntry[] = [];
    for (const flow of flows) {
      // A flow of one is most of what is added: its entry made directly spares FlowProducer's
      // per-node queue objects. The flows' order is kept (it is the FIFO order of the batch).
      if (flow.children?.length) await this.addNodes(entries, [flow]);
      else entries.push(new Job(queue(flow.queueName), flow.name, flow.data, flow.opts, flow.opts?.jobId).toFlowEntry({}));
    }
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
      if (parent && parentKey) parents.set(parentKey, [parentKey, `${parentKey}:dependencies`, parent.queueKey ?? '', parent.id ?? '']);
      const queueKey = `${entry.prefix}:${entry.queueName}`;
      let keys = queueKeys.get(queueKey);
      if (!keys) queueKeys.set(queueKey, (keys = new QueueKeys(entry.prefix).getKeys(entry.queueName)));
      return this.backend.addJobToTransaction(recorder, entry.jobData, entry.jobId, { ...entry.parentKeyOpts, deferParentRelease: true }, keys);
    });
    await Promise.all(writes);
    const now = Date.now();
    for (const args of parents.values()) this.backend.execCommand(recorder, releaseParentIfNoPendingDependencies.name, [...args, now]);
    return commands;
  }
}

/**
 * Writes batches of tasks: their identity claims and their jobs (plain ones, flows, gates) in
 * one atomic script per batch.
 */
export class AtomicAdder {
  private readonly flows: FlowCommands;
  private readonly redis: Scripted;

  constructor(
    redis: Redis,
    private readonly keys: Keys,
    prefix: string,
    private readonly queue: (name: string) => Queue,
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
  async add(flows: FlowJob[], claims: ClaimItem[], now = Date.now()): Promise<string[] | undefined> {
    const commands = await this.flows.commands(flows, this.queue);
    const setIndex = new Map<string, number>();
    const keyArgs: Arg[] = [0, this.keys.live, this.keys.failed, this.keys.done];
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
    keyArgs.push(now, CLAIM_GRACE_MS, claims.length, lengths.length, ...lengths);
    for (const c of claims) keyArgs.push(c.taskKey, c.jobKey, c.dependencyKey);
    for (const a of args) keyArgs.push(a);
    const out = await this.redis.tmAdd(keyArgs);
    return out.some((h) => h) ? out : undefined;
  }

  close(): Promise<void> {
    return this.flows.close();
  }
}
