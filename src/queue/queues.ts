import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { OutageLog } from './outage-log.ts';

/** The BullMQ Queue objects of one process, one per queue name, made on first use on one connection. */
export class Queues {
  private readonly byName = new Map<string, Queue>();

  constructor(
    private readonly opts: {
      connection: Redis;
      prefix: string;
      /** The queue `get()` gives when no name is given (config.queue). */
      defaultName: string;
      log: Logger;
    },
  ) {}

  get(name = this.opts.defaultName): Queue {
    let q = this.byName.get(name);
    if (!q) {
      q = new Queue(name, { connection: this.opts.connection, prefix: this.opts.prefix });
      q.on('error', OutageLog.listener(this.opts.log, `queue ${name} error`));
      this.byName.set(name, q);
    }
    return q;
  }

  async close(): Promise<void> {
    const queues = [...this.byName.values()];
    this.byName.clear();
    await Promise.all(queues.map((q) => q.close()));
  }
}
