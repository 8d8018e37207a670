import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, expect, inject, it } from 'vitest';
import { connect, type TestClient } from './fixtures/bridge-clients.ts';
import { FIXTURE_TASKS, useHarness, waitFor, type Harness } from './support/harness.ts';

const BIN = fileURLToPath(new URL('../bin/taskmaster.js', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

const FEEDERS = 10;
const BATCHES = 15;
const BATCH_SIZE = 20;
/** Batches a feeder keeps sent but not yet acknowledged. */
const IN_FLIGHT = 4;

type Answer = { ok: boolean; tasks?: { _id: string; params: unknown[] }[] };

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/** `taskmaster master` as a process of its own, resolved once it listens. */
async function startMaster(h: Harness, port: number): Promise<ChildProcess> {
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    REDIS_URL: inject('redisUrl'),
    TASKMASTER_PREFIX: h.prefix,
    TASKMASTER_TASKS_DIR: FIXTURE_TASKS,
    TASKMASTER_PORT: String(port),
    TASKMASTER_HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
  };
  const child = spawn(process.execPath, [BIN, 'master'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  h.defer(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
  });
  let stderr = '';
  child.stdout!.resume();
  child.stderr!.on('data', (d) => (stderr += d));
  await waitFor(
    () => stderr.includes('"msg":"master started"') || child.exitCode !== null,
    'the master to start',
    60_000,
  );
  if (child.exitCode !== null) throw new Error(`the master exited with ${child.exitCode}: ${stderr}`);
  return child;
}

/**
 * A 2016-style feeder that is careful about its batches: it keeps each one until the master
 * acknowledges it, keeps a few in flight, and on every reconnect sends again all it has not
 * seen acknowledged (it cannot know whether a batch sent just before the master died was stored).
 */
class ResendingFeeder {
  readonly unacked = new Map<number, unknown[]>();
  readonly answers: Answer[] = [];
  private next = 0;

  constructor(
    private readonly client: TestClient,
    private readonly batches: unknown[][],
  ) {
    // Registered once connected: every `connect` from here on is a reconnect.
    client.socket.on('connect', () => {
      for (const [n, batch] of this.unacked) this.send(n, batch);
      this.pump();
    });
  }

  get done(): boolean {
    return this.next === this.batches.length && this.unacked.size === 0;
  }

  pump(): void {
    while (this.client.socket.connected && this.next < this.batches.length && this.unacked.size < IN_FLIGHT) {
      const n = this.next++;
      this.unacked.set(n, this.batches[n]!);
      this.send(n, this.batches[n]!);
    }
  }

  private send(n: number, batch: unknown[]): void {
    this.client.socket.emit('task:add', batch, (answer: Answer) => {
      this.answers.push(answer);
      if (answer.ok) this.unacked.delete(n);
      else if (this.client.socket.connected) this.send(n, batch);
      this.pump();
    });
  }
}

/** Feeder f's batches: tasks named f-b-i, the last of each batch after the first. */
function batchesOf(f: number): unknown[][] {
  return Array.from({ length: BATCHES }, (_, b) =>
    Array.from({ length: BATCH_SIZE }, (_, i) => {
      const task: Record<string, unknown> = { module: 'record', params: [{ n: `${f}-${b}-${i}` }] };
      if (i === BATCH_SIZE - 1) task.dependencies = [{ module: 'record', params: [{ n: `${f}-${b}-0` }] }];
      return task;
    }),
  );
}

describe('re-sending after the master was killed', () => {
  const h = useHarness();

  it('10 legacy feeders re-send their unacknowledged batches across a kill -9: every task runs once, none is lost', async () => {
    const port = await freePort();
    let master = await startMaster(h, port);
    const url = `http://127.0.0.1:${port}`;

    const starts = new Map<string, number>();
    const completed = new Set<string>();
    const w = h.worker({ concurrency: 16 });
    const nameOf = (data: unknown) => (data as { $taskmaster: { params: [{ n: string }] } }).$taskmaster.params[0].n;
    w.worker.on('active', (job) => starts.set(nameOf(job.data), (starts.get(nameOf(job.data)) ?? 0) + 1));
    w.worker.on('completed', (job) => completed.add(nameOf(job.data)));

    const feeders: ResendingFeeder[] = [];
    for (let f = 0; f < FEEDERS; f++) {
      const client = await connect(h, '1.7.4', url, { reconnection: true });
      feeders.push(new ResendingFeeder(client, batchesOf(f)));
    }
    const acked = () => feeders.reduce((n, f) => n + f.answers.filter((a) => a.ok).length, 0);
    for (const f of feeders) f.pump();

    // Mid-stream: some batches acknowledged, others in flight, stored or not.
    await waitFor(() => acked() >= (FEEDERS * BATCHES) / 3, 'a third of the batches to be acknowledged', 60_000);
    const exited = new Promise((r) => master.once('exit', r));
    process.kill(master.pid!, 'SIGKILL');
    await exited;
    master = await startMaster(h, port);

    const total = FEEDERS * BATCHES * BATCH_SIZE;
    await waitFor(() => feeders.every((f) => f.done), 'every batch to be acknowledged', 120_000);
    await waitFor(() => completed.size === total, `all ${total} tasks to complete`, 120_000);

    // Every task ran exactly once, and the master holds one job per task.
    const twice = [...starts].filter(([, n]) => n !== 1);
    expect(twice, 'tasks started more than once').toEqual([]);
    expect(starts.size).toBe(total);
    const counts = await h.client().queue().getJobCounts();
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(total);
    // Every answer about a task named the same job, however often it was sent.
    const ids = new Map<string, Set<string>>();
    for (const a of feeders.flatMap((f) => f.answers)) {
      for (const t of a.tasks ?? []) {
        const n = (t.params[0] as { n: string }).n;
        if (!ids.has(n)) ids.set(n, new Set());
        ids.get(n)!.add(t._id);
      }
    }
    expect(ids.size).toBe(total);
    expect([...ids].filter(([, s]) => s.size !== 1)).toEqual([]);
  }, 300_000);
});
