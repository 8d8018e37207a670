import mongoose, { type Connection } from 'mongoose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Job } from 'bullmq';
import { Archiver } from '../src/archive/archiver.ts';
import type { TaskDocument } from '../src/archive/document.ts';
import { ArchiveStore } from '../src/archive/store.ts';
import { FinishedJobs } from '../src/archive/finished-jobs.ts';
import { History } from '../src/archive/history.ts';
import { FinishedJobRemover, removeFinishedScript } from '../src/archive/remove-finished.ts';
import { MAX_DEPTH } from '../src/archive/storable.ts';
import { formatStatus, queueStatus } from '../src/cli/status.ts';
import { newInstanceId } from '../src/instance-id.ts';
import { GATE_QUEUE } from '../src/queue/keys.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { useHarness, waitFor, type Harness } from './support/harness.ts';
import { testMongo } from './support/mongo.ts';
import { MongoTestServer, type MongoVersion } from './support/mongo-test-server.ts';

type Mongo = Awaited<ReturnType<typeof testMongo>>;

/** An archiver on the harness's queue, keeping nothing in Redis once archived (or finished, without a store). */
function archiver(h: Harness, store?: ArchiveStore): Archiver {
  const a = new Archiver({
    connection: h.connection('archiver'),
    prefix: h.prefix,
    owner: newInstanceId(),
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
  const D = {
    module: 'record',
    params: [{ n: 'D', tag }],
    dependencies: [X1, { module: X2.module, params: X2.params }, Y],
  };
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

  it('with an archive: trimming a failed parent leaves its unfinished child, which runs later, archived', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const store = new ArchiveStore(mongo.url, h.log);
    h.defer(() => store.close());
    const { W, x1, x2, d } = await addBatch(c, 'archived');
    expect(await c.queue(GATE_QUEUE).getJobState(`${d}-2`)).toBe('delayed');
    archiver(h, store);

    const failed = () => docs().countDocuments({ jobId: { $in: [d, x1] }, status: 'failed' });
    await waitFor(async () => (await failed()) === 2, 'D and X1 archived as failed', 30_000);
    const gone = async (id: string) => !(await c.queue().getJob(id));
    await waitFor(async () => (await gone(d)) && (await gone(x1)), 'D and X1 trimmed from Redis', 30_000);
    // X2 never ran: it must still be there, waiting for W.
    expect(await c.queue().getJobState(x2)).toBe('waiting-children');
    // The gate D had for Y stood only for D, which is gone: it leaves with D.
    expect(await c.queue(GATE_QUEUE).getJob(`${d}-2`)).toBeUndefined();

    await c.add(W);
    const completed = () => docs().countDocuments({ jobId: x2, status: 'completed' });
    await waitFor(async () => (await completed()) === 1, 'X2 to run and be archived', 30_000);
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

  it("builds its removal on the installed BullMQ's removeJob script", () => {
    // Without the anchor it falls back to BullMQ's public removal, which lacks the check below.
    const lua = removeFinishedScript()!;
    expect(lua).toContain('local finishedAt = rcall("ZSCORE", KEYS[3], jobId)');
    const removal = lua.indexOf('removeJobWithChildren(prefix, jobId, nil, options)');
    expect(lua.indexOf('local finishedAt')).toBeLessThan(removal);
  });

  it('a job retried after it was picked for trimming stays', async () => {
    const c = h.client();
    const w = h.worker();
    const [t] = await c.add({ module: 'record', params: [{ n: 'retried' }] });
    await waitFor(async () => (await c.queue().getJobState(t!.id)) === 'completed', 'the task to complete');
    await w.close();
    const job = (await Job.fromId(c.queue(), t!.id))!;
    const finished = new FinishedJobs(h.redis, h.prefix, c.queue());
    await finished.markArchived([{ id: t!.id, state: 'completed', finishedOn: job.finishedOn! }]);
    // Picked as archived and finished; then retried before the removal runs.
    await job.retry('completed');
    const remover = new FinishedJobRemover(h.redis, c.queue(), h.prefix);
    const set = c.queue().toKey('completed');
    expect(await remover.remove(t!.id, set, `${h.prefix}:tm:archived:${c.queue().name}:completed`)).toBe(false);
    expect(['waiting', 'prioritized']).toContain(await c.queue().getJobState(t!.id));
  });
});

describe('documents MongoDB cannot store as they are (#17 defect 8)', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });
  let mongo: Mongo | undefined;
  let db: Connection | undefined;
  afterEach(async () => {
    await db?.close();
    await mongo?.close();
    db = mongo = undefined;
  });

  type Opened = { store: ArchiveStore; docs: () => ReturnType<Connection['collection']> };
  async function open(version?: MongoVersion): Promise<Opened> {
    if (version) {
      const server = await MongoTestServer.start({ version });
      const url = server.url('tm_test_odd');
      mongo = { url, server, close: () => server.close() };
    } else mongo = await testMongo();
    db = await mongoose.createConnection(mongo.url, { serverSelectionTimeoutMS: 5000 }).asPromise();
    const store = new ArchiveStore(mongo.url, h.log);
    h.defer(() => store.close());
    const conn = db;
    return { store, docs: () => conn.collection('tasks') };
  }

  const DOLLARS = { $foo: 1, 'a.b': { $gt: 2 }, list: [{ $in: [1] }] };

  it('a 17 MB result, a too deep one and one with $-prefixed and dotted keys: archived as documented', async () => {
    const { store, docs } = await open();
    const c = h.client();
    h.worker({ concurrency: 4 });
    const normal = Array.from({ length: 5 }, (_, n) => ({ module: 'record', params: [{ n }] }));
    const added = await c.add([
      ...normal,
      { module: 'odd-result', params: [{ big: 17_000_000 }] },
      { module: 'odd-result', params: [{ deep: 200 }] },
      { module: 'odd-result', params: [{ shape: DOLLARS }] },
    ]);
    const ids = added.map((a) => a.id);
    const [big, deep, dollars] = ids.slice(5);
    await waitFor(async () => (await c.queue().getCompletedCount()) === 8, 'the eight tasks to complete', 60_000);
    const a = archiver(h, store);

    await waitFor(async () => (await docs().countDocuments({})) === 8, 'eight documents', 60_000);
    const byId = new Map((await docs().find({}).toArray()).map((d) => [d.jobId as string, d]));
    for (const [n, id] of ids.slice(0, 5).entries()) {
      expect(byId.get(id!)).toMatchObject({ status: 'completed', result: { params: { n } } });
      expect(byId.get(id!)!.reduced).toBeUndefined();
    }
    // Over 16 MiB: the result gives way, the rest of the document stays.
    expect(byId.get(big!)).toMatchObject({
      status: 'completed',
      module: 'odd-result',
      params: [{ big: 17_000_000 }],
      result: {
        truncated: true,
        bytes: expect.any(Number),
        reason: expect.stringMatching(/over MongoDB's limit of 16 MiB/),
      },
      reduced: { fields: ['result'], reason: expect.stringMatching(/16 MiB/) },
    });
    expect(byId.get(big!)!.result.bytes).toBeGreaterThan(17_000_000);
    expect(byId.get(deep!)).toMatchObject({
      result: { truncated: true, reason: `nested deeper than the ${MAX_DEPTH} levels MongoDB stores` },
      reduced: { fields: ['result'] },
    });
    // MongoDB 5.0+ stores $-prefixed and dotted names below the top level: kept as returned.
    expect(byId.get(dollars!)).toMatchObject({ status: 'completed', params: [{ shape: DOLLARS }], result: DOLLARS });
    expect(byId.get(dollars!)!.reduced).toBeUndefined();

    await waitFor(async () => (await c.queue().getCompletedCount()) === 0, 'Redis trimmed', 30_000);
    expect(await a.lag()).toEqual({ enabled: true, pending: 0 });
  }, 120_000);

  it('MongoDB before 5.0 refuses $-prefixed names in an update: archived with its task data reduced', async () => {
    const { store, docs } = await open('4.4');
    const c = h.client();
    h.worker({ concurrency: 4 });
    const [ok, odd] = await c.add([
      { module: 'record', params: [{ n: 'plain' }] },
      { module: 'odd-result', params: [{ shape: DOLLARS }] },
    ]);
    archiver(h, store);
    await waitFor(async () => (await docs().countDocuments({})) === 2, 'two documents', 60_000);
    const plain = { status: 'completed', result: { params: { n: 'plain' } } };
    expect(await docs().findOne({ jobId: ok!.id })).toMatchObject(plain);
    const refusal = /The dollar \(\$\) prefixed field '\$foo' in '.*\$foo' is not valid for storage\. \(code 52\)$/;
    const reason = expect.stringMatching(new RegExp(`^MongoDB refused the document: ${refusal.source}`));
    const reduced = await docs().findOne({ jobId: odd!.id });
    expect(reduced).toMatchObject({
      status: 'completed',
      module: 'odd-result',
      dependencyKey: dependencyKey('odd-result', [{ shape: DOLLARS }]),
      params: { truncated: true, bytes: JSON.stringify([{ shape: DOLLARS }]).length, reason },
      result: { truncated: true, bytes: JSON.stringify(DOLLARS).length, reason },
      dependencies: { truncated: true, bytes: 2, reason },
      reduced: { reason, fields: ['result', 'params', 'dependencies'] },
    });
    // Once only the archive has it, it cannot be retried: its params are not kept.
    await waitFor(async () => !(await c.queue().getJob(odd!.id)), 'the odd one trimmed from Redis', 30_000);
    const retry = new History(c, { get: (q) => c.queue(q) }, store).retry(odd!.id, c.queue().name);
    const why = new RegExp(`^task ${odd!.id} was archived without its params and dependencies`);
    await expect(retry).rejects.toThrow(why);
  }, 120_000);

  it('a document refused even reduced is set aside in Redis and reported, and archiving goes on', async () => {
    const { store, docs } = await open();
    // A unique index someone added: the second task of a module can never be stored.
    await docs().createIndex({ module: 1 }, { unique: true });
    const c = h.client();
    h.worker({ concurrency: 4 });
    const [first, second] = await c.add([
      { module: 'record', params: [{ n: 1 }] },
      { module: 'record', params: [{ n: 2 }] },
    ]);
    await waitFor(async () => (await c.queue().getCompletedCount()) === 2, 'both to complete');
    const a = archiver(h, store);
    await waitFor(async () => (await a.lag()).setAside === 1, 'one set aside', 60_000);
    const stored = (await docs().find({}).toArray()).map((d) => d.jobId);
    expect(stored).toHaveLength(1);
    const aside = [first!.id, second!.id].find((id) => !stored.includes(id))!;
    // Later ones are archived; the one set aside stays in Redis, untrimmed, and is not retried.
    const [later] = await c.add({ module: 'modern', params: [{ value: 'later' }] });
    const laterArchived = async () => (await docs().countDocuments({ jobId: later!.id })) === 1;
    await waitFor(laterArchived, 'a later one archived', 60_000);
    const kept = async () => (await c.queue().getCompletedCount()) === 1;
    await waitFor(kept, 'Redis trimmed but for the one set aside', 30_000);
    expect(await c.queue().getJobState(aside)).toBe('completed');
    expect(await a.lag()).toMatchObject({ enabled: true, pending: 0, setAside: 1 });
    // `taskmaster status` says so.
    const status = formatStatus(await queueStatus(h.redis, c.queue(), h.prefix, true));
    expect(status).toMatch(/archive: 0 finished job\(s\) waiting to be archived; 1 set aside, kept in Redis: MongoDB/);
  }, 120_000);
});

