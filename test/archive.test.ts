import { spawn, type ChildProcess } from 'node:child_process';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import mongoose, { type Connection } from 'mongoose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startMaster, type Master } from '../src/app.ts';
import type { Config } from '../src/config/config.ts';
import { ArchiveStore } from '../src/archive/store.ts';
import type { TaskDocument } from '../src/archive/document.ts';
import { TaskClient } from '../src/tasks/task-client.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import { useHarness, waitFor, type Harness } from './support/harness.ts';
import { testMongo } from './support/mongo.ts';
import { connect } from './fixtures/bridge-clients.ts';
import type { MongoTestServer } from './support/mongo-test-server.ts';

const BIN = fileURLToPath(new URL('../bin/taskmaster.js', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * The archive against a real MongoDB when TEST_MONGO_URL is set, otherwise against the
 * wire-protocol test server (test/support/mongo-test-server.ts). Outage tests need to stop the
 * server, which only the test server allows.
 */
describe('archive', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1', TASKMASTER_KEEP_COMPLETED: '0', TASKMASTER_KEEP_FAILED: '0' });
  let mongo: Awaited<ReturnType<typeof testMongo>>;
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
  const count = () => docs().countDocuments({}, {});
  const conf = (extra: Partial<Config> = {}): Config =>
    Object.freeze({ ...h.config, mongoUrl: mongo.url, port: 0, host: '127.0.0.1', ...extra });

  async function master(extra: Partial<Config> = {}): Promise<Master> {
    const m = await startMaster(conf(extra), h.log);
    h.defer(() => m.close());
    return m;
  }

  /** Adds `n` record tasks in batches; returns their ids. */
  async function addMany(client: TaskClient, n: number, tag: string): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({
        module: 'record',
        params: [{ tag, n: i + k }],
      }));
      ids.push(...(await client.add(batch)).map((a) => a.id));
    }
    return ids;
  }

  /** Every id has exactly one document, and there are no others. */
  async function expectArchivedOnce(ids: string[]) {
    const all = await docs()
      .find({}, { projection: { jobId: 1 } })
      .toArray();
    expect(all).toHaveLength(ids.length);
    expect(new Set(all.map((d) => d.jobId))).toEqual(new Set(ids));
  }

  it('archives every finished state with its fields, and only then removes the jobs from Redis', async () => {
    const c = h.client();
    h.worker({ concurrency: 4 });
    const [ok] = await c.add({ module: 'record', params: [{ n: 1 }], priority: 70, timeout: 5000 });
    const [bad] = await c.add({ module: 'fail', params: [{ n: 2 }] });
    const [held] = await c.add({ module: 'hold', params: [{ name: `archive-held-${h.prefix}` }] });
    // A waiting task cancelled before it ran: paused behind a dependency that never comes.
    const [blocked] = await c.add({
      module: 'record',
      params: [{ n: 3 }],
      dependencies: [{ module: 'record', params: ['never'] }],
    });
    await waitFor(async () => (await c.queue().getJobState(held!.id)) === 'active', 'the held task to run');
    expect(await c.cancel(held!.id)).toMatchObject({ state: 'cancelling' });
    expect(await c.cancel(blocked!.id)).toMatchObject({ state: 'removed' });
    await waitFor(async () => (await c.queue().getJobCounts('completed', 'failed')).failed === 2, 'both failures');

    await master();
    await waitFor(async () => (await count()) === 4, 'four documents');
    const byId = new Map((await docs().find().toArray()).map((d) => [d.jobId, d]));

    const done = byId.get(ok!.id)!;
    expect(done).toMatchObject({
      _id: `tasks:${ok!.id}`,
      queue: 'tasks',
      module: 'record',
      params: [{ n: 1 }],
      priority: 70,
      timeout: 5000,
      dependencies: [],
      status: 'completed',
      result: { params: { n: 1 } },
      attempts: 1,
    });
    expect(done.ranBy).toBe(`${hostname()}:${process.pid}`);
    for (const f of ['created', 'started', 'finished', 'archivedAt'] as const) expect(done[f]).toBeInstanceOf(Date);
    expect(done.duration).toBeGreaterThanOrEqual(0);
    expect(done.taskKey).toMatch(/^[\w-]{43}$/);

    const failed = byId.get(bad!.id)!;
    expect(failed).toMatchObject({
      status: 'failed',
      attempts: 1,
      error: { message: expect.stringContaining('fail fixture') },
    });
    expect(failed.error!.stack).toContain('fail fixture');

    expect(byId.get(held!.id)).toMatchObject({
      status: 'cancelled',
      error: { message: 'cancelled' },
      started: expect.any(Date),
    });
    expect(byId.get(blocked!.id)).toMatchObject({
      status: 'cancelled',
      module: 'record',
      params: [{ n: 3 }],
      dependencies: [{ module: 'record', params: ['never'] }],
    });

    // Keep 0: each archived job leaves Redis, and the cancelled snapshot list empties.
    await waitFor(async () => (await c.queue().getJobCounts('completed', 'failed')).completed === 0, 'Redis trimmed');
    expect(await c.queue().getJobCounts('completed', 'failed')).toEqual({ completed: 0, failed: 0 });
    expect(await h.redis.llen(`${h.prefix}:tm:cancelled`)).toBe(0);
  });

  it('keeps the most recent N finished jobs in Redis after archiving them', async () => {
    const c = h.client();
    h.worker({ concurrency: 10 });
    const ids = await addMany(c, 30, 'keep');
    await master({ keep: { completed: 5, failed: 0 } });
    await waitFor(async () => (await count()) === 30, '30 documents');
    await waitFor(async () => (await c.queue().getCompletedCount()) === 5, 'five kept');
    const kept = await c.queue().getCompleted();
    const keptIds = new Set(kept.map((j) => j.id!));
    const gone = (await docs().find().toArray()).filter((d) => !keptIds.has(d.jobId));
    expect(gone).toHaveLength(25);
    // The kept ones are the most recent (finish times can tie within a millisecond).
    expect(Math.min(...kept.map((j) => j.finishedOn!))).toBeGreaterThanOrEqual(
      Math.max(...gone.map((d) => d.finished.getTime())),
    );
    await expectArchivedOnce(ids);
  });

  it.skipIf(!!process.env.TEST_MONGO_URL)(
    'MongoDB stopped during a load of 5,000 tasks: Redis keeps them, and the archive catches up: 5,000 documents, none lost or doubled',
    async () => {
      const server = mongo.server as MongoTestServer;
      const c = h.client();
      h.worker({ concurrency: 50 });
      await master({ archiveBatch: 200 });
      const adding = addMany(c, 5000, 'outage');
      await waitFor(async () => (await count()) > 0, 'archiving to start', 120_000);
      await server.stop();
      const ids = await adding;
      // The whole load is worked off while MongoDB is away, the archiver trying all along. Nothing
      // is removed while MongoDB cannot acknowledge: what finished meanwhile is still in Redis, and
      // every job is archived once it is back (a job removed unarchived would be missing there).
      await waitFor(
        async () => {
          const open = await c.queue().getJobCounts('wait', 'prioritized', 'active', 'delayed');
          return Object.values(open).every((n) => n === 0);
        },
        'the load to be worked off during the outage',
        120_000,
      );
      expect(await c.queue().getCompletedCount()).toBeGreaterThan(0);
      await server.start();
      await waitFor(async () => (await count()) === 5000, '5,000 documents', 120_000);
      await expectArchivedOnce(ids);
      expect(await docs().countDocuments({ status: 'completed' })).toBe(5000);
      await waitFor(
        async () => (await c.queue().getCompletedCount()) === 0,
        'Redis trimmed after the catch-up',
        30_000,
      );
    },
    480_000,
  );

  it('master killed (SIGKILL) mid-archive: a new master finishes it, nothing lost or doubled', async () => {
    const c = h.client();
    h.worker({ concurrency: 50 });
    const ids = await addMany(c, 5000, 'kill');
    await waitFor(async () => (await c.queue().getCompletedCount()) === 5000, 'all 5,000 to complete', 120_000);
    const first = spawnMaster(h, mongo.url);
    h.defer(() => stop(first));
    await waitFor(async () => (await count()) >= 500, 'archiving under way', 120_000);
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    const atKill = await count();
    expect(atKill).toBeLessThan(5000);
    // The lock of the killed master expires; the new one takes over.
    const second = spawnMaster(h, mongo.url);
    h.defer(() => stop(second));
    await waitFor(async () => (await count()) === 5000, '5,000 documents after the restart', 120_000);
    await expectArchivedOnce(ids);
    await waitFor(async () => (await c.queue().getCompletedCount()) === 0, 'Redis trimmed', 30_000);
  }, 480_000);

  it('two masters archiving at once: 5,000 documents, none lost or doubled, also when one stops mid-way', async () => {
    const c = h.client();
    h.worker({ concurrency: 50 });
    const a = await master({ archiveBatch: 100 });
    await master({ archiveBatch: 100 });
    const ids = await addMany(c, 5000, 'two');
    await waitFor(async () => (await count()) >= 1000, 'archiving under way', 120_000);
    await a.close();
    await waitFor(async () => (await count()) === 5000, '5,000 documents', 120_000);
    await expectArchivedOnce(ids);
  }, 480_000);

  it('history and /api/tasks/:id find live and archived tasks; retry re-queues an archived one; bad parameters get 400', async () => {
    const c = h.client();
    const w = h.worker({ concurrency: 2 });
    const m = await master({ keep: { completed: 1, failed: 0 } });
    const api = `http://127.0.0.1:${m.port}/api`;
    const [old] = await c.add({ module: 'record', params: [{ n: 'old' }] });
    await waitFor(async () => (await count()) === 1, 'the first to be archived');
    const [recent] = await c.add({ module: 'record', params: [{ n: 'recent' }] });
    await waitFor(async () => (await count()) === 2 && !(await c.queue().getJob(old!.id)), 'the first to leave Redis');
    await w.close();
    const [live] = await c.add({ module: 'record', params: [{ n: 'live' }] });

    const get = async (path: string) => {
      const res = await fetch(`${api}${path}`);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    expect(await get(`/tasks/${old!.id}`)).toMatchObject({
      status: 200,
      body: { jobId: old!.id, status: 'completed', source: 'archive', params: [{ n: 'old' }] },
    });
    expect(await get(`/tasks/${recent!.id}`)).toMatchObject({
      status: 200,
      body: { jobId: recent!.id, status: 'completed', source: 'redis' },
    });
    expect(await get(`/tasks/${live!.id}`)).toMatchObject({
      status: 200,
      body: { jobId: live!.id, status: 'prioritized', source: 'redis' },
    });
    expect(await get('/tasks/nope')).toMatchObject({ status: 404, body: { code: 'TASK_NOT_FOUND' } });

    const all = await get('/history?module=record');
    expect((all.body.tasks as { jobId: string }[]).map((t) => t.jobId)).toEqual([live!.id, recent!.id, old!.id]);
    const done = await get('/history?status=completed&limit=1');
    expect((done.body.tasks as { jobId: string }[]).map((t) => t.jobId)).toEqual([recent!.id]);
    const since = await get(`/history?since=${Date.now() + 60_000}`);
    expect(since.body.tasks).toEqual([]);

    for (const [query, param] of [
      ['status=done', 'status'],
      ['since=yesterday', 'since'],
      ['until=2026-13-45', 'until'],
      ['limit=0', 'limit'],
      ['limit=5000', 'limit'],
      ['module=../etc', 'module'],
      ['queue=a:b', 'queue'],
      ['colour=red', 'colour'],
      ['since=2026-02-01&until=2026-01-01', 'since'],
    ] as const) {
      const r = await get(`/history?${query}`);
      expect(r, query).toMatchObject({ status: 400, body: { code: 'INVALID_QUERY', param } });
      expect(r.body.error as string).toMatch(new RegExp(`^${param}: `));
    }
    expect((await fetch(`${api}/history`, { method: 'DELETE' })).status).toBe(405);
    expect(await get('/archive')).toMatchObject({ status: 200, body: { enabled: true, pending: expect.any(Number) } });

    // The CLI: the same search, and retry of the archived task.
    const env = {
      REDIS_URL: h.config.redisUrl,
      TASKMASTER_PREFIX: h.prefix,
      MONGO_URL: mongo.url,
      LOG_LEVEL: 'silent',
      PATH: process.env.PATH,
    };
    const history = await cli(['history', 'record', '--json'], env);
    expect(history.code).toBe(0);
    expect((JSON.parse(history.stdout) as { jobId: string; source: string }[]).map((t) => [t.jobId, t.source])).toEqual(
      [
        [live!.id, 'redis'],
        [recent!.id, 'redis'],
        [old!.id, 'archive'],
      ],
    );
    const badCli = await cli(['history', '--status', 'done'], env);
    expect(badCli).toMatchObject({ code: 2 });
    expect(badCli.stderr).toMatch(/^taskmaster: --status: must be one or more of/);

    const retried = await cli(['retry', old!.id, '--json'], env);
    expect(retried.code, retried.stderr).toBe(0);
    const answer = JSON.parse(retried.stdout) as { task: { id: string } };
    expect(answer.task.id).not.toBe(old!.id);
    const again = await c.queue().getJob(answer.task.id);
    expect(again?.name).toBe('record');
    const status = await cli(['status'], env);
    expect(status.stdout).toMatch(/archive: \d+ finished job\(s\) waiting to be archived/);
    h.worker();
    await waitFor(
      async () => (await docs().countDocuments({ jobId: answer.task.id })) === 1,
      'the retried task to finish and be archived',
    );
    expect((await docs().findOne({ jobId: old!.id }))!.retriedAs).toEqual([answer.task.id]);
    expect(await get(`/tasks/${live!.id}/retry`)).toMatchObject({ status: 405 });
    const notFinished = await fetch(`${api}/tasks/${answer.task.id}/retry`, { method: 'POST' });
    expect([201, 409]).toContain(notFinished.status);
  });

  it('records the remote runner that ran a task, and answers a feeder from the master port', async () => {
    const m = await master();
    const url = `http://127.0.0.1:${m.port}`;
    const feeder = await connect(h, '4.8.1', url);
    const runner = await connect(h, '1.7.4', url);
    const answer = (await feeder.ask('task:add', { module: 'record', params: [{ by: 'runner' }] })) as {
      tasks: { _id: string }[];
    };
    runner.emit('task:request', 'archive-runner');
    const [send] = await runner.next('task:send');
    runner.emit('task:done', send, { fine: true });
    await waitFor(
      async () => (await docs().countDocuments({ jobId: answer.tasks[0]!._id })) === 1,
      'the runner’s task archived',
    );
    expect(await docs().findOne({ jobId: answer.tasks[0]!._id })).toMatchObject({
      status: 'completed',
      result: { fine: true },
      ranBy: 'runner:archive-runner@127.0.0.1',
    });
    // Gone from Redis (keep 0), a watch is answered from the archive.
    await waitFor(async () => !(await h.client().queue().getJob(answer.tasks[0]!._id)), 'the job to leave Redis');
    feeder.emit('task:watch', answer.tasks[0]!._id);
    const [completed] = (await feeder.next('task:completed')) as [{ _id: string; result: unknown; module: string }];
    expect(completed).toMatchObject({ _id: answer.tasks[0]!._id, module: 'record', result: { fine: true } });
  });

  it('finds a dependency that completed long ago in the archive when Redis no longer has its record', async () => {
    const c = h.client();
    h.worker({ concurrency: 2 });
    await master();
    const dep = { module: 'record', params: [{ n: 'ancient' }] };
    const [d] = await c.add(dep);
    await waitFor(
      async () => (await count()) === 1 && !(await c.queue().getJob(d!.id)),
      'the dependency archived and gone from Redis',
    );
    // Its record (kept in place of its claim, or in `done`) is gone too.
    const keys = c.keys;
    expect((await c.store.outcomes([dependencyKey(dep.module, dep.params)]))[0]).toMatchObject({
      state: 'completed',
      jobId: d!.id,
    });
    await h.redis.del(keys.live, keys.done);
    expect(await c.store.outcomes([dependencyKey(dep.module, dep.params)])).toEqual([undefined]);
    const store = new ArchiveStore(mongo.url, h.log);
    h.defer(() => store.close());
    const archived = new TaskClient(h.config, h.connection('archive-client'), { identityArchive: store });
    h.defer(() => archived.close());
    const [x] = await archived.add({ module: 'record', params: [{ n: 'late' }], dependencies: [dep] });
    await waitFor(
      async () => (await docs().countDocuments({ jobId: x!.id, status: 'completed' })) === 1,
      'the dependent to run and be archived',
    );
  });
});

