import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { bullmqVersion } from '../queue/bullmq/versions.ts';
import { GATE_QUEUE, keysFor } from '../queue/keys.ts';
import { removeFinishedScript } from '../queue/scripts.ts';

export { removeFinishedScript };

type WithCommand = Redis & { [name: string]: (...args: (string | number)[]) => Promise<number> };

/**
 * Removes finished jobs of one queue that the archiver trims, by BullMQ's own removal (job hash,
 * logs, sets, dedup key, the parent's record of it) checked and done in one step: see
 * remove-finished.lua.
 */
export class FinishedJobRemover {
  private readonly command?: string;
  /** The gate queue's jobs' prefix, which remove-finished.lua checks a parent's key against. */
  private readonly gates: string;

  constructor(
    private readonly redis: Redis,
    private readonly queue: Queue,
    prefix: string,
  ) {
    this.gates = keysFor(prefix).queue(GATE_QUEUE, '');
    const lua = removeFinishedScript();
    if (!lua) return;
    this.command = `tmRemoveFinished:${bullmqVersion}`;
    if (!(this.command in redis)) redis.defineCommand(this.command, { numberOfKeys: 4, lua });
  }

  /**
   * Removes job `id` if it is still in `finishedSet` (and, given `archivedSet`, archived with
   * the same finish time); true when it left Redis.
   */
  async remove(id: string, finishedSet: string, archivedSet?: string): Promise<boolean> {
    if (!this.command) {
      // BullMQ changed its script: its public removal, still without children, without the check.
      return (await this.queue.remove(id, { removeChildren: false })) === 1;
    }
    const q = this.queue;
    const r = this.redis as WithCommand;
    const keys = [q.toKey(id), q.toKey('repeat'), finishedSet, archivedSet ?? finishedSet];
    return (await r[this.command]!(...keys, id, '0', q.toKey(''), this.gates)) === 1;
  }
}
