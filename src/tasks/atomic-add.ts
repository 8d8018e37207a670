import type { FlowJob, FlowJobEntry, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { FLOW_SCRIPTS, FlowCommands } from '../queue/bullmq/flow-commands.ts';
import { encodeScriptCommands } from '../queue/command-encoding.ts';
import type { Keys } from '../queue/keys.ts';
import { ADD_REFUSED, addScript } from '../queue/scripts.ts';
import { TaskAddRefusedError } from '../errors.ts';
import { READD_HIDES_MS, type ClaimItem } from './identity-store.ts';

type Arg = string | Buffer | number;
/** ioredis flattens an array argument, which spares a spread of tens of thousands of values. */
type Scripted = Redis & { tmAdd(numberOfKeysKeysAndArgs: Arg[]): Promise<[string[], string[]]> };

/**
 * Puts the entries of a batch in the order their jobs are written so that tasks of equal
 * priority run in the batch's order: BullMQ numbers jobs as they are written into the waiting
 * or prioritised set, and a flow writes a dependency after the dependent it is a child of, which
 * would put it behind the tasks of the batch that come between. Dependents (flow parents) are
 * written first, as their children name them, into the set of those waiting for children, which
 * numbers nothing (a parent is numbered when its children complete); then every other job in
 * the batch's order; gates, in the internal queue, after them.
 */
function inBatchOrder(entries: FlowJobEntry[], order: Map<string, number>, keys: Keys): void {
  const place = (e: FlowJobEntry) => {
    if (e.parentKeyOpts.addToWaitingChildren) return -1;
    return order.get(keys.job(e.queueName, e.jobId)) ?? order.size;
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
 * flows, gates) in one atomic script per batch (add.lua).
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
      redis.defineCommand('tmAdd', { lua: addScript() });
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
   * to the dependency keys whose gates are to be opened (see add.lua). Rejects with
   * TaskAddRefusedError, nothing written, when Redis cannot write the batch as it is.
   */
  async write(
    flows: FlowJob[],
    claims: AddClaim[],
    gates: GateRegistration[],
    now = Date.now(),
  ): Promise<{ held?: string[]; toOpen: string[] }> {
    const order = new Map(claims.map((c, i) => [c.jobKey, i]));
    const commands = await this.flows.commands(flows, this.queue, (entries) => inBatchOrder(entries, order, this.keys));
    const waiters = new Map<string, number>();
    for (const g of gates) if (!waiters.has(g.dependencyKey)) waiters.set(g.dependencyKey, waiters.size + 1);
    const { live, failed, done, readding, opening } = this.keys;
    const keyArgs: Arg[] = [0, live, failed, done, readding, opening];
    for (const dk of waiters.keys()) keyArgs.push(this.keys.waiters(dk));
    const setIndex = new Map<string, number>();
    const lengths: Arg[] = [];
    const args: Arg[] = [];
    for (const { script, args: all } of commands) {
      const count = FLOW_SCRIPTS[script]!.keys;
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
      if (!message.startsWith(ADD_REFUSED)) throw err;
      const why = message.slice(ADD_REFUSED.length + 1);
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
