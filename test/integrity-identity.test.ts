import { Queue, Worker, type Job } from 'bullmq';
import { describe, expect, it, vi } from 'vitest';
import { startMaster, type Master } from '../src/app.ts';
import { History } from '../src/archive/history.ts';
import type { Config } from '../src/config/config.ts';
import { canonicalJson, dependencyKey } from '../src/tasks/identity.ts';
import { Outcomes } from '../src/tasks/outcomes.ts';
import { toBullPriority } from '../src/tasks/priority.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { useHarness, waitFor, type Harness } from './support/harness.ts';
import { bridge, connect } from './fixtures/bridge-clients.ts';

type Answer = { ok: boolean; tasks: { _id: string; duplicate: boolean }[] };

const state = (c: TaskClient, id: string) => c.queue().getJobState(id);
const reached = (c: TaskClient, id: string, want: string, timeoutMs = 30_000) =>
  waitFor(async () => (await state(c, id)) === want, `job ${id} to be ${want}`, timeoutMs);

/** Values whose JSON differs from their own enumerable properties, at several depths. */
class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
  toJSON(): string {
    return `${this.x},${this.y}`;
  }
}

describe('identity is the stored JSON', () => {
  const h = useHarness();

  it('hashes what JSON.stringify stores: toJSON at every depth, boxed values, undefined, NaN', () => {
    const values: unknown[] = [
      { url: new URL('https://a.example/x') },
      [{ at: new Date(0), inner: { p: new Point(1, 2), list: [new Point(3, 4)] } }],
      // toJSON returning something that itself holds values with toJSON.
      { toJSON: () => ({ b: new URL('https://b.example/'), a: [undefined, () => 1, Symbol('s')] }) },
      [undefined, null, NaN, -0, Infinity, () => 1],
      { s: Object('text'), n: Object(5), b: Object(false), skip: undefined, f: () => 1 },
      { buf: Buffer.from('hi'), map: new Map([[1, 2]]), set: new Set([1]) },
      { z: 1, a: { d: 4, c: [{ y: 2, x: 1 }] }, 10: 'ten', 2: 'two' },
      // toJSON is handed its key; a function with a toJSON is written; a toJSON's result is not asked again.
      {
        k: { toJSON: (key: string) => `under ${key}` },
        list: [{ toJSON: (key: string) => key }],
        f: Object.assign(() => 1, { toJSON: () => 'fn' }),
      },
      { r: { toJSON: () => ({ toJSON: () => 'not called', v: 1 }) } },
    ];
    for (const v of values) {
      expect(canonicalJson(v)).toBe(canonicalJson(JSON.parse(JSON.stringify(v))));
    }
    // Distinct stored JSON, distinct identities.
    const urlKey = (url: string) => dependencyKey('m', [{ url: new URL(url) }]);
    expect(urlKey('https://a.example/')).not.toBe(urlKey('https://b.example/'));
    // Plain JSON keeps the identity it always had: keys sorted at every depth.
    expect(canonicalJson({ b: [{ d: 1, c: 2 }], a: 'x' })).toBe('{"a":"x","b":[{"c":2,"d":1}]}');
    expect(dependencyKey('m', [{ b: 1, a: 2 }])).toBe(dependencyKey('m', [{ a: 2, b: 1 }]));
  });

  it('adds and runs two tasks whose params hold different URL objects', async () => {
    const c = h.client();
    h.worker();
    const [a] = await c.add({ module: 'record', params: [{ url: new URL('https://a.example/page') }] });
    const [b] = await c.add({ module: 'record', params: [{ url: new URL('https://b.example/page') }] });
    expect(a!.duplicate).toBe(false);
    expect(b!.duplicate).toBe(false);
    expect(b!.id).not.toBe(a!.id);
    await reached(c, a!.id, 'completed');
    await reached(c, b!.id, 'completed');
    expect((await c.queue().getJob(a!.id))!.returnvalue).toEqual({ params: { url: 'https://a.example/page' } });
    expect((await c.queue().getJob(b!.id))!.returnvalue).toEqual({ params: { url: 'https://b.example/page' } });
  });

  it('lets a dependency written as JSON (as a feeder sends it) find a task added with a URL object', async () => {
    const c = h.client();
    const [x] = await c.add({ module: 'record', params: [{ url: new URL('https://x.example/') }] });
    // Added while x waits: a gate that x's completion must open.
    const asJson = { module: 'record', params: [{ url: 'https://x.example/' }] };
    const [d] = await c.add({ module: 'record', params: ['after x'], dependencies: [asJson] });
    // The same task as JSON text is a duplicate of x.
    const [again] = await c.add(JSON.stringify({ module: 'record', params: [{ url: new URL('https://x.example/') }] }));
    expect(again).toMatchObject({ id: x!.id, duplicate: true });
    const m = await startMasterFor(h);
    void m;
    h.worker();
    await reached(c, x!.id, 'completed');
    await reached(c, d!.id, 'completed');
  });
});

