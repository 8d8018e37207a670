import { describe, expect, it } from 'vitest';
import type { LegacyTask } from '../src/bridge/legacy-shape.ts';
import { useHarness } from './support/harness.ts';
import { ALL_CLIENTS, OLD_CLIENTS, bridge, connect } from './fixtures/bridge-clients.ts';

const escapeAll = (text: string) =>
  text.replace(/[\u0080-\uffff]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));

describe('bridge: feeders', () => {
  const h = useHarness({ TASKMASTER_MAX_BATCH: '50', TASKMASTER_MAX_PAYLOAD_BYTES: '20000' });

  for (const version of ALL_CLIENTS) {
    it(`socket.io-client ${version}: task:add with a task, an array and a JSON string, confirmed with ids`, async () => {
      const b = await bridge(h);
      const f = await connect(h, version, b.url);
      const c = h.client();

      // 1. one task object
      f.emit('task:add', { module: 'record', params: [{ n: 1 }], priority: 70 });
      const [confirm1] = await f.next('task:add:confirm');
      const [added1] = (await f.next('task:added')) as [LegacyTask[]];
      expect(typeof confirm1).toBe('string');
      expect(JSON.parse(confirm1 as string)).toEqual(added1);
      expect(added1).toHaveLength(1);
      expect(added1[0]).toMatchObject({
        module: 'record',
        params: [{ n: 1 }],
        priority: 70,
        duplicate: false,
        queue: 'tasks',
      });
      const job = await c.queue().getJob(added1[0]!._id);
      expect(job?.name).toBe('record');

      // 2. an array
      f.emit('task:add', [
        { module: 'record', params: [{ n: 2 }] },
        { module: 'record', params: [{ n: 3 }], dependencies: [{ module: 'record', params: [{ n: 2 }] }] },
      ]);
      const [added2] = (await f.next('task:added')) as [LegacyTask[]];
      expect(added2.map((t) => t.params)).toEqual([[{ n: 2 }], [{ n: 3 }]]);
      expect(added2[1]!.dependencies).toEqual([{ module: 'record', params: [{ n: 2 }] }]);
      expect(await c.queue().getJobState(added2[1]!._id)).toBe('waiting-children');

      // 3. a JSON string of an array, with an acknowledgement: same answer
      const answer = (await f.ask('task:add', JSON.stringify([{ module: 'record', params: [{ n: 4 }] }]))) as {
        ok: boolean;
        tasks: LegacyTask[];
      };
      expect(answer.ok).toBe(true);
      const [added3] = (await f.next('task:added')) as [LegacyTask[]];
      expect(answer.tasks).toEqual(added3);
      expect(added3[0]!.params).toEqual([{ n: 4 }]);

      // 4. re-sending a batch (as after a reconnect) creates nothing new
      const again = (await f.ask('task:add', [{ module: 'record', params: [{ n: 2 }] }])) as {
        ok: boolean;
        tasks: LegacyTask[];
      };
      expect(again.tasks[0]).toMatchObject({ _id: added2[0]!._id, duplicate: true });
      expect(await c.queue().count()).toBe(4); // n1..n4 (count includes n3, waiting for n2), no fifth
    });
  }

  for (const version of OLD_CLIENTS) {
    it(`socket.io-client ${version} over long-polling: non-ASCII reaches it intact (escaped by the bridge)`, async () => {
      const b = await bridge(h);
      const f = await connect(h, version, b.url, { transports: ['polling'] });
      expect(f.transport).toBe('polling');
      const params = [{ city: 'Zürich', note: 'naïve café — 東京 😀' }];
      // Client → server: 1.x over polling garbles non-ASCII it sends, so a 1.x feeder escapes it
      // in a JSON string (the README says so); the bridge's answers are escaped for it.
      f.emit('task:add', escapeAll(JSON.stringify({ module: 'record', params })));
      const [confirm] = await f.next('task:add:confirm');
      const [added] = (await f.next('task:added')) as [LegacyTask[]];
      expect(JSON.parse(confirm as string)[0].params).toEqual(params);
      expect(added[0]!.params).toEqual(params);
      expect(f.socket.connected).toBe(true);
      const job = await h.client().queue().getJob(added[0]!._id);
      expect(job?.data).toMatchObject({ $taskmaster: { params } });
    });
  }

  it('answers an oversized batch with task:add:failed instead of a dropped connection, then keeps serving', async () => {
    const b = await bridge(h);
    for (const version of ['1.7.4', '4.8.1'] as const) {
      const f = await connect(h, version, b.url);
      // 40 KB of params against a 20,000-byte limit: over ours, under the transport's.
      const big = [{ module: 'record', params: ['x'.repeat(40_000)] }];
      f.emit('task:add', big);
      const [failed] = (await f.next('task:add:failed')) as [
        { code: string; message: string; problems: { index: number; field: string; message: string }[] },
      ];
      expect(failed.code).toBe('TASK_INVALID');
      expect(failed.problems[0]).toMatchObject({ index: -1, field: '(payload)' });
      expect(failed.problems[0]!.message).toMatch(/larger than 20000 bytes/);
      const [legacyError] = await f.next('task:error');
      expect(legacyError).toMatch(/larger than 20000 bytes/);
      // The same as a JSON string (escaped once more inside the packet).
      const asString = (await f.ask('task:add', JSON.stringify(big))) as { ok: boolean; problems: { field: string }[] };
      expect(asString.ok).toBe(false);
      expect(asString.problems[0]!.field).toBe('(payload)');
      // Too many tasks in one batch.
      const many = (await f.ask(
        'task:add',
        Array.from({ length: 51 }, (_, i) => ({ module: 'record', params: [i] })),
      )) as { ok: boolean; message: string };
      expect(many.ok).toBe(false);
      expect(many.message).toMatch(/has 51 tasks; at most 50/);
      expect(f.socket.connected).toBe(true);
      const ok = (await f.ask('task:add', { module: 'record', params: [version] })) as { ok: boolean };
      expect(ok.ok).toBe(true);
    }
    expect(await h.client().queue().count()).toBe(2);
  });

  it('confirms the batches of one feeder in the order it sent them', async () => {
    const b = await bridge(h);
    const f = await connect(h, '2.5.0', b.url);
    for (let i = 0; i < 20; i++) f.emit('task:add', { module: 'record', params: [i] });
    for (let i = 0; i < 20; i++) {
      const [added] = (await f.next('task:added')) as [LegacyTask[]];
      expect(added[0]!.params).toEqual([i]);
    }
  });
});
