import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startMaster, type Master } from '../src/app.ts';
import { Cancellations } from '../src/tasks/cancellations.ts';
import { Gates } from '../src/tasks/gates.ts';
import { Outcomes } from '../src/tasks/outcomes.ts';
import { useHarness, waitFor, type Harness } from './support/harness.ts';
import { connect, type ClientVersion } from './fixtures/bridge-clients.ts';
import { legacyWorker, type Behaviour, type LegacyTaskJson } from './fixtures/legacy-worker-2016.ts';

/**
 * The 2016 worker (test/fixtures/legacy-worker-2016.ts) against a real master: it asks for
 * work only on connect and after its own done/error, runs one task at a time and acts on
 * `task:run` only.
 */
const OLD: ClientVersion[] = ['1.3.7', '1.7.4'];

async function master(h: Harness, port = 0): Promise<Master> {
  const m = await startMaster(Object.freeze({ ...h.config, port, host: '127.0.0.1' }), h.log);
  h.defer(() => m.close());
  return m;
}

/** Tasks say what their process does: `['hang']`, `['manual']`, or `['work', ms]`. */
const byParams = (task: LegacyTaskJson): Behaviour => {
  const [what, ms] = task.params as [string, number?];
  if (what === 'hang' || what === 'manual') return what;
  return { done: ms ?? 50 };
};

