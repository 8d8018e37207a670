import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Keys } from '../queue/keys.ts';
import { lua } from '../queue/scripts.ts';

const SWEEP = lua('sweep-identities');

type Scripted = Redis & {
  tmSweepIdentities(hash: string, cursor: string, cutoff: number, count: number): Promise<[string, number]>;
};

export interface IdentityRetentionOptions {
  connection: Redis;
  keys: Keys;
  /** How long an identity's record stays in Redis after its task finished. */
  retentionMs: number;
  /**
   * With an archive: the finish time (ms) of the oldest finished job not archived yet, if any.
   * Records of tasks that may not be archived yet are kept, so a late dependency always finds
   * its identity in Redis or in the archive.
   */
  oldestUnarchived?: () => Promise<number | undefined>;
  log: Logger;
  /** Pause between sweeps. @defaultValue a tenth of the retention, from 1 s to 10 min */
  everyMs?: number;
}

/** Records examined per script call: small enough that one call never holds Redis up for long. */
const SLICE = 500;

/**
 * Keeps identity records (completions, failures for good, claims left by crashed producers) in
 * Redis for a bounded time after their task finished, so that Redis memory stays bounded however
 * many distinct tasks pass. What is older is found in the archive, when there is one.
 */
export class IdentityRetention {
  private readonly redis: Scripted;
  private readonly log: Logger;
  private timer?: NodeJS.Timeout;
  private sweeping?: Promise<number>;

  constructor(private readonly opts: IdentityRetentionOptions) {
    this.redis = opts.connection as Scripted;
    if (typeof this.redis.tmSweepIdentities !== 'function') {
      opts.connection.defineCommand('tmSweepIdentities', { numberOfKeys: 1, lua: SWEEP });
    }
    this.log = opts.log.child({ component: 'identity-retention' });
  }

  /** Removes every record older than the retention (and than the oldest unarchived job); returns how many. */
  async sweep(now = Date.now()): Promise<number> {
    let cutoff = now - this.opts.retentionMs;
    const oldest = await this.opts.oldestUnarchived?.();
    if (oldest !== undefined) cutoff = Math.min(cutoff, oldest);
    let removed = 0;
    const { live, done, failed, readding } = this.opts.keys;
    // `readding` entries outlive their add only when its producer died half-way.
    for (const hash of [done, failed, live, readding]) {
      let cursor = '0';
      do {
        const [next, n] = await this.redis.tmSweepIdentities(hash, cursor, cutoff, SLICE);
        cursor = next;
        removed += n;
      } while (cursor !== '0');
    }
    return removed;
  }

  start(): this {
    const every = this.opts.everyMs ?? Math.min(Math.max(this.opts.retentionMs / 10, 1000), 600_000);
    const tick = () => {
      if (this.sweeping) return;
      this.sweeping = this.sweep()
        .then((n) => {
          if (n) this.log.debug({ removed: n }, 'identity records past their retention removed');
          return n;
        })
        .catch((err) => {
          this.log.warn({ err }, 'sweeping identity records failed; trying again at the next sweep');
          return 0;
        })
        .finally(() => (this.sweeping = undefined));
    };
    this.timer = setInterval(tick, every);
    this.timer.unref();
    tick();
    return this;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.sweeping;
  }
}