describe('without an archive', () => {
  const h = useHarness({ TASKMASTER_KEEP_COMPLETED: '3' });

  it('keeps only the most recent finished jobs in Redis', async () => {
    const c = h.client();
    h.worker({ concurrency: 5 });
    const m = await startMaster(Object.freeze({ ...h.config, port: 0, host: '127.0.0.1' }), h.log);
    h.defer(() => m.close());
    await c.add(Array.from({ length: 12 }, (_, i) => ({ module: 'record', params: [i] })));
    await waitFor(async () => (await c.queue().getCompletedCount()) === 3, 'three kept');
    const lag = await fetch(`http://127.0.0.1:${m.port}/api/archive`);
    expect(await lag.json()).toEqual({ enabled: false, pending: 0 });
  });
});

function spawnMaster(h: Harness, mongoUrl: string): ChildProcess {
  const child = spawn(process.execPath, [BIN, 'master'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      REDIS_URL: h.config.redisUrl,
      TASKMASTER_PREFIX: h.prefix,
      MONGO_URL: mongoUrl,
      TASKMASTER_PORT: '0',
      TASKMASTER_HOST: '127.0.0.1',
      TASKMASTER_KEEP_COMPLETED: '0',
      TASKMASTER_ARCHIVE_BATCH: '50',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
  await exited;
}

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
