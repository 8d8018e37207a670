import type { Redis } from 'ioredis';
import { keysFor, type Keys } from '../queue/keys.ts';

/** What a live consumer (a worker process, a remote runner, or a feeder connected to a bridge) says about itself. */
export interface ConsumerInfo {
  id: string;
  kind: 'worker' | 'runner' | 'feeder';
  host: string;
  pid: number;
  /** Queues it takes work from. */
  queues: string[];
  /** Task modules it can run. */
  modules: string[];
  concurrency: number;
  startedAt: number;
  /** Job ids it is running now. */
  running?: string[];
  name?: string;
  /** When it last announced itself (ms), set by the registry. */
  seenAt?: number;
}

/**
 * Who is alive and what each can run, kept in Redis (not in one process's memory) so that any
 * master sees the whole system. Each consumer refreshes its entry with a heartbeat; an entry
 * that is not refreshed expires, so a crashed process drops out on its own.
 */
export class ConsumerRegistry {
  private readonly index: string;
  private readonly key: (id: string) => string;
  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    const keys: Keys = keysFor(prefix);
    this.index = keys.consumers;
    this.key = keys.consumer;
  }

  async announce(info: ConsumerInfo, ttlMs: number): Promise<void> {
    await this.redis
      .multi()
      .set(this.key(info.id), JSON.stringify({ ...info, seenAt: Date.now() }), 'PX', ttlMs)
      .zadd(this.index, Date.now() + ttlMs, info.id)
      .exec();
  }

  async remove(id: string): Promise<void> {
    await this.redis.multi().del(this.key(id)).zrem(this.index, id).exec();
  }

  /** Announces now and then every `everyMs` until the returned function is called. */
  heartbeat(getInfo: () => Promise<ConsumerInfo>, everyMs = 5000): () => Promise<void> {
    let last: string | undefined;
    const beat = () =>
      getInfo()
        .then((info) => {
          last = info.id;
          return this.announce(info, everyMs * 3);
        })
        // A missed beat is made up by the next; three missed ones let the entry expire, as they should.
        .catch(() => undefined);
    void beat();
    const timer = setInterval(beat, everyMs);
    timer.unref();
    return async () => {
      clearInterval(timer);
      // An entry that cannot be removed expires after three beats.
      if (last) await this.remove(last).catch(() => undefined);
    };
  }

  async live(): Promise<ConsumerInfo[]> {
    await this.redis.zremrangebyscore(this.index, '-inf', Date.now());
    const ids = await this.redis.zrange(this.index, 0, -1);
    if (!ids.length) return [];
    const raw = await this.redis.mget(ids.map((id) => this.key(id)));
    return raw.filter((r): r is string => Boolean(r)).map((r) => JSON.parse(r) as ConsumerInfo);
  }

  /** Whether a live consumer other than `exceptId` serves `queue` and announces `module`. */
  async canRun(module: string, queue: string, exceptId: string): Promise<boolean> {
    return (await this.live()).some((c) => c.id !== exceptId && c.queues.includes(queue) && c.modules.includes(module));
  }
}
