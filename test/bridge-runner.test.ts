import { Worker } from 'bullmq';
import { describe, expect, it, vi } from 'vitest';
import type { LegacyTask } from '../src/bridge/legacy-shape.ts';
import { Cancellations } from '../src/tasks/cancellations.ts';
import { Gates } from '../src/tasks/gates.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import { IdentityStore } from '../src/tasks/identity-store.ts';
import { Outcomes } from '../src/tasks/outcomes.ts';
import { ConsumerRegistry } from '../src/workers/registry.ts';
import { useHarness, waitFor } from './support/harness.ts';
import { queueWorkers } from './support/clients.ts';
import { ALL_CLIENTS, bridge, connect, parseTask } from './fixtures/bridge-clients.ts';

type Answer = { ok: boolean; tasks: LegacyTask[]; message?: string };

describe('bridge: remote runners', () => {
  const h = useHarness();
  const state = (id: string) => h.client().queue().getJobState(id);
  const job = (id: string) => h.client().queue().getJob(id);
  /**
   * Resolves once the bridge's fetcher is blocked waiting for a job on the queue: it has looked
   * and found nothing it could hand out.
   */
  const fetcherWaits = () =>
    waitFor(async () => {
      const workers = await queueWorkers(h.redis, h.prefix, h.config.queue);
      return workers.some((w) => w.cmd === 'bzpopmin' && w.flags?.includes('b'));
    }, 'the fetcher to wait for a job');
  /** How many of a flow parent's children BullMQ has seen complete. */
  const childrenDone = async (id: string) => (await (await job(id))!.getDependenciesCount()).processed;

  for (const version of ALL_CLIENTS) {
    it(`socket.io-client ${version}: task:request → task:send and task:run → task:done completes the job`, async () => {
      const b = await bridge(h);
      const feeder = await connect(h, '4.8.1', b.url);
      const runner = await connect(h, version, b.url);
      const [added] = (
        (await feeder.ask('task:add', { module: 'record', params: [{ v: version }], timeout: 60_000 })) as Answer
      ).tasks;
      const asked = Math.floor(Date.now() / 1000);
      runner.emit('task:request', `runner-${version}`);
      const [send] = await runner.next('task:send');
      const got = Math.ceil(Date.now() / 1000);
      const [run] = await runner.next('task:run');
      expect(run).toBe(send);
      const task = parseTask([send]);
      expect(task).toMatchObject({
        _id: added!._id,
        module: 'record',
        params: [{ v: version }],
        priority: 50,
        timeout: 60_000,
        dependencies: [],
        attempt: 1,
      });
      expect(task.assigned.who).toBe(`runner-${version}`);
      expect(task.assigned.when).toBeGreaterThanOrEqual(asked);
      expect(task.assigned.when).toBeLessThanOrEqual(got);
      expect(await state(task._id)).toBe('active');

      // The registry (any master's status page) lists the runner with what it holds.
      await waitFor(
        async () => (await new ConsumerRegistry(h.redis, h.prefix).live()).some((c) => c.running?.includes(task._id)),
        'the runner in the registry',
      );
      const entry = (await new ConsumerRegistry(h.redis, h.prefix).live()).find((c) => c.kind === 'runner')!;
      expect(entry).toMatchObject({
        name: `runner-${version}`,
        queues: ['tasks'],
        protocol: version === '4.8.1' ? 4 : 3,
      });

      runner.emit('task:done', send, { answer: 42 });
      await waitFor(async () => (await state(task._id)) === 'completed', 'the job to complete');
      expect((await job(task._id))!.returnvalue).toEqual({ answer: 42 });
      // A second task:done for it is ignored: it is not completed twice.
      const again = (await runner.ask('task:done', send, { answer: 43 })) as { ok: boolean; message: string };
      expect(again.ok).toBe(false);
      expect(again.message).toMatch(/does not hold it/);
      expect((await job(task._id))!.returnvalue).toEqual({ answer: 42 });
    });
  }

  it('hands tasks out by priority, first-in first-out among equals', async () => {
    const b = await bridge(h);
    const feeder = await connect(h, '2.5.0', b.url);
    const prios = [10, 90, 50, 90, 50, 70];
    await feeder.ask(
      'task:add',
      prios.map((p, i) => ({ module: 'record', params: [i], priority: p })),
    );
    const runner = await connect(h, '1.7.4', b.url);
    const seen: [number, number][] = [];
    for (let i = 0; i < prios.length; i++) {
      runner.emit('task:request');
      const [json] = await runner.next('task:send');
      const t = parseTask([json]);
      seen.push([t.priority, t.params[0] as number]);
      runner.emit('task:done', json);
    }
    expect(seen).toEqual([
      [90, 1],
      [90, 3],
      [70, 5],
      [50, 2],
      [50, 4],
      [10, 0],
    ]);
  });

  it('hands a dependent out only after its dependencies are done', async () => {
    const b = await bridge(h);
    const feeder = await connect(h, '4.8.1', b.url);
    const t = (name: string, deps: string[] = []) => ({
      module: 'record',
      params: [name],
      dependencies: deps.map((d) => ({ module: 'record', params: [d] })),
    });
    // One batch (flow children) plus one dependent added on its own (a gate), before its dependency.
    const [d] = ((await feeder.ask('task:add', t('d', ['c']))) as Answer).tasks;
    const [c] = ((await feeder.ask('task:add', [t('c', ['a', 'b']), t('a'), t('b')])) as Answer).tasks;
    const runner = await connect(h, '1.3.7', b.url);
    // A 2016 runner listens to task:run; three slots, declared (asking again adds none).
    for (let i = 0; i < 3; i++) await runner.ask('task:request', { name: 'deps', slots: 3 });
    const name = (args: unknown[]) => parseTask(args).params[0];
    const first = [name(await runner.next('task:run')), name(await runner.next('task:run'))].sort();
    expect(first).toEqual(['a', 'b']);
    // The third slot waits: the fetcher found nothing to hand out, c and d being blocked.
    await fetcherWaits();
    expect(await state(c!._id)).toBe('waiting-children');
    expect(await state(d!._id)).toBe('waiting-children');
    expect(runner.count('task:run')).toBe(2);
    runner.emit('task:done', runner.all('task:run')[0]![0]);
    // BullMQ has seen one of c's two children complete: c still waits for the other one.
    await waitFor(async () => (await childrenDone(c!._id)) === 1, 'the first child of c to be seen done');
    expect(await state(c!._id)).toBe('waiting-children');
    expect(runner.count('task:run')).toBe(2);
    runner.emit('task:done', runner.all('task:run')[1]![0]);
    const ranC = await runner.next('task:run');
    expect(name(ranC)).toBe('c');
    await runner.ask('task:request', { name: 'deps' }); // the two free slots wait again
    await fetcherWaits();
    expect(await state(d!._id)).toBe('waiting-children');
    expect(runner.count('task:run')).toBe(3);
    runner.emit('task:done', ranC[0]);
    expect(name(await runner.next('task:run'))).toBe('d');
  });

  it('task:error fails the attempt and the task is retried; the third attempt completes', async () => {
    const b = await bridge(h);
    const feeder = await connect(h, '4.8.1', b.url);
    const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['flaky'] })) as Answer).tasks;
    const runner = await connect(h, '1.7.4', b.url);
    for (let attempt = 1; attempt <= 3; attempt++) {
      runner.emit('task:request');
      const [json] = await runner.next('task:send');
      expect(parseTask([json]).attempt).toBe(attempt);
      if (attempt < 3) runner.emit('task:error', { message: `boom ${attempt}` }, json);
      else runner.emit('task:done', json, 'finally');
    }
    await waitFor(async () => (await state(added!._id)) === 'completed', 'completion');
    const j = (await job(added!._id))!;
    expect(j.attemptsMade).toBe(3);
    expect(j.returnvalue).toBe('finally');
    expect((j.stacktrace ?? []).join('\n')).toMatch(/boom 1[\s\S]*boom 2|boom 2[\s\S]*boom 1/);
  });

  it('a timeout sends task:cancel and retries; the late task:done of the first run is ignored', async () => {
    const b = await bridge(h);
    const feeder = await connect(h, '4.8.1', b.url);
    const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['slow'], timeout: 1000 })) as Answer)
      .tasks;
    const runner = await connect(h, '2.5.0', b.url);
    // The second attempt is answered as soon as it arrives: its own timeout runs too.
    runner.socket.on('task:send', (json: unknown) => {
      if (parseTask([json]).attempt === 2) runner.emit('task:done', json, 'from the second run');
    });
    // Measured from before the request, so that a slow machine can only add to it.
    const askedAt = Date.now();
    runner.emit('task:request', 'slowpoke');
    const [first] = await runner.next('task:send');
    const [cancel] = await runner.next('task:cancel');
    expect(Date.now() - askedAt).toBeGreaterThanOrEqual(995);
    expect(parseTask([cancel])._id).toBe(added!._id);
    // The attempt failed with a timeout; the retry (backoff 50 ms) reaches the runner's slot,
    // which the master freed, without a new request.
    const [second] = await runner.next('task:send');
    expect(parseTask([second])).toMatchObject({ _id: added!._id, attempt: 2 });
    expect(parseTask([second]).assigned.lease).not.toBe(parseTask([first]).assigned.lease);
    await waitFor(async () => (await state(added!._id)) === 'completed', 'completion');
    const stacks = ((await job(added!._id))!.stacktrace ?? []).join('\n');
    expect(stacks).toMatch(/exceeded its timeout of 1000 ms on runner slowpoke/);
    const stale = (await runner.ask('task:done', first, 'from the first run')) as { ok: boolean; message: string };
    expect(stale.ok).toBe(false);
    expect((await job(added!._id))!.returnvalue).toBe('from the second run');
  });

  it('a runner that disconnects mid-task gives it back at once, without spending an attempt', async () => {
    // Locks and stalled-job checks that outlast the test: only the give-back can free the task.
    const b = await bridge(h, { lockDurationMs: 600_000, stalledIntervalMs: 600_000 });
    const feeder = await connect(h, '4.8.1', b.url);
    const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['orphan'] })) as Answer).tasks;
    const quitter = await connect(h, '1.3.7', b.url);
    quitter.emit('task:request', 'quitter');
    const [json] = await quitter.next('task:send');
    const other = await connect(h, '4.8.1', b.url);
    await other.ask('task:request', 'other');
    await fetcherWaits();
    expect(other.count('task:send')).toBe(0);
    quitter.close();
    const [again] = await other.next('task:send', 30_000);
    expect(parseTask([again])).toMatchObject({ _id: added!._id, attempt: 1 });
    expect((await job(added!._id))!.attemptsMade).toBe(0);
    other.emit('task:done', again, 'rerun');
    await waitFor(async () => (await state(added!._id)) === 'completed', 'completion');
    expect(parseTask([json])._id).toBe(added!._id);
  });

  it('keeps a task with its runner past the lock duration (the lock is renewed), and forgets the runner when it leaves', async () => {
    const LOCK_MS = 1000;
    const b = await bridge(h, { lockDurationMs: LOCK_MS, stalledIntervalMs: 500 });
    const feeder = await connect(h, '4.8.1', b.url);
    const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['long'] })) as Answer).tasks;
    const runner = await connect(h, '1.7.4', b.url);
    runner.emit('task:request', 'patient');
    const [json] = await runner.next('task:send');
    const other = await connect(h, '2.5.0', b.url);
    await other.ask('task:request', 'eager');
    // Three stalled-job checks after the first lock would have expired unrenewed (one marks a job
    // stalled, the next takes it back): each check stamps the queue's stalled-check key.
    const fetchedAt = (await job(added!._id))!.processedOn!;
    const checkKey = h.client().queue().keys['stalled-check']!;
    const checks = new Set<number>();
    await waitFor(async () => {
      const at = Number(await h.redis.get(checkKey));
      if (at >= fetchedAt + LOCK_MS) checks.add(at);
      return checks.size >= 3;
    }, 'three stalled-job checks past the lock duration');
    expect(await state(added!._id)).toBe('active');
    expect(other.count('task:send')).toBe(0);
    expect(runner.count('task:cancel')).toBe(0);
    runner.emit('task:done', json, 'late but fine');
    await waitFor(async () => (await state(added!._id)) === 'completed', 'completion');
    expect((await job(added!._id))!.returnvalue).toBe('late but fine');
    const registry = new ConsumerRegistry(h.redis, h.prefix);
    await waitFor(async () => (await registry.live()).some((c) => c.name === 'patient'), 'the runner in the registry');
    runner.close();
    await waitFor(
      async () => !(await registry.live()).some((c) => c.name === 'patient'),
      'the runner to leave the registry',
    );
  });

  it('takes back a job whose holder died without a word (its lock expired) and hands it to a runner', async () => {
    const b = await bridge(h, { stalledIntervalMs: 500 });
    const feeder = await connect(h, '4.8.1', b.url);
    const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['abandoned'] })) as Answer).tasks;
    // Another master that crashed while a runner held the job: a manual fetch whose lock is never renewed.
    const crashed = new Worker(h.config.queue, null, {
      connection: h.connection('crashed'),
      prefix: h.prefix,
      lockDuration: 500,
      autorun: false,
    });
    crashed.on('error', () => {});
    h.defer(() => crashed.close(true));
    const taken = await crashed.getNextJob('dead-token');
    expect(taken?.id).toBe(added!._id);
    const runner = await connect(h, '1.3.7', b.url);
    runner.emit('task:request');
    const [json] = await runner.next('task:send', 10_000);
    expect(parseTask([json])._id).toBe(added!._id);
    runner.emit('task:done', json);
    await waitFor(async () => (await state(added!._id)) === 'completed', 'completion');
  });

  it('fails for good a task whose runners keep disconnecting, once it was started maxStarts times', async () => {
    const b = await bridge(h, { maxStarts: 2 });
    const feeder = await connect(h, '4.8.1', b.url);
    const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['poison'] })) as Answer).tasks;
    for (let i = 0; i < 2; i++) {
      const victim = await connect(h, '1.7.4', b.url);
      victim.emit('task:request');
      await victim.next('task:send');
      victim.close();
      await waitFor(async () => (await state(added!._id)) !== 'active', 'the task to be given back');
    }
    const last = await connect(h, '2.5.0', b.url);
    last.emit('task:request');
    await waitFor(async () => (await state(added!._id)) === 'failed', 'the task to fail');
    expect((await job(added!._id))!.failedReason).toMatch(/started 3 times without finishing .* at most 2 are allowed/);
    expect(last.count('task:send')).toBe(0);
  });

  it('serves a waiting task:request when a task is added while the fetcher waits', async () => {
    const b = await bridge(h);
    const runner = await connect(h, '1.7.4', b.url);
    const feeder = await connect(h, '4.8.1', b.url);
    await runner.ask('task:request');
    for (let i = 0; i < 5; i++) {
      // The fetcher is blocked waiting (it wakes on BullMQ's marker when a job is added).
      await fetcherWaits();
      const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['late', i] })) as Answer).tasks;
      const [json] = await runner.next('task:send');
      expect(parseTask([json])._id).toBe(added!._id);
      const done = (await runner.ask('task:done', json)) as { ok: boolean };
      expect(done.ok).toBe(true);
      await runner.ask('task:request');
    }
    expect(runner.count('task:send')).toBe(5);
  });

  it('a runner may add tasks; a cancel request stops the task on its runner', async () => {
    const b = await bridge(h);
    const feeder = await connect(h, '4.8.1', b.url);
    const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['parent'] })) as Answer).tasks;
    const runner = await connect(h, '1.7.4', b.url);
    runner.emit('task:request');
    const [json] = await runner.next('task:send');
    // From inside the task: add a follow-up, as `this.add(task)` did in 2015.
    runner.emit('task:add', [{ module: 'record', params: ['child'] }]);
    const [childAdded] = (await runner.next('task:added')) as [LegacyTask[]];
    expect(await state(childAdded[0]!._id)).toMatch(/waiting|prioritized/);

    const connection = h.connection('cancel');
    const gates = new Gates({ connection, prefix: h.prefix, store: h.client().store, log: h.log });
    h.defer(() => gates.close());
    const cancellations = new Cancellations(connection, h.prefix, gates, new Outcomes(h.client().store, gates));
    expect(await cancellations.request(h.client().queue(), added!._id)).toMatchObject({ state: 'cancelling' });
    const [cancel] = await runner.next('task:cancel');
    expect(parseTask([cancel])._id).toBe(added!._id);
    await waitFor(async () => (await state(added!._id)) === 'failed', 'the job to fail');
    expect((await job(added!._id))!.failedReason).toBe('cancelled');
    expect((await job(added!._id))!.attemptsMade).toBe(1);
    const late = (await runner.ask('task:done', json)) as { ok: boolean };
    expect(late.ok).toBe(false);
    expect(await cancellations.pending([added!._id])).toEqual(new Set());
  });
});

