import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { taskJobOptions } from '../src/tasks/task-client.ts';
import type { AtomicAdder } from '../src/tasks/atomic-add.ts';
import { splitBullmqScript } from '../src/queue/bullmq/lua-split.ts';
import { addPrioritizedJob, releaseParentIfNoPendingDependencies } from '../src/queue/bullmq/scripts.ts';
import { useHarness } from './support/harness.ts';

/** The job hash fields that depend on what was added (the id aside), not on when. */
async function stored(redis: import('ioredis').Redis, key: string) {
  const { name, data, opts, priority, delay } = await redis.hgetall(key);
  return { name, data, opts: { ...JSON.parse(opts!), jobId: undefined }, priority, delay };
}

describe('tasks written by the embedded BullMQ scripts', () => {
  const h = useHarness();

  it('writes the same job as Queue.add, and BullMQ events and states follow', async () => {
    const c = h.client();
    const [ours] = await c.add({ module: 'record', params: [{ x: 1 }], priority: 70 });
    const job = (await c.queue().getJob(ours!.id))!;
    // The same job through BullMQ's own client code.
    const q = new Queue(h.config.queue, { connection: h.connection('native'), prefix: h.prefix });
    h.defer(() => q.close());
    const native = await q.add(job.name, job.data, { ...taskJobOptions(h.config, 70), jobId: 'native-1' });
    expect(await stored(h.redis, c.keys.job(h.config.queue, ours!.id))).toEqual(
      await stored(h.redis, c.keys.job(h.config.queue, native.id!)),
    );
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
    const again = await c.add([
      { module: 'record', params: ['b'] },
      { module: 'record', params: ['d'], queue: 'other' },
    ]);
    expect(again[0]).toMatchObject({ id: added[1]!.id, queue: 'other', duplicate: true });
    expect(again[1]).toMatchObject({ queue: 'other', duplicate: false });
    expect(await c.queue('other').getJobCountByTypes('prioritized')).toBe(2);
  });

  it('writes nothing, and leaves no claim, when an identity of the batch is held', async () => {
    const c = h.client();
    const [b] = await c.add({ module: 'record', params: ['b'] });
    const held = (await c.queue().getJob(b!.id))!.data.$taskmaster.keys.task as string;
    const adder = (c as unknown as { adder: AtomicAdder }).adder;
    const free = { taskKey: 'free-identity', jobKey: c.keys.job(h.config.queue, 'tfree'), dependencyKey: 'free-dk' };
    const flows = [{ name: 'record', queueName: h.config.queue, data: {}, opts: { jobId: 'tfree', priority: 1 } }];
    const out = await adder.add(flows, [
      free,
      { taskKey: held, jobKey: c.keys.job(h.config.queue, 'tother'), dependencyKey: 'x' },
    ]);
    expect(out).toEqual(['', c.keys.job(h.config.queue, b!.id)]);
    expect(await h.redis.hexists(c.keys.live, 'free-identity')).toBe(0);
    expect(await c.queue().getJob('tfree')).toBeUndefined();
    // Free again, the same call writes both.
    expect(await adder.add(flows, [free])).toBeUndefined();
    expect(await h.redis.hexists(c.keys.live, 'free-identity')).toBe(1);
    expect(await c.queue().getJobState('tfree')).toBe('prioritized');
  });

  it('embeds a BullMQ script split into helpers and body only when its shape allows it', () => {
    const split = splitBullmqScript(addPrioritizedJob.content)!;
    expect(split.names).toContain('jobId');
    expect(split.functions).not.toMatch(/\b(KEYS|ARGV)\b/);
    expect(split.body).toMatch(/^metaKey = KEYS\[2\]/);
    // A helper reading KEYS, or code between the helpers, would change meaning if split.
    expect(
      splitBullmqScript(
        addPrioritizedJob.content.replace('local function storeJob(', 'local function storeJob(KEYS, '),
      ),
    ).toBeUndefined();
    expect(
      splitBullmqScript(
        addPrioritizedJob.content.replace('local function storeJob(', 'rcall("PING")\nlocal function storeJob('),
      ),
    ).toBeUndefined();
    // The parent release starts with code before its helpers: embedded whole.
    expect(splitBullmqScript(releaseParentIfNoPendingDependencies.content)).toBeUndefined();
  });
});
