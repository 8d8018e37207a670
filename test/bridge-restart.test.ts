import { describe, expect, it } from 'vitest';
import type { LegacyTask } from '../src/bridge/legacy-shape.ts';
import { useHarness, waitFor } from './support/harness.ts';
import { autoRunner, bridge, connect, type ClientVersion } from './fixtures/bridge-clients.ts';

/**
 * A feeder written the way a careful 2016 feeder was: it keeps every batch until it is
 * confirmed and, since it cannot know whether a batch sent just before a disconnect got
 * through, sends every batch again on each reconnect.
 */
function resendingFeeder(client: Awaited<ReturnType<typeof connect>>) {
  const batches: { tasks: unknown[]; confirmed?: LegacyTask[] }[] = [];
  const confirms: LegacyTask[][] = [];
  client.socket.on('task:added', (tasks: unknown) => {
    confirms.push(tasks as LegacyTask[]);
    const key = JSON.stringify((tasks as LegacyTask[]).map((t) => t.params));
    const b = batches.find((x) => JSON.stringify(x.tasks.map((t) => (t as { params: unknown }).params)) === key);
    if (b) b.confirmed = tasks as LegacyTask[];
  });
  // Set up once connected, so every 'connect' from here on is a reconnect.
  client.socket.on('connect', () => {
    for (const b of batches) client.emit('task:add', b.tasks);
  });
  return {
    batches,
    confirms,
    add(tasks: unknown[]) {
      batches.push({ tasks });
      client.emit('task:add', tasks);
    },
  };
}

const batch = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ module: 'record', params: [from + i] }));

describe('bridge: master restart', () => {
  const h = useHarness();

  for (const version of ['1.7.4', '2.5.0', '4.8.1'] as ClientVersion[]) {
    it(`socket.io-client ${version}: feeders reconnect and re-send; nothing is lost or duplicated`, async () => {
      const first = await bridge(h);
      const port = first.port;
      const feeder = await connect(h, version, first.url, { reconnection: true });
      const f = resendingFeeder(feeder);
      f.add(batch(0, 10));
      await waitFor(() => f.confirms.length === 1, 'the first batch to be confirmed');

      await first.close();
      await waitFor(() => !feeder.socket.connected, 'the feeder to notice');
      // Sent while the master is down: the client buffers it and sends it on reconnect.
      f.add(batch(10, 10));
      const second = await bridge(h, { config: { ...h.config, port, host: '127.0.0.1' } });
      expect(second.port).toBe(port);
      // After the reconnect: the buffered second batch, then both batches sent again.
      await waitFor(() => f.confirms.length === 4, 'four confirmations in all', 20_000);
      expect(f.batches.every((b) => b.confirmed)).toBe(true);

      // Every task exists once; a re-sent task is confirmed with the id it first got.
      const ids = new Map<number, Set<string>>();
      for (const t of f.confirms.flat()) {
        const n = t.params[0] as number;
        if (!ids.has(n)) ids.set(n, new Set());
        ids.get(n)!.add(t._id);
      }
      expect([...ids.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i));
      for (const set of ids.values()) expect(set.size).toBe(1);
      expect(f.confirms.flat().some((t) => t.duplicate)).toBe(true);
      expect(await h.client().queue().count()).toBe(20);

      // And each runs exactly once.
      const runner = await connect(h, '1.3.7', second.url);
      const { ran } = autoRunner(runner, { slots: 4 });
      await waitFor(async () => (await h.client().queue().getCompletedCount()) === 20, 'all 20 to complete');
      expect(ran).toHaveLength(20);
      expect(new Set(ran).size).toBe(20);
    });
  }

  it('refuses to start on a port in use, with the error and nothing left open', async () => {
    const first = await bridge(h);
    const err = await bridge(h, { config: { ...h.config, port: first.port, host: '127.0.0.1' } }).catch(
      (e: NodeJS.ErrnoException) => e,
    );
    expect((err as NodeJS.ErrnoException).code).toBe('EADDRINUSE');
    const feeder = await connect(h, '4.8.1', first.url);
    expect(((await feeder.ask('task:add', { module: 'record', params: [1] })) as { ok: boolean }).ok).toBe(true);
  });

  it('a runner holding a task when its master stops gets it back after reconnecting, run once', async () => {
    const first = await bridge(h);
    const port = first.port;
    const feeder = await connect(h, '4.8.1', first.url);
    const [added] = ((await feeder.ask('task:add', { module: 'record', params: ['held'] })) as { tasks: LegacyTask[] })
      .tasks;
    const runner = await connect(h, '1.7.4', first.url, { reconnection: true });
    runner.emit('task:request', 'survivor');
    const [json] = await runner.next('task:send');
    expect(JSON.parse(json as string)._id).toBe(added!._id);
    // Closing gives the held job back to the queue at once (no lock to wait out).
    await first.close();
    expect(await h.client().queue().getJobState(added!._id)).toMatch(/waiting|prioritized/);
    const second = await bridge(h, { config: { ...h.config, port, host: '127.0.0.1' } });
    await runner.next('connect', 20_000, 1);
    // The 2015 runner asks again on every connect.
    runner.emit('task:request', 'survivor');
    const [again] = await runner.next('task:send');
    expect(JSON.parse(again as string)).toMatchObject({ _id: added!._id, attempt: 1 });
    // The report about the first hand-out is stale now: ignored.
    expect(((await runner.ask('task:done', json, 'old')) as { ok: boolean }).ok).toBe(false);
    runner.emit('task:done', again, 'new');
    await waitFor(async () => (await h.client().queue().getJobState(added!._id)) === 'completed', 'completion');
    expect((await h.client().queue().getJob(added!._id))!.returnvalue).toBe('new');
    expect(second.peers().length).toBe(1);
  });
});
