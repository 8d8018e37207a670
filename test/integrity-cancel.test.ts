import { Job, Worker } from 'bullmq';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cancelScript } from '../src/queue/scripts.ts';
import type { CancelResult } from '../src/tasks/cancellations.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { useHarness, waitFor } from './support/harness.ts';

// The fixtures `step` and `hold` run in this process and log {at: 'start' | 'end', name} to
// globalThis.__tmSteps; `hold` finishes only when the test calls globalThis.__tmHolds[name]().
type Step = { at: 'start' | 'end'; name: string };
const g = globalThis as { __tmSteps?: Step[]; __tmHolds?: Record<string, (v?: unknown) => void> };
const steps = () => (g.__tmSteps ??= []);
const ran = (kind: Step['at'], name: string) => steps().some((s) => s.at === kind && s.name === name);
const step = (name: string) => ({ module: 'step', params: [{ name }] });

beforeEach(() => {
  g.__tmSteps = [];
  g.__tmHolds = {};
});
afterEach(() => Object.values(g.__tmHolds ?? {}).forEach((done) => done()));

const state = (c: TaskClient, id: string) => c.queue().getJobState(id);
async function failedReason(c: TaskClient, id: string): Promise<string | undefined> {
  await waitFor(async () => ['completed', 'failed'].includes(await state(c, id)), `job ${id} to finish`, 30_000);
  const job = (await Job.fromId(c.queue(), id))!;
  expect(await job.getState(), `job ${id} (${job.name}) fails`).toBe('failed');
  return job.failedReason;
}

describe('cancel script', () => {
  it("is built from BullMQ's own job removal and parent release (their shape is checked)", () => {
    const lua = cancelScript();
    expect(lua).toContain('local function bullmqRemoveJob(KEYS, ARGV)');
    expect(lua).toContain('moveParentOn = moveParentToWaitIfNeeded');
    expect(lua).toContain('local function settleOne(');
  });
});

