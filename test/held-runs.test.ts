import { Worker } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { HeldRuns } from '../src/workers/held-runs.ts';
import { useHarness } from './support/harness.ts';

// What a pool's primary reads when a worker process stops answering or dies: the jobs each
// BullMQ worker holds, told apart by the lock tokens it took them with.
describe('held runs (read from Redis by lock token)', () => {
  const h = useHarness();

  it('finds the runs of given workers by their tokens, with start and timeout, and any one run by job id', async () => {
    const c = h.client();
    const added = await c.add([
      { module: 'record', params: [1], timeout: 1_000 },
      { module: 'record', params: [2] },
      { module: 'record', params: [3] },
    ]);
    // Taken by hand, with tokens as BullMQ workers make them: `<worker id>:<n>`.
    const worker = new Worker(h.config.queue, null, {
      connection: h.connection('manual'),
      prefix: h.prefix,
      autorun: false,
    });
    h.defer(() => worker.close(true));
    const before = Date.now();
    const jobs = [await worker.getNextJob('wA:1'), await worker.getNextJob('wA:2'), await worker.getNextJob('wB:1')];
    expect(jobs.map((j) => j?.id)).toEqual(added.map((a) => a.id));

    const held = new HeldRuns(h.redis, h.prefix, h.config.queue, 300_000);
    const byWorker = await held.byWorker(['wA', 'wC']);
    expect([...byWorker.keys()]).toEqual(['wA']);
    const runs = byWorker.get('wA')!.sort((a, b) => a.token.localeCompare(b.token));
    expect(runs.map(({ jobId, token, timeoutMs, queue }) => ({ jobId, token, timeoutMs, queue }))).toEqual([
      { jobId: added[0]!.id, token: 'wA:1', timeoutMs: 1_000, queue: h.config.queue },
      { jobId: added[1]!.id, token: 'wA:2', timeoutMs: 300_000, queue: h.config.queue },
    ]);
    for (const r of runs) expect(r.processedOn).toBeGreaterThanOrEqual(before - 5);
    expect(await held.of('wB')).toMatchObject([{ jobId: added[2]!.id, token: 'wB:1' }]);
    expect(await held.one(added[2]!.id)).toMatchObject({ jobId: added[2]!.id, token: 'wB:1' });

    // A job that is no longer held is not a run.
    await jobs[2]!.moveToCompleted('ok', 'wB:1', false);
    expect(await held.one(added[2]!.id)).toBeUndefined();
    expect(await held.of('wB')).toEqual([]);
  });
});