describe('bridge: remote runners, one attempt', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  it('a task that fails for good fails its dependents, which never reach a runner', async () => {
    const b = await bridge(h);
    const feeder = await connect(h, '4.8.1', b.url);
    const t = (name: string, deps: string[] = []) => ({
      module: 'record',
      params: [name],
      dependencies: deps.map((d) => ({ module: 'record', params: [d] })),
    });
    const [dependent, base] = ((await feeder.ask('task:add', [t('dependent', ['base']), t('base')])) as Answer).tasks;
    const runner = await connect(h, '2.5.0', b.url);
    // Two slots: the second waits, and the dependent must not reach it.
    runner.emit('task:request', { slots: 2 });
    const [json] = await runner.next('task:send');
    expect(parseTask([json])._id).toBe(base!._id);
    runner.emit('task:error', 'disk full', json);
    const q = h.client().queue();
    await waitFor(async () => (await q.getJobState(dependent!._id)) === 'failed', 'the dependent to fail');
    expect((await q.getJob(dependent!._id))!.failedReason).toMatch(
      /dependency record\(\["base"\]\) \(job \w+\) failed for good: disk full/,
    );
    expect((await q.getJob(base!._id))!.failedReason).toBe('disk full');
    // The slot is still free: the next task goes to it.
    const [other] = ((await feeder.ask('task:add', { module: 'record', params: ['next'] })) as Answer).tasks;
    const [next] = await runner.next('task:send');
    expect(parseTask([next])._id).toBe(other!._id);
    expect(runner.count('task:send')).toBe(2);
  });
});