describe('identity of params that arrive over Socket.IO', () => {
  const h = useHarness();

  it('a Buffer sent as a binary attachment is the task its stored JSON names', async () => {
    const b = await bridge(h);
    const f = await connect(h, '4.8.1', b.url);
    const c = h.client();
    const x = (await f.ask('task:add', { module: 'record', params: [{ file: Buffer.from('abc') }] })) as Answer;
    expect(x.ok).toBe(true);
    // A feeder that knows the task only as JSON depends on it (a gate: another batch) ...
    const stored = { module: 'record', params: [{ file: { type: 'Buffer', data: [97, 98, 99] } }] };
    const dependent = { module: 'record', params: ['after'], dependencies: [stored] };
    const d = (await f.ask('task:add', JSON.stringify(dependent))) as Answer;
    // ... and adding it as JSON is a duplicate of the Buffer one.
    const again = (await f.ask('task:add', JSON.stringify(stored))) as Answer;
    expect(again.tasks[0]).toMatchObject({ _id: x.tasks[0]!._id, duplicate: true });
    h.worker();
    await reached(c, x.tasks[0]!._id, 'completed');
    await reached(c, d.tasks[0]!._id, 'completed');
  });
});

/** The master as `taskmaster master` runs it, on this test's prefix. */
async function startMasterFor(h: Harness): Promise<Master> {
  const config: Config = Object.freeze({ ...h.config, port: 0, host: '127.0.0.1' });
  const m = await startMaster(config, h.log);
  h.defer(() => m.close());
  return m;
}

