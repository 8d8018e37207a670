import { Queue } from 'bullmq';
import { addPrioritizedJob } from 'bullmq/dist/esm/scripts/addPrioritizedJob-9.js';
import { describe, expect, it } from 'vitest';
import { taskJobOptions } from '../src/tasks/task-client.ts';
import { splitBullmqScript } from '../src/tasks/plain-add.ts';
import { useHarness } from './support/harness.ts';

/** The job hash fields that depend on what was added (the id aside), not on when. */
async function stored(redis: import('ioredis').Redis, key: string) {
  const { name, data, opts, priority, delay } = await redis.hgetall(key);
  return { name, data, opts: { ...JSON.parse(opts!), jobId: undefined }, priority, delay };
}

describe('independent tasks added by the embedded BullMQ add script', () => {
  const h = useHarness();

  it('writes the same job as Queue.add, and BullMQ events and states follow', async () => {
    const c = h.client();
    const [ours] = await c.add({ module: 'record', params: [{ x: 1 }], priority: 70 });
    const job = (await c.queue().getJob(ours!.id))!;
    // The same job through BullMQ's own client code.
    const q = new Queue(h.config.queue, { connection: h.connection('native'), prefix: h.prefix });
    h.defer(() => q.close());
    const native = await q.add(job.name, job.data, { ...taskJobOptions(h.config, 70), jobId: 'native-1' });
    expect(await stored(h.redis, c.keys.job(h.config.queue, ours!.id))).toEqual(await stored(h.redis, c.keys.job(h.config.queue, native.id!)));
    expect(await c.queue().getJobState(ours!.id)).toBe('prioritized');
    // Both went through the one priority counter: ours first, FIFO.
    expect((await c.queue().getPrioritized()).map((j) => j.id)).toEqual([ours!.id, 'native-1']);
    const events = await h.redis.xrange(`${h.prefix}:${h.config.queue}:events`, '-', '+');
    const of = (id: string) => events.filter(([, f]) => f[3] === id).map(([, f]) => f[1]);
    expect(of(ours!.id)).toEqual(of('native-1'));
    expect(of(ours!.id)).toContain('waiting');
  });

  it('adds a batch spanning queues in one step, and answers duplicates held in either queue', async () => {
    const c = h.client();
    const added = await c.add([
      { module: 'record', params: ['a'] },
      { module: 'record', params: ['b'], queue: 'other' },
      { module: 'record', params: ['c'] },
    ]);
    expect(added.map((a) => [a.queue, a.duplicate])).toEqual([
      [h.config.queue, false],
      ['other', false],
      [h.config.queue, false],
    ]);
    expect(await c.queue().getJobCountByTypes('prioritized')).toBe(2);
    expect(await c.queue('other').getJobCountByTypes('prioritized')).toBe(1);
    const again = await c.add([{ module: 'record', params: ['b'] }, { module: 'record', params: ['d'], queue: 'other' }]);
    expect(again[0]).toMatchObject({ id: added[1]!.id, queue: 'other', duplicate: true });
    expect(again[1]).toMatchObject({ queue: 'other', duplicate: false });
    expect(await c.queue('other').getJobCountByTypes('prioritized')).toBe(2);
  });

  it('refuses a BullMQ add script of another shape rather than embedding it wrongly', () => {
    const { names, functions, body } = splitBullmqScript(addPrioritizedJob.content);
    expect(names).toContain('jobId');
    expect(functions).not.toMatch(/\b(KEYS|ARGV)\b/);
    expect(body).toMatch(/^metaKey = KEYS\[2\]/);
    expect(() => splitBullmqScript(addPrioritizedJob.content.replace('local function storeJob(', 'function storeJob(KEYS, '))).toThrow(/shape/);
    expect(() => splitBullmqScript(addPrioritizedJob.content.replace('local metaKey = KEYS[2]', 'local metaKey, x = KEYS[2], 1'))).toThrow(/header line/);
  });
});
