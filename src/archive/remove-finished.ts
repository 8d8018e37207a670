import { removeJob } from 'bullmq/dist/esm/scripts/removeJob-2.js';
import { version } from 'bullmq/dist/esm/version.js';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { GATE_QUEUE } from '../queue/keys.ts';

/** The line of BullMQ's removeJob script after which its arguments are all read. */
const ANCHOR = 'local repeatKey = KEYS[2]\n';

/**
 * What goes after ANCHOR. KEYS[3] BullMQ's set of the state the job was trimmed from, KEYS[4]
 * our archived set of that state (KEYS[3] again when there is no archive); ARGV[4] the gate
 * queue's key prefix. The job is removed only while it is still in that set (and archived with
 * the finish time it has there): a job retried since it was picked stays. Its children are not
 * removed (ARGV[2] is always "0"): a child of a parent that failed early may not have run yet,
 * and BullMQ finishes a child whose parent is gone as any other job. Only the gates the job had
 * leave with it, since each stood for it alone; a gate being worked on right now is left to
 * finish, which then does nothing.
 */
const GUARD = `
do
  local finishedAt = rcall("ZSCORE", KEYS[3], jobId)
  if not finishedAt or (KEYS[4] ~= KEYS[3] and rcall("ZSCORE", KEYS[4], jobId) ~= finishedAt) then
    return 0
  end
  if isLocked(prefix, jobId, "0") then return 0 end
  local gates = ARGV[4]
  local gateOptions = { removeChildren = false, ignoreProcessed = false, ignoreLocked = true }
  for _, childKey in ipairs(rcall("SMEMBERS", jobKey .. ":dependencies")) do
    if string.sub(childKey, 1, #gates) == gates then
      removeJobWithChildren(gates, string.sub(childKey, #gates + 1), jobKey, gateOptions)
    end
  end
end
`;

/** BullMQ's removeJob with GUARD, or undefined when BullMQ's script no longer has ANCHOR once. */
export function removeFinishedScript(): string | undefined {
  const at = removeJob.content.indexOf(ANCHOR);
  if (at < 0 || removeJob.content.indexOf(ANCHOR, at + 1) >= 0) return undefined;
  return removeJob.content.slice(0, at + ANCHOR.length) + GUARD + removeJob.content.slice(at + ANCHOR.length);
}

type WithCommand = Redis & { [name: string]: (...args: (string | number)[]) => Promise<number> };

/**
 * Removes finished jobs of one queue that the archiver trims, by BullMQ's own removal (job hash,
 * logs, sets, dedup key, the parent's record of it) checked and done in one step: see GUARD.
 */
export class FinishedJobRemover {
  private readonly command?: string;

  constructor(
    private readonly redis: Redis,
    private readonly queue: Queue,
    private readonly prefix: string,
  ) {
    const lua = removeFinishedScript();
    if (!lua) return;
    this.command = `tmRemoveFinished:${version}`;
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
    const gates = `${this.prefix}:${GATE_QUEUE}:`;
    const keys = [q.toKey(id), q.toKey('repeat'), finishedSet, archivedSet ?? finishedSet];
    return (await r[this.command]!(...keys, id, '0', q.toKey(''), gates)) === 1;
  }
}
