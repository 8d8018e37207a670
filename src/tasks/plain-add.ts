import { Job, type JobsOptions, type Queue } from 'bullmq';
import { addPrioritizedJob } from 'bullmq/dist/esm/scripts/addPrioritizedJob-9.js';
import type { Redis } from 'ioredis';
import type { Keys } from '../queue/keys.ts';
import { CLAIM_GRACE_MS, HOLDER_LUA } from './identity-store.ts';

/** BullMQ's add script takes this many keys, then three arguments. */
const BULL_KEYS = addPrioritizedJob.keys;
const PER_ITEM = 7;

/**
 * BullMQ's add script as three parts, so that it can run once per item of a batch without
 * re-creating its ~35 helper functions each time: `names`, the locals its header reads from
 * KEYS and ARGV (declared once, assigned per item, so helpers that see them see the item's
 * values as in the original); `functions`, its helpers, defined once; `body`, the header's
 * assignments and its main code, run per item. Throws when the script no longer has that shape
 * (a BullMQ upgrade), which every add test would show.
 */
export function splitBullmqScript(content: string): { names: string[]; functions: string; body: string } {
  const lines = content.split('\n');
  let i = lines.findIndex((l) => l.startsWith('local '));
  const names: string[] = [];
  const assignments: string[] = [];
  for (; i < lines.length && !lines[i]!.startsWith('local function'); i++) {
    const line = lines[i]!;
    if (line.trim() === '' || line.trim().startsWith('--')) break;
    const m = /^local (\w+)(\s*=\s*(.+))?$/.exec(line);
    if (!m) throw new Error(`BullMQ's ${addPrioritizedJob.name} script has an unexpected header line: ${line}`);
    names.push(m[1]!);
    // A local declared without a value starts each item as nil, as it starts each run.
    assignments.push(`${m[1]} = ${m[3] ?? 'nil'}`);
  }
  let last = -1;
  lines.forEach((l, n) => {
    if (l.startsWith('local function ')) last = n;
  });
  const end = lines.findIndex((l, n) => n > last && /^end\s*$/.test(l));
  const functions = lines.slice(i, end + 1).join('\n');
  if (!names.length || last < i || end < 0 || /\b(KEYS|ARGV)\b/.test(functions)) {
    throw new Error(`BullMQ's ${addPrioritizedJob.name} script no longer has the shape Taskmaster embeds`);
  }
  return { names, functions, body: [...assignments, ...lines.slice(end + 1)].join('\n') };
}

const bullmq = splitBullmqScript(addPrioritizedJob.content);

/**
 * Claims each identity and, where the claim is ours, adds the job with BullMQ's own add script —
 * all in one script, so a batch of independent tasks costs one round trip and is atomic.
 * BullMQ's script runs unchanged (see splitBullmqScript) with the item's KEYS and ARGV.
 * KEYS[1] live hash, KEYS[2] failed hash, then BullMQ's 9 keys of each queue of the batch
 * ARGV[1] now (ms), ARGV[2] claim grace (ms), then per item: taskKey, jobKey, dependencyKey,
 * queue index (0-based), and BullMQ's three arguments (packed args, data JSON, packed options)
 * Returns, per item, '' when it was added, else the job key of the live task holding its identity.
 */
