import type { Job } from 'bullmq';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GATE_QUEUE } from '../src/queue/keys.ts';
import { Gates } from '../src/tasks/gates.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { useHarness, waitFor } from './support/harness.ts';

// `hold` runs in this process and finishes only when the test calls globalThis.__tmHolds[name]
// (with an Error to fail it); see test/fixtures/tasks/hold.js.
const g = globalThis as { __tmHolds?: Record<string, (v?: unknown) => void> };
const release = (name: string, value?: unknown) => g.__tmHolds![name]!(value);
const running = (name: string) => waitFor(() => !!g.__tmHolds?.[name], `${name} to be running`, 30_000);
beforeEach(() => {
  g.__tmHolds = {};
});
/** A test that fails half-way must not leave `hold` tasks that the worker's close waits for. */
afterEach(() => Object.values(g.__tmHolds ?? {}).forEach((done) => done()));

const X = { module: 'hold', params: [{ name: 'X' }] };
const dk = dependencyKey(X.module, X.params);
const dependent = (i: number) => ({ module: 'record', params: [{ i }], dependencies: [X] });

/** Waits until every job of `ids` is completed or failed; the error counts those that are not. */
async function allFinished(c: TaskClient, ids: string[], what: string): Promise<Job[]> {
  const jobs = async () => {
    const found = await Promise.all(ids.map((id) => c.queue().getJob(id)));
    return found.map((j, i) => [ids[i]!, j] as const);
  };
  const unfinished = async () => (await jobs()).filter(([, j]) => !j?.finishedOn);
  await waitFor(async () => !(await unfinished()).length, what, 40_000).catch(async (err: Error) => {
    const left = await unfinished();
    const states = await Promise.all(left.slice(0, 5).map(([id]) => c.queue().getJobState(id)));
    throw new Error(`${err.message}: ${left.length} of ${ids.length} never finished (states: ${states.join(', ')}...)`);
  });
  return (await jobs()).map(([, j]) => j!);
}

/**
 * Waits until the gate of each dependent (one each, `<id>-0`) has run at least once: it is
 * gone (it finished) or it sleeps again having started.
 */
async function gatesHaveRun(c: TaskClient, ids: string[]): Promise<void> {
  const gates = c.queue(GATE_QUEUE);
  await waitFor(
    async () => {
      if (await gates.getJobCountByTypes('waiting', 'active')) return false;
      const jobs = await Promise.all(ids.map((id) => gates.getJob(`${id}-0`)));
      const states = await Promise.all(jobs.map((j) => j?.getState()));
      return jobs.every((j, i) => !j || (j.attemptsStarted > 0 && states[i] === 'delayed'));
    },
    'every gate to have run',
    30_000,
  );
}