describe('the MongoDB test server refuses what MongoDB refuses', () => {
  const servers: MongoTestServer[] = [];
  const clients: InstanceType<typeof mongoose.mongo.MongoClient>[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    for (const s of servers.splice(0)) await s.close();
  });

  async function collection(version: MongoVersion) {
    const server = await MongoTestServer.start({ version });
    servers.push(server);
    const client = await new mongoose.mongo.MongoClient(server.url('limits')).connect();
    clients.push(client);
    return client.db('limits').collection<Record<string, unknown>>('t');
  }
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (e: { code?: number; message: string }) => e,
    );

  it('7.0: $-prefixed and dotted names but at the top level of a changed document; 16 MiB; 180 levels', async () => {
    const c = await collection('7.0');
    const id = (s: string) => ({ _id: s as never });
    await c.insertOne({ _id: 'i' as never, $top: 1, a: { $b: 1, 'c.d': 2 } });
    await c.updateOne({ _id: 'u' as never }, { $set: { r: { $b: 1, 'c.d': 2 } } }, { upsert: true });
    await c.updateOne({ _id: 'u' as never }, { $set: { r: { $b: 2 } } });
    expect(await refusal(c.updateOne({ _id: 'u' as never }, { $set: { $hotel: 1 } }))).toMatchObject({
      code: 52,
      message: expect.stringMatching(/^The dollar \(\$\) prefixed field '\$hotel' in '\$hotel' is not allowed in the/),
    });
    const big = 'x'.repeat(16 * 1024 * 1024 - 200);
    await c.updateOne({ _id: 'big' as never }, { $set: { r: big } }, { upsert: true });
    expect(await refusal(c.updateOne({ _id: 'big' as never }, { $set: { s: 'x'.repeat(1000) } }))).toMatchObject({
      code: 17419,
      message: 'Resulting document after update is larger than 16777216',
    });
    const upsert = c.updateOne(id('b2'), { $set: { r: big, s: 'x'.repeat(1000) } }, { upsert: true });
    expect(await refusal(upsert)).toMatchObject({ code: 17420, message: 'Document to upsert is larger than 16777216' });
    expect(await refusal(c.insertOne({ r: big, s: 'x'.repeat(1000) }))).toMatchObject({
      code: 2,
      message: expect.stringMatching(/^object to insert too large\. size in bytes: \d+, max size: 16777216$/),
    });
    let deep: unknown = 1;
    for (let i = 0; i < 180; i++) deep = { d: deep };
    expect(await refusal(c.updateOne(id('deep'), { $set: { r: deep } }, { upsert: true }))).toMatchObject({
      code: 15,
      message: 'Document exceeds maximum nesting depth of 180',
    });
    // A message document over 16 MiB + 16 KiB is refused whole (the driver checks only bulk writes).
    const huge = c.updateOne({ _id: 'huge' as never }, { $set: { r: 'x'.repeat(17_000_000) } }, { upsert: true });
    expect(await refusal(huge)).toMatchObject({ code: 10334 });
  }, 180_000);

  it('4.4: an update refuses $-prefixed names at any level, an insert at the top level', async () => {
    const c = await collection('4.4');
    await c.insertOne({ _id: 'i' as never, a: { $b: 1 } });
    const topLevel = { code: 2, message: "Document can't have $ prefixed field names: $top" };
    expect(await refusal(c.insertOne({ $top: 1 }))).toMatchObject(topLevel);
    const nested = c.updateOne({ _id: 'u' as never }, { $set: { r: [{ $b: 1 }] } }, { upsert: true });
    expect(await refusal(nested)).toMatchObject({
      code: 52,
      message: "The dollar ($) prefixed field '$b' in 'r.0.$b' is not valid for storage.",
    });
  });
});
