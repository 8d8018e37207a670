import mongoose, { type Connection } from 'mongoose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Job } from 'bullmq';
import { Archiver } from '../src/archive/archiver.ts';
import type { TaskDocument } from '../src/archive/document.ts';
import { ArchiveStore } from '../src/archive/store.ts';
import { FinishedJobs } from '../src/archive/finished-jobs.ts';
import { FinishedJobRemover } from '../src/archive/remove-finished.ts';
import { GATE_QUEUE } from '../src/queue/keys.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { useHarness, waitFor, type Harness } from './support/harness.ts';
import { testMongo } from './support/mongo.ts';

type Mongo = Awaited<ReturnType<typeof testMongo>>;

/** An archiver on the harness's queue, keeping nothing in Redis once archived (or finished, without a store). */
function archiver(h: Harness, store?: ArchiveStore): Archiver {
  const a = new Archiver({
    connection: h.connection('archiver'),
    prefix: h.prefix,
    queues: [h.client().queue()],
    store,
    keep: { completed: 0, failed: 0 },
    log: h.log,
    idleMs: 50,
    maxBackoffMs: 500,
  });
  h.defer(() => a.close());
  return a.start();
}

/**
 * The issue's batch: D after X1 and X2, X1 fails for good, X2 after W (not added yet, so X2
 * waits on a gate), and D also after Y, which never comes (another gate). X1's failure fails D
 * at once, while X2 and the gate for Y still wait.
 */
async function addBatch(c: TaskClient, tag: string) {
  const W = { module: 'record', params: [{ n: 'W', tag }] };
  const Y = { module: 'record', params: [{ n: 'Y never added', tag }] };
  const X1 = { module: 'fail', params: [{ n: 'X1', tag }] };
  const X2 = { module: 'record', params: [{ n: 'X2', tag }], dependencies: [W] };
  const D = { module: 'record', params: [{ n: 'D', tag }], dependencies: [X1, { module: X2.module, params: X2.params }, Y] };
  const [d, x1, x2] = await c.add([D, X1, X2]);
  return { W, X2, d: d!.id, x1: x1!.id, x2: x2!.id };
}

describe('trimming finished jobs (#17 defect 2)', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });
  let mongo: Mongo;
  let db: Connection;

  beforeEach(async () => {
    mongo = await testMongo();
    db = await mongoose.createConnection(mongo.url, { serverSelectionTimeoutMS: 5000 }).asPromise();
  });
  afterEach(async () => {
    await db.close();
    await mongo.close();
  });
  const docs = () => db.collection<TaskDocument>('tasks');

  it('with an archive: trimming a failed parent leaves its unfinished child, which later runs and is archived', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const store = new ArchiveStore(mongo.url, h.log);
    h.defer(() => store.close());
    const { W, x1, x2, d } = await addBatch(c, 'archived');
    expect(await c.queue(GATE_QUEUE).getJobState(`${d}-2`)).toBe('delayed');
    archiver(h, store);

    await waitFor(async () => (await docs().countDocuments({ jobId: { $in: [d, x1] }, status: 'failed' })) === 2, 'D and X1 archived as failed', 30_000);
    await waitFor(async () => !(await c.queue().getJob(d)) && !(await c.queue().getJob(x1)), 'D and X1 trimmed from Redis', 30_000);
    // X2 never ran: it must still be there, waiting for W.
    expect(await c.queue().getJobState(x2)).toBe('waiting-children');
    // The gate D had for Y stood only for D, which is gone: it leaves with D.
    expect(await c.queue(GATE_QUEUE).getJob(`${d}-2`)).toBeUndefined();

    await c.add(W);
    await waitFor(async () => (await docs().countDocuments({ jobId: x2, status: 'completed' })) === 1, 'X2 to run and be archived', 30_000);
    await waitFor(async () => !(await c.queue().getJob(x2)), 'X2 trimmed once archived', 30_000);
  }, 90_000);

  it('without an archive: trimming a failed parent leaves its unfinished child, which later runs', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const { W, X2, x2, d } = await addBatch(c, 'plain');
    archiver(h);

    await waitFor(async () => !(await c.queue().getJob(d)), 'D trimmed from Redis', 30_000);
    expect(await c.queue().getJobState(x2)).toBe('waiting-children');

    await c.add(W);
    const key = dependencyKey(X2.module, X2.params);
    await waitFor(async () => (await c.store.outcomes([key]))[0]?.state === 'completed', 'X2 to run', 30_000);
  }, 90_000);

  it('a job retried after it was picked for trimming stays', async () => {
    const c = h.client();
    const w = h.worker();
    const [t] = await c.add({ module: 'record', params: [{ n: 'retried' }] });
    await waitFor(async () => (await c.queue().getJobState(t!.id)) === 'completed', 'the task to complete');
    await w.close();
    const job = (await Job.fromId(c.queue(), t!.id))!;
    await new FinishedJobs(h.redis, h.prefix, c.queue()).markArchived([{ id: t!.id, state: 'completed', finishedOn: job.finishedOn! }]);
    // Picked as archived and finished; then retried before the removal runs.
    await job.retry('completed');
    const remover = new FinishedJobRemover(h.redis, c.queue(), h.prefix);
    const set = c.queue().toKey('completed');
    expect(await remover.remove(t!.id, set, `${h.prefix}:tm:archived:${c.queue().name}:completed`)).toBe(false);
    expect(['waiting', 'prioritized']).toContain(await c.queue().getJobState(t!.id));
  });
});