describe('a dependency that fails for good and is added again while gates open (#17)', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });
  const N = 1000;

  /**
   * N dependents wait on X through gates; X's first run fails for good and X is added again
   * at once (as its worker reports the failure) or once the first dependents have failed; its
   * second run completes at once, or once every gate has read X's outcome (`gatesFirst`).
   * Each dependent must end failed (X failed while it waited) or completed after X's second
   * run — never stay blocked.
   */
  async function failThenRunAgain(when: 'at once' | 'after some dependents failed', gatesFirst: boolean) {
    const c = h.client();
    const [first] = await c.add(X);
    const ids = (await c.add(Array.from({ length: N }, (_, i) => dependent(i)))).map((a) => a.id);
    expect(await c.queue().getJobCountByTypes('waiting-children')).toBe(N);
    const w = h.worker({ concurrency: 50 });
    const dependents = new Set(ids);
    const reAdded = new Promise<string>((resolve, reject) => {
      let failed = 0;
      w.worker.on('failed', (job) => {
        const now = when === 'at once' ? job?.id === first!.id : dependents.has(job?.id ?? '') && ++failed === 1;
        if (now) c.add(X).then(([again]) => resolve(again!.id), reject);
      });
    });
    await running('X');
    release('X', new Error('first run fails'));
    const second = await reAdded;
    expect(second).not.toBe(first!.id);
    await running('X');
    if (gatesFirst) await gatesHaveRun(c, ids);
    release('X', 'second run');
    const secondJob = (await allFinished(c, [second], 'the second run'))[0]!;
    expect(secondJob.returnvalue).toMatchObject({ value: 'second run' });

    const jobs = await allFinished(c, ids, `all ${N} dependents to complete or fail`);
    const failed = jobs.filter((j) => j.failedReason);
    const completed = jobs.filter((j) => !j.failedReason);
    const reason = /^dependency hold\(\[\{"name":"X"\}\]\) \(job t\w+\) failed for good: first run fails/;
    for (const j of failed) expect(j.failedReason).toMatch(reason);
    // A dependent that runs does so after the run it waited for.
    for (const j of completed) expect(j.processedOn).toBeGreaterThanOrEqual(secondJob.finishedOn!);
    // No gate sleeps on an identity that has settled; none is left registered.
    expect(await c.queue(GATE_QUEUE).getJobCountByTypes('delayed', 'waiting', 'active')).toBe(0);
    expect(await h.redis.scard(c.keys.waiters(dk))).toBe(0);
    return { failed: failed.length, completed: completed.length };
  }

  it('re-added at once, the new run completing after the gates have read the outcome', async () => {
    const seen = await failThenRunAgain('at once', true);
    expect(seen.failed + seen.completed).toBe(N);
  }, 120_000);

  it('re-added at once, the new run completing at once', async () => {
    const seen = await failThenRunAgain('at once', false);
    expect(seen.failed + seen.completed).toBe(N);
  }, 120_000);

  it('re-added once the first dependents have failed: the others run after the new run', async () => {
    const seen = await failThenRunAgain('after some dependents failed', true);
    expect(seen.failed).toBeGreaterThan(0);
    expect(seen.failed + seen.completed).toBe(N);
  }, 120_000);
});

describe('a dependency that settles while its dependent is being added (#17)', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  it('opens the gate even when the adding process stops right after writing it', async () => {
    const c = h.client();
    const w = h.worker({ concurrency: 4 });
    const [x] = await c.add(X);
    await running('X');
    // X completes, and what it announced is handled, right after the add has read X's outcome
    // (none yet) and before it writes the dependent. From then on, nothing the adding process
    // would do to open the gate itself happens, as when it dies (or Redis goes away) there.
    let read = false;
    const outcomes = c.store.outcomes.bind(c.store);
    c.store.outcomes = async (keys, ...rest) => {
      if (!keys.includes(dk)) return outcomes(keys, ...rest);
      if (read) throw new Error('the adding process is gone');
      read = true;
      const res = await outcomes(keys, ...rest);
      release('X', 'done');
      await allFinished(c, [x!.id], 'X to complete');
      await waitFor(async () => !(await h.redis.sismember(c.keys.opening, dk)), 'what X announced to be handled');
      return res;
    };
    const open = Gates.prototype.open;
    h.defer(() => (Gates.prototype.open = open));
    Gates.prototype.open = function (this: Gates, ...args) {
      return this === w.gates ? open.apply(this, args) : Promise.reject(new Error('the adding process is gone'));
    };
    const added = await c.add(dependent(1)).catch((err: Error) => err);
    Gates.prototype.open = open;
    expect(read).toBe(true);
    // Its jobs are written: the add says so, whatever became of opening the gate.
    expect(added).not.toBeInstanceOf(Error);
    const all = await c.queue().getJobs(['waiting-children', 'waiting', 'active', 'completed', 'failed']);
    const d = all.find((j) => j.name === 'record');
    expect(d, 'the dependent was written').toBeDefined();
    // The reconciler looks every 15 s: run it now.
    await w.gates.reconcile();
    const [job] = await allFinished(c, [d!.id!], 'the dependent to run');
    expect(job!.failedReason).toBeUndefined();
    expect(job!.processedOn).toBeGreaterThanOrEqual((await c.queue().getJob(x!.id))!.finishedOn!);
  });
});