describe('legacy fidelity: the 2016 worker', () => {
  // One attempt: a task that times out or is cancelled fails for good and is not run again.
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });
  const state = (id: string) => h.client().queue().getJobState(id);
  const states = (ids: string[]) => Promise.all(ids.map(state));
  const add = async (tasks: object[]) => (await h.client().add(tasks)).map((t) => t.id);

  for (const version of OLD) {
    it(`socket.io-client ${version}: after a timeout and a cancel, each old worker gets work unasked`, async () => {
      const m = await master(h);
      const url = `http://127.0.0.1:${m.port}`;
      const [timesOut, cancelled] = await add([
        { module: 'record', params: ['hang', 1], timeout: 400 },
        { module: 'record', params: ['hang', 2], timeout: 60_000 },
      ]);
      const workers = [await legacyWorker(h, version, url, byParams)];
      workers.push(await legacyWorker(h, version, url, byParams));
      await waitFor(() => workers.every((w) => w.processes.length === 1), 'each worker to hold one task');
      const holder = (id: string) => workers.find((w) => w.runsOf(id).length > 0)!;
      await waitFor(() => holder(timesOut!).cancels.length === 1, 'the timed-out task to be cancelled on its worker');

      const connection = h.connection('cancel');
      const gates = new Gates({ connection, prefix: h.prefix, store: h.client().store, log: h.log });
      h.defer(() => gates.close());
      const cancellations = new Cancellations(connection, h.prefix, gates, new Outcomes(h.client().store, gates));
      expect(await cancellations.request(h.client().queue(), cancelled!)).toMatchObject({ state: 'cancelling' });
      await waitFor(() => holder(cancelled!).cancels.length === 1, 'the cancelled task to be cancelled on its worker');
      expect(workers.every((w) => w.isIdle)).toBe(true);

      // Both workers are idle and asked for nothing since; new tasks reach both of them.
      const more = await add(Array.from({ length: 6 }, (_, i) => ({ module: 'record', params: ['work', 150, i] })));
      const allDone = async () => (await states(more)).every((s) => s === 'completed');
      await waitFor(allDone, 'the new tasks to complete', 30_000);
      for (const w of workers) {
        expect(w.processes.length, 'tasks this worker ran after its cancel').toBeGreaterThan(1);
        expect(w.overlaps).toBe(0);
        expect(w.requests.filter((r) => r === undefined)).toHaveLength(1); // only the one on connect
      }
      expect(await state(timesOut!)).toBe('failed');
      expect(await state(cancelled!)).toBe('failed');
    });

    it(`socket.io-client ${version}: a task done during a master restart brings no second task`, async () => {
      const first = await master(h);
      const port = first.port;
      const url = `http://127.0.0.1:${port}`;
      // A runs until released the first time, and quickly when it runs again.
      const behave = (task: LegacyTaskJson, before: number): Behaviour =>
        task.params[0] === 'A' && before === 0 ? 'manual' : { done: 100 };
      const [a] = await add([{ module: 'record', params: ['A'], priority: 90 }]);
      const worker = await legacyWorker(h, version, url, behave);
      await waitFor(() => worker.processes.length === 1, 'the worker to start A');
      const rest = await add([
        { module: 'record', params: ['B'] },
        { module: 'record', params: ['C'] },
      ]);

      await first.close();
      await waitFor(() => !worker.client.socket.connected, 'the worker to notice the master is gone');
      // Finished during the outage: its task:done and task:request wait in the client's buffer.
      worker.processes[0]!.release();
      expect(worker.reports).toHaveLength(1);
      await master(h, port);
      await worker.client.next('connect', 20_000, 1);

      const ids = [a!, ...rest];
      await waitFor(
        async () => worker.overlaps > 0 || (await states(ids)).every((s) => s === 'completed'),
        'every task to complete',
        30_000,
      );
      expect(worker.overlaps, 'task:run received while a task was running').toBe(0);
      expect(worker.reports.filter((r) => r.taskId !== r.ranId)).toEqual([]);
      const ran = worker.ranToDone();
      for (const id of ids) expect(ran.has(id), `task ${id} ran to its end`).toBe(true);
      // A ran again (the master had given it back), and that run is the one recorded.
      expect(worker.runsOf(a!)).toHaveLength(2);
    });
  }

  it('a flapping runner beside a healthy one: no task fails for good', async () => {
    const m = await master(h);
    const url = `http://127.0.0.1:${m.port}`;
    const ids = await add(Array.from({ length: 4 }, (_, i) => ({ module: 'record', params: ['work', 1500, i] })));
    const healthy = await legacyWorker(h, '1.7.4', url, byParams);
    await waitFor(() => healthy.processes.length === 1, 'the healthy worker to start a task');

    // Connects, asks, drops the task it gets at once, and reconnects (a new socket each time).
    let stop = false;
    let starts = 0;
    const flapping = (async () => {
      while (!stop) {
        const c = await connect(h, '1.7.4', url, { transports: ['websocket'] });
        c.emit('task:request', 'flapper');
        await waitFor(() => stop || c.count('task:run') > 0, 'a task for the flapping runner', 120_000);
        if (c.count('task:run')) starts++;
        c.close();
      }
    })();
    const settled = async () => (await states(ids)).filter((s) => s === 'completed' || s === 'failed').length;
    try {
      await waitFor(async () => (await settled()) === ids.length, 'every task to finish', 60_000);
    } finally {
      stop = true;
      await flapping;
    }
    const [jobs, now] = await Promise.all([Promise.all(ids.map((id) => h.client().queue().getJob(id))), states(ids)]);
    const reasons = jobs.filter((_, i) => now[i] === 'failed').map((j) => j!.failedReason);
    expect(reasons.filter(Boolean), 'tasks that failed for good').toEqual([]);
    expect(starts, 'tasks the flapping runner took').toBeGreaterThan(0);
  });

  it('a runner that declares no slots has one (asking again adds none); {slots: N} gives N, validated', async () => {
    const m = await master(h);
    const url = `http://127.0.0.1:${m.port}`;
    await add(Array.from({ length: 6 }, (_, i) => ({ module: 'record', params: ['work', 0, i] })));
    const one = await connect(h, '1.7.4', url);
    for (let i = 0; i < 3; i++) one.emit('task:request', 'workerName');
    await one.next('task:run');
    const three = await connect(h, '1.3.7', url);
    three.emit('task:request', { name: 'wide', slots: 3 });
    for (let i = 0; i < 3; i++) await three.next('task:run');
    three.emit('task:request', { name: 'wide', slots: 3 });
    // Had the repeated requests counted, the two runners would hold all six by now.
    await waitFor(async () => (await h.client().queue().getActiveCount()) === 4, 'four tasks held');
    await new Promise((r) => setTimeout(r, 300));
    expect(one.count('task:run')).toBe(1);
    expect(three.count('task:run')).toBe(3);

    for (const bad of [0, -1, 1.5, '2', 1001, true]) {
      const answer = (await three.ask('task:request', { slots: bad })) as { ok: boolean; message: string };
      expect(answer.ok, `slots ${JSON.stringify(bad)}`).toBe(false);
      expect(answer.message).toMatch(/slots must be an integer from 1 to 1000/);
    }
  });

  it('records a 2016 worker as ranBy with its address', async () => {
    const m = await master(h);
    const url = `http://127.0.0.1:${m.port}`;
    const [first, second] = await add([
      { module: 'record', params: ['work', 0, 1], priority: 90 },
      { module: 'record', params: ['work', 0, 2] },
    ]);
    await legacyWorker(h, '1.7.4', url, byParams);
    await waitFor(async () => (await state(second!)) === 'completed', 'both tasks to complete');
    const q = h.client().queue();
    // The first went out on the request sent on connect (no name), the second after 'workerName'.
    expect((await q.getJob(first!))!.processedBy).toBe('runner:127.0.0.1');
    expect((await q.getJob(second!))!.processedBy).toBe('runner:workerName@127.0.0.1');
  });
});

describe('taskmaster master --help', () => {
  it('says that the master serves the Socket.IO protocol and the API', () => {
    const bin = fileURLToPath(new URL('../bin/taskmaster.js', import.meta.url));
    const env = { PATH: process.env.PATH, HOME: process.env.HOME };
    const r = spawnSync(process.execPath, [bin, 'master', '--help'], { encoding: 'utf8', env });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Socket\.IO/);
    expect(r.stdout).toMatch(/API/);
  });
});