describe('completions by plain BullMQ consumers', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  /** A BullMQ worker with no Taskmaster code: completes every job, remembering what it ran. */
  function plainWorker(ran: string[]): Worker {
    const w = new Worker(
      h.config.queue,
      async (job: Job) => {
        ran.push(job.id!);
        return { plain: true };
      },
      { connection: h.connection('plain'), prefix: h.prefix },
    );
    w.on('error', () => {});
    h.defer(() => w.close());
    return w;
  }

  /** x added through TaskClient, and a dependent waiting on it through a gate (a separate batch). */
  async function xAndDependent(c: TaskClient, tag: string) {
    const xTask = { module: 'record', params: [{ plain: tag }] };
    const [x] = await c.add(xTask);
    const [d] = await c.add({ module: 'record', params: [{ after: tag }], dependencies: [xTask] });
    expect(await state(c, d!.id)).toBe('waiting-children');
    return { x: x!, d: d! };
  }

  it('records a completion by a plain Worker, so the dependent runs (master running)', async () => {
    const c = h.client();
    await startMasterFor(h);
    const { x, d } = await xAndDependent(c, 'running');
    const ran: string[] = [];
    plainWorker(ran);
    await reached(c, x.id, 'completed');
    await reached(c, d.id, 'completed');
    expect(ran).toEqual([x.id, d.id]);
    const [outcome] = await c.store.outcomes([dependencyKey('record', [{ plain: 'running' }])]);
    expect(outcome).toMatchObject({ state: 'completed', jobId: x.id });
  });

  it('records a completion made while no master ran, when the master first starts', async () => {
    const c = h.client();
    const { x, d } = await xAndDependent(c, 'before-first-start');
    const ran: string[] = [];
    plainWorker(ran);
    await reached(c, x.id, 'completed');
    expect(await state(c, d.id)).toBe('waiting-children');
    await startMasterFor(h);
    await reached(c, d.id, 'completed');
  });

  it('catches up after a restart, from the last event handled or, when trimmed, from the finished sets', async () => {
    const c = h.client();
    const ran: string[] = [];
    const first = await startMasterFor(h);
    // Something seen by the first master, so it has a place to resume from.
    const seen = await xAndDependent(c, 'seen');
    const w = plainWorker(ran);
    await reached(c, seen.d.id, 'completed');
    const lastSeen = () => h.redis.get(c.keys.eventsSeen(h.config.queue));
    await waitFor(async () => (await lastSeen()) !== null, 'the last event handled to be kept');
    await first.close();
    // Completed while no master ran; the stream still holds its event.
    const a = await xAndDependent(c, 'while-down-a');
    await reached(c, a.x.id, 'completed');
    expect(await state(c, a.d.id)).toBe('waiting-children');
    const second = await startMasterFor(h);
    await reached(c, a.d.id, 'completed');
    await second.close();
    // Completed while no master ran, and its events trimmed away.
    await w.pause();
    const b = await xAndDependent(c, 'while-down-b');
    w.resume();
    await reached(c, b.x.id, 'completed');
    expect(await state(c, b.d.id)).toBe('waiting-children');
    await h.redis.xtrim(c.queue().keys.events!, 'MAXLEN', 0);
    await startMasterFor(h);
    await reached(c, b.d.id, 'completed');
  });

  it("leaves alone the outcomes Taskmaster's workers recorded as they finished", async () => {
    const record = vi.spyOn(Outcomes.prototype, 'record');
    const c = h.client();
    await startMasterFor(h);
    h.worker();
    const own = { module: 'record', params: [{ own: 1 }] };
    const [solo] = await c.add(own);
    const [after] = await c.add({ module: 'record', params: [{ own: 2 }], dependencies: [own] });
    const [doomed] = await c.add({ module: 'fail', params: [{ own: 3 }] });
    await reached(c, solo!.id, 'completed');
    await reached(c, after!.id, 'completed');
    await reached(c, doomed!.id, 'failed');
    // Once the watcher has handled the last of their events, none was recorded a second time.
    const ids = new Set([solo!.id, after!.id, doomed!.id]);
    const events = await h.redis.xrange(c.queue().keys.events!, '-', '+');
    const isFinish = (f: string[]) => ids.has(f[f.indexOf('jobId') + 1]!) && ['completed', 'failed'].includes(f[1]!);
    const finished = events.filter(([, f]) => isFinish(f));
    const last = finished.at(-1)![0];
    const lastSeen = () => h.redis.get(c.keys.eventsSeen(h.config.queue));
    await waitFor(async () => (await lastSeen()) === last, 'the watcher to handle the last event');
    expect(record.mock.calls.filter(([, job]) => ids.has(job.id))).toEqual([]);
    record.mockRestore();
  });

  it('still records a failure for good by a plain Worker, so the dependent fails naming it', async () => {
    const c = h.client();
    await startMasterFor(h);
    const { x, d } = await xAndDependent(c, 'doomed');
    const w = new Worker(
      h.config.queue,
      async () => {
        throw new Error('plain failure');
      },
      { connection: h.connection('plain-failing'), prefix: h.prefix },
    );
    w.on('error', () => {});
    h.defer(() => w.close());
    await reached(c, x.id, 'failed');
    await reached(c, d.id, 'failed');
    expect((await c.queue().getJob(d.id))!.failedReason).toMatch(/plain failure/);
  });
});

describe('retry of BullMQ-native jobs', () => {
  const h = useHarness();

  it('retries native jobs with no priority, priority 0 or 2,097,000, keeping their BullMQ priority', async () => {
    const c = h.client();
    h.worker();
    const native = new Queue(h.config.queue, { connection: h.connection('native'), prefix: h.prefix });
    h.defer(() => native.close());
    const jobs = [
      await native.add('record', { n: 'none' }),
      await native.add('record', { n: 'zero' }, { priority: 0 }),
      await native.add('record', { n: 'lowest' }, { priority: 2_097_000 }),
      await native.add('record', { n: 'legacy-70' }, { priority: toBullPriority(70) }),
    ];
    for (const j of jobs) await reached(c, j.id!, 'completed');
    const history = new History(c, { get: (q) => c.queue(q) });
    for (const j of jobs) {
      const { added } = await history.retry(j.id!, h.config.queue);
      expect(added.duplicate).toBe(false);
      const again = (await c.queue().getJob(added.id))!;
      expect({ n: j.data.n, priority: again.priority }).toEqual({ n: j.data.n, priority: j.priority });
      expect(again.name).toBe('record');
      await reached(c, added.id, 'completed');
      expect(again.id).not.toBe(j.id);
    }
  });
});