const CLAIM_AND_ADD = `${HOLDER_LUA}
local ${bullmq.names.join(', ')}
${bullmq.functions}
local function bullmqAdd(KEYS, ARGV)
${bullmq.body}
end
local now, stale = tonumber(ARGV[1]), tonumber(ARGV[2])
local anyFailed = redis.call('HLEN', KEYS[2]) > 0
local out = {}
local queueKeys = {}
local bullArgv = {}
for i = 3, #ARGV, ${PER_ITEM} do
  local tk, jk, q = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 3])
  local claim = now .. '|' .. jk
  local holder = false
  if redis.call('HSETNX', KEYS[1], tk, claim) == 0 then
    holder = holderOf(tk, now, stale)
    if not holder then redis.call('HSET', KEYS[1], tk, claim) end
  end
  if holder then
    out[#out + 1] = holder
  else
    local keys = queueKeys[q]
    if not keys then
      keys = {}
      for k = 1, ${BULL_KEYS} do keys[k] = KEYS[2 + q * ${BULL_KEYS} + k] end
      queueKeys[q] = keys
    end
    bullArgv[1], bullArgv[2], bullArgv[3] = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
    -- A negative code means a missing parent or a clash with a job in another flow; neither can
    -- happen to a new id without a parent.
    local added = bullmqAdd(keys, bullArgv)
    if type(added) == 'number' and added < 0 then
      return redis.error_reply('BullMQ refused job ' .. jk .. ' (code ' .. added .. ')')
    end
    -- A new run of an identity whose last run failed for good: dependents wait for it.
    if anyFailed then redis.call('HDEL', KEYS[2], ARGV[i + 2]) end
    out[#out + 1] = ''
  end
end
return out
`;

/** ioredis flattens an array argument, which spares a spread of tens of thousands of values. */
type Scripted = Redis & { tmClaimAndAdd(numberOfKeysKeysAndArgs: (string | Buffer | number)[]): Promise<string[]> };

export interface PlainItem {
  taskKey: string;
  dependencyKey: string;
  jobKey: string;
  id: string;
  queue: Queue;
  name: string;
  data: unknown;
  opts: JobsOptions;
}

/**
 * What BullMQ would send to add this job: its add command's keys and arguments, taken by
 * handing Job.addJob a transaction stand-in that records the command instead of sending it.
 */
function bullmqAddCommand(item: PlainItem): (string | Buffer | number)[] {
  let recorded: { name: string; args: (string | Buffer | number)[] } | undefined;
  const recorder = {
    runCommand(name: string, args: (string | Buffer | number)[]) {
      recorded = { name, args };
      return Promise.resolve(1);
    },
  };
  void new Job(item.queue, item.name, item.data, item.opts, item.id).addJob(recorder as never);
  // Only the prioritised script is embedded: every task has a priority (see priority.ts).
  if (!recorded?.name.startsWith(`${addPrioritizedJob.name}:`) || recorded.args.length !== BULL_KEYS + 3) {
    throw new Error(`BullMQ would add job ${item.id} with ${recorded?.name ?? 'no command'}, not ${addPrioritizedJob.name}`);
  }
  return recorded.args;
}

/** Claims and adds independent tasks in one atomic script per batch; returns each item's holder. */
export async function claimAndAdd(redis: Redis, keys: Keys, items: PlainItem[], now = Date.now()): Promise<string[]> {
  if (!items.length) return [];
  const r = redis as Scripted;
  if (typeof r.tmClaimAndAdd !== 'function') redis.defineCommand('tmClaimAndAdd', { lua: CLAIM_AND_ADD });
  const queueIndex = new Map<Queue, number>();
  const scriptKeys: (string | Buffer | number)[] = [0, keys.live, keys.failed];
  const args: (string | Buffer | number)[] = [now, CLAIM_GRACE_MS];
  for (const item of items) {
    const command = bullmqAddCommand(item);
    let q = queueIndex.get(item.queue);
    if (q === undefined) {
      queueIndex.set(item.queue, (q = queueIndex.size));
      for (let k = 0; k < BULL_KEYS; k++) scriptKeys.push(command[k]!);
    }
    args.push(item.taskKey, item.jobKey, item.dependencyKey, q, command[BULL_KEYS]!, command[BULL_KEYS + 1]!, command[BULL_KEYS + 2]!);
  }
  scriptKeys[0] = scriptKeys.length - 1;
  for (const a of args) scriptKeys.push(a);
  return r.tmClaimAndAdd(scriptKeys);
}