describe('bridge: remote runners, outcomes', () => {
  // One attempt, so that a task:error fails the task for good.
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  it("records a runner's outcomes in the step that finishes the job, and opens waiting gates at once", async () => {
    const settle = vi.spyOn(IdentityStore.prototype, 'settle');
    const reconcile = vi.spyOn(Gates.prototype, 'reconcile');
    try {
      const b = await bridge(h);
      const feeder = await connect(h, '4.8.1', b.url);
      const t = (name: string, deps: string[] = []) => ({
        module: 'record',
        params: [name],
        dependencies: deps.map((d) => ({ module: 'record', params: [d] })),
      });
      // A dependent added on its own waits behind a gate, which the announcement opens (the
      // reconciler, which looks every 15 s, must find nothing left to open).
      await feeder.ask('task:add', t('after', ['first']));
      await feeder.ask('task:add', [t('first'), t('doomed')]);
      const runner = await connect(h, '1.7.4', b.url);
      runner.emit('task:request', { name: 'scripted', slots: 2 });
      const byName = new Map<string, string>();
      for (let i = 0; i < 2; i++) {
        const [json] = await runner.next('task:run');
        byName.set(parseTask([json]).params[0] as string, json as string);
      }
      runner.emit('task:error', { message: 'doomed for good' }, byName.get('doomed'));
      runner.emit('task:done', byName.get('first'), 'ok');
      runner.emit('task:request', 'scripted');
      const [after] = await runner.next('task:run');
      expect(parseTask([after]).params[0]).toBe('after');
      const reopened = await Promise.all(reconcile.mock.results.map((r) => r.value as Promise<number>));
      expect(
        reopened.every((n) => n === 0),
        `reconciler passes reopened ${reopened.join(', ')}`,
      ).toBe(true);
      const keys = h.client().keys;
      expect(JSON.parse((await h.redis.hget(keys.done, dependencyKey('record', ['first'])))!)).toMatchObject({
        jobId: parseTask([byName.get('first')])._id,
      });
      expect(JSON.parse((await h.redis.hget(keys.failed, dependencyKey('record', ['doomed'])))!)).toMatchObject({
        reason: 'doomed for good',
      });
      // Neither outcome took a command of its own; the failed identity is free again, the
      // completed one keeps its record in place of its claim (the dedup window).
      expect(settle).not.toHaveBeenCalled();
      const kept = JSON.parse((await h.redis.hget(keys.live, dependencyKey('record', ['first'])))!);
      expect(kept).toMatchObject({ jobId: parseTask([byName.get('first')])._id });
      expect(await h.redis.hexists(keys.live, dependencyKey('record', ['doomed']))).toBe(0);
    } finally {
      settle.mockRestore();
      reconcile.mockRestore();
    }
  });
});
