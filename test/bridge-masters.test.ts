import { describe, expect, it } from 'vitest';
import type { LegacyTask } from '../src/bridge/legacy-shape.ts';
import type { PeerInfo } from '../src/bridge/presence.ts';
import { ConsumerRegistry } from '../src/workers/registry.ts';
import { useHarness, waitFor } from './support/harness.ts';
import { autoRunner, bridge, connect, parseTask } from './fixtures/bridge-clients.ts';

type Added = { ok: boolean; tasks: LegacyTask[] };

describe('bridge: two masters on one Redis', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  it("share the work, list each other's clients, and deliver watch events whichever master saw the finish", async () => {
    const a = await bridge(h);
    const b = await bridge(h);
    expect(a.port).not.toBe(b.port);

    const feederA = await connect(h, '1.7.4', a.url, { query: { name: 'feeder-a' } });
    const watcherB = await connect(h, '4.8.1', b.url, { auth: { name: 'watcher-b' } });
    const runnerA = await connect(h, '2.5.0', a.url);
    const runnerB = await connect(h, '1.3.7', b.url);
    const onA = autoRunner(runnerA, { slots: 2, name: 'runner-a', delayMs: 5 });
    const onB = autoRunner(runnerB, { slots: 2, name: 'runner-b', delayMs: 5 });

    const added = (
      (await feederA.ask(
        'task:add',
        Array.from({ length: 40 }, (_, i) => ({ module: 'record', params: [i] })),
      )) as Added
    ).tasks;
    const watch = (await watcherB.ask('task:watch', added)) as {
      ok: boolean;
      watching: string[];
      finished: string[];
      unknown: string[];
    };
    expect(watch.ok).toBe(true);
    expect(watch.watching.length + watch.finished.length).toBe(40);

    await waitFor(
      () => watcherB.count('task:completed') === 40,
      'a completion for each watched task on master B',
      20_000,
    );
    const completed = watcherB
      .all('task:completed')
      .map(([p]) => p as LegacyTask & { result: { ranBy: string; params: unknown[] } });
    expect(new Set(completed.map((c) => c._id))).toEqual(new Set(added.map((t) => t._id)));
    for (const c of completed) expect(c.result.params).toEqual(c.params);
    // Both masters' runners did some of the work, none of it twice.
    expect(onA.ran.length).toBeGreaterThan(0);
    expect(onB.ran.length).toBeGreaterThan(0);
    expect(new Set([...onA.ran, ...onB.ran]).size).toBe(40);
    expect(onA.ran.length + onB.ran.length).toBe(40);
    const ranBy = new Set(completed.map((c) => c.result.ranBy));
    expect(ranBy).toEqual(new Set(['runner-a', 'runner-b']));

    // Any master sees every client in the registry, with the master it is connected to.
    const registry = new ConsumerRegistry(h.redis, h.prefix);
    let live: PeerInfo[] = [];
    await waitFor(async () => {
      live = (await registry.live()) as PeerInfo[];
      return (
        live.length === 4 && live.filter((c) => c.kind === 'runner' && c.idle === 2 && !c.running?.length).length === 2
      );
    }, 'four clients in the registry, the runners idle');
    const byName = Object.fromEntries(live.map((c) => [c.name, c]));
    expect(byName['feeder-a']).toMatchObject({ kind: 'feeder', bridge: a.id, added: 40, protocol: 3 });
    expect(byName['watcher-b']).toMatchObject({ kind: 'feeder', bridge: b.id, protocol: 4 });
    expect(byName['runner-a']).toMatchObject({ kind: 'runner', bridge: a.id, idle: 2 });
    expect(byName['runner-b']).toMatchObject({ kind: 'runner', bridge: b.id, idle: 2 });
  });

  it('task:watch: a failure, an already finished task and an unknown id', async () => {
    const a = await bridge(h);
    const b = await bridge(h);
    const feeder = await connect(h, '2.5.0', a.url);
    const runner = await connect(h, '4.8.1', b.url);
    const [ok, bad] = (
      (await feeder.ask('task:add', [
        { module: 'record', params: ['ok'] },
        { module: 'record', params: ['bad'] },
      ])) as Added
    ).tasks;

    // Finished before anyone watches: answered at once from the job's state.
    runner.emit('task:request');
    const [first] = await runner.next('task:send');
    runner.emit('task:done', first, { fine: true });
    await waitFor(async () => (await h.client().queue().getJobState(ok!._id)) === 'completed', 'completion');
    const watcher = await connect(h, '1.3.7', b.url);
    const answer = (await watcher.ask('task:watch', JSON.stringify([ok!._id, bad!._id, 'tNoSuchTask12345']))) as {
      finished: string[];
      watching: string[];
      unknown: string[];
    };
    expect(answer).toMatchObject({ finished: [ok!._id], watching: [bad!._id], unknown: ['tNoSuchTask12345'] });
    const [done] = (await watcher.next('task:completed')) as [LegacyTask & { result: unknown }];
    expect(done).toMatchObject({ _id: ok!._id, module: 'record', params: ['ok'], result: { fine: true } });
    const [unknown] = (await watcher.next('task:failed')) as [{ _id: string; code: string; error: string }];
    expect(unknown).toMatchObject({ _id: 'tNoSuchTask12345', code: 'NOT_FOUND' });

    // Fails for good on master B's runner; the watcher (also on B) and one on A both hear it.
    const watcherA = await connect(h, '4.8.1', a.url);
    expect(((await watcherA.ask('task:watch', bad!._id)) as { watching: string[] }).watching).toEqual([bad!._id]);
    runner.emit('task:request');
    const [second] = await runner.next('task:send');
    expect(parseTask([second])._id).toBe(bad!._id);
    runner.emit('task:error', 'it went wrong: ünïcödé', second);
    const [failed] = (await watcher.next('task:failed')) as [LegacyTask & { error: string }];
    expect(failed).toMatchObject({ _id: bad!._id, params: ['bad'], error: 'it went wrong: ünïcödé' });
    const [failedA] = (await watcherA.next('task:failed')) as [LegacyTask & { error: string }];
    expect(failedA).toMatchObject({ _id: bad!._id, error: 'it went wrong: ünïcödé' });

    // Malformed watch requests are answered, not dropped.
    const badWatch = (await watcher.ask('task:watch', [{ queue: 'a:b', _id: 'x' }])) as {
      ok: boolean;
      message: string;
    };
    expect(badWatch.ok).toBe(false);
    expect(badWatch.message).toMatch(/queue must be a queue name/);
    expect((await watcher.next('task:watch:failed'))[0]).toEqual({ message: badWatch.message });
  });

  it("reads a queue's events only while one of its tasks is watched", async () => {
    const m = await bridge(h, { watchReaderIdleMs: 300 });
    const feeder = await connect(h, '4.8.1', m.url);
    const runner = await connect(h, '4.8.1', m.url);
    autoRunner(runner, { slots: 1, name: 'runner', delayMs: 5 });
    const added = ((await feeder.ask('task:add', [{ module: 'record', params: ['unwatched'] }])) as Added).tasks;
    await waitFor(
      async () => (await h.client().queue().getJobState(added[0]!._id)) === 'completed',
      'the unwatched task to complete',
    );
    expect(m.readingEvents()).toEqual([]);

    for (const round of [1, 2]) {
      const [task] = (
        (await feeder.ask('task:add', [{ module: 'record', params: ['watched', round], timeout: 60_000 }])) as Added
      ).tasks;
      await feeder.ask('task:watch', task!._id);
      expect(m.readingEvents()).toEqual([h.config.queue]);
      const [done] = (await feeder.next('task:completed')) as [LegacyTask];
      expect(done._id).toBe(task!._id);
      // Nothing watched any more: the reader closes after its idle time, and opens again on the next watch.
      await waitFor(() => m.readingEvents().length === 0, 'the reader to close');
    }
  });
});