describe('cancel (integrity)', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  it('never deletes a task that completed while being cancelled: it answers finished, its result kept', async () => {
    const c = h.client();
    h.worker({ concurrency: 8 });
    const n = 200;
    const names = Array.from({ length: n }, (_, i) => `race-${i}`);
    // Each pair adds a task to an idle worker and cancels it at once: the cancel meets the task
    // waiting, running, or finished. A few pairs at a time, so the worker is idle for most.
    const pairs: { name: string; id: string; answer: CancelResult }[] = [];
    for (let i = 0; i < n; i += 4) {
      pairs.push(
        ...(await Promise.all(
          names.slice(i, i + 4).map(async (name) => {
            const [added] = await c.add(step(name));
            return { name, id: added!.id, answer: await c.cancel(added!.id) };
          }),
        )),
      );
    }
    // Every task settles: finished, or gone because the cancel removed it.
    const over = (s: string) => ['completed', 'failed', 'unknown'].includes(s);
    const allOver = async () => (await Promise.all(pairs.map((p) => state(c, p.id)))).every(over);
    await waitFor(allOver, 'every task to settle', 60_000);
    const violations: string[] = [];
    for (const p of pairs) {
      const job = await Job.fromId(c.queue(), p.id);
      const st = job ? await job.getState() : 'gone';
      const [outcome] = await c.store.outcomes([dependencyKey('step', [{ name: p.name }])]);
      const said = `${p.name}: cancel answered ${p.answer.state}, job is ${st}`;
      if (p.answer.state === 'removed') {
        // Removed before it ran: gone, never started, its identity failed as cancelled.
        if (job) violations.push(said);
        if (ran('start', p.name)) violations.push(`${said}, yet it ran`);
        if (outcome?.state !== 'failed' || outcome.reason !== 'cancelled') {
          violations.push(`${said}, identity ${outcome?.state}`);
        }
      } else if (st === 'completed') {
        // Finished (or ran to its end while the cancel was on its way): the result is kept.
        if (!job?.returnvalue) violations.push(`${said} without its result`);
        if (outcome?.state !== 'completed') violations.push(`${said}, identity ${outcome?.state} (${outcome?.reason})`);
      } else if (p.answer.state !== 'cancelling' || st !== 'failed' || job?.failedReason !== 'cancelled') {
        violations.push(`${said} (${job?.failedReason})`);
      }
    }
    expect(violations).toEqual([]);
    // Only tasks removed before they ran are kept for the archive as cancelled.
    const removed = pairs.filter((p) => p.answer.state === 'removed').length;
    expect(removed).toBeGreaterThan(0);
    expect(await h.redis.llen(`${h.prefix}:tm:cancelled`)).toBe(removed);
  });

  it('a finished task answers finished, and nothing changes', async () => {
    const c = h.client();
    h.worker();
    const [x] = await c.add(step('done-before'));
    await waitFor(async () => (await state(c, x!.id)) === 'completed', 'the task to complete');
    expect(await c.cancel(x!.id)).toEqual({ id: x!.id, state: 'finished', was: 'completed' });
    const job = await Job.fromId(c.queue(), x!.id);
    expect(job?.returnvalue).toEqual({ params: { name: 'done-before' } });
    expect(await h.redis.llen(`${h.prefix}:tm:cancelled`)).toBe(0);
    expect(await h.redis.hlen(`${h.prefix}:tm:cancel`)).toBe(0);
    const [outcome] = await c.store.outcomes([dependencyKey('step', [{ name: 'done-before' }])]);
    expect(outcome?.state).toBe('completed');
  });

  it('a cancelled dependency fails its dependents however they are linked, naming it; none runs', async () => {
    const c = h.client();
    const X = step('X');
    // D has X as a direct flow child (same batch), and W (never added) through a gate: D must
    // not wait for W once X is cancelled. E waits on X through a gate (another batch).
    const [d, x] = await c.add([{ ...step('D'), dependencies: [X, step('W-never')] }, X]);
    const [e] = await c.add({ ...step('E'), dependencies: [X] });
    expect(await c.cancel(x!.id)).toMatchObject({ id: x!.id, state: 'removed', was: 'prioritized' });
    h.worker({ concurrency: 4 });
    const dep = 'dependency step\\(\\[\\{"name":"X"\\}\\]\\)';
    const names = new RegExp(`^${dep} \\(job ${x!.id}\\) failed for good: cancelled$`);
    expect(await failedReason(c, d!.id)).toMatch(names);
    expect(await failedReason(c, e!.id)).toMatch(names);
    expect(ran('start', 'D')).toBe(false);
    expect(ran('start', 'E')).toBe(false);
    expect(ran('start', 'X')).toBe(false);
  });

  it('a cancelled dependency that was the last one of its flow parent fails the parent too', async () => {
    const c = h.client();
    const X = step('X1');
    const [d, x] = await c.add([{ ...step('D1'), dependencies: [X] }, X]);
    expect(await c.cancel(x!.id)).toMatchObject({ state: 'removed' });
    h.worker();
    const names = /^dependency step\(\[\{"name":"X1"\}\]\) \(job t\w+\) failed for good: cancelled$/;
    expect(await failedReason(c, d!.id)).toMatch(names);
    expect(ran('start', 'D1')).toBe(false);
  });

  it('keeps no cancel request for a run that finished before honouring it', async () => {
    const c = h.client();
    const [x] = await c.add(step('finishes-anyway'));
    // A consumer that does not listen for cancels takes the job: the cancel is stored for it.
    const plain = new Worker(c.queue().name, null, { connection: h.connection('plain'), prefix: h.prefix });
    plain.on('error', () => {});
    h.defer(() => plain.close());
    const token = 'plain-token';
    const job = (await plain.getNextJob(token))!;
    expect(job.id).toBe(x!.id);
    expect(await c.cancel(x!.id)).toEqual({ id: x!.id, state: 'cancelling' });
    expect(await h.redis.hexists(`${h.prefix}:tm:cancel`, x!.id)).toBe(1);
    await job.moveToCompleted({ kept: true }, token, false);
    // A consumer that does listen, started afterwards, finds nothing to honour and the request goes.
    h.worker();
    const gone = async () => (await h.redis.hexists(`${h.prefix}:tm:cancel`, x!.id)) === 0;
    await waitFor(gone, 'the stale cancel request to go', 30_000);
    expect((await Job.fromId(c.queue(), x!.id))?.returnvalue).toEqual({ kept: true });
  });
});
