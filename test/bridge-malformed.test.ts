import { describe, expect, it } from 'vitest';
import type { TaskProblem } from '../src/errors.ts';
import { useHarness } from './support/harness.ts';
import { bridge, connect, type ClientVersion } from './fixtures/bridge-clients.ts';
import { MALFORMED } from './fixtures/malformed-payloads.ts';

type Failed = { code: string; message: string; problems: TaskProblem[] };

describe('bridge: malformed task:add payloads', () => {
  const h = useHarness({ TASKMASTER_MAX_BATCH: '50', TASKMASTER_MAX_PAYLOAD_BYTES: '40000' });

  it('has a corpus of at least 50', () => {
    expect(MALFORMED.length).toBeGreaterThanOrEqual(50);
  });

  for (const version of ['1.7.4', '4.8.1'] as ClientVersion[]) {
    it(`socket.io-client ${version}: each gets task:add:failed naming the field, nothing is added, the server keeps serving`, async () => {
      const b = await bridge(h);
      const f = await connect(h, version, b.url);
      for (const [i, m] of MALFORMED.entries()) {
        // Half with an acknowledgement, half without (old feeders never passed one).
        if (i % 2) f.emit('task:add', m.payload);
        const answer = i % 2 ? undefined : ((await f.ask('task:add', m.payload)) as Failed & { ok: boolean });
        const [failed] = (await f.next('task:add:failed')) as [Failed];
        const [legacy] = await f.next('task:error');
        expect(failed.code, m.name).toBe('TASK_INVALID');
        expect(failed.problems.length, m.name).toBeGreaterThan(0);
        expect(failed.problems[0]!.field, m.name).toBe(m.field);
        expect(failed.problems[0]!.message, m.name).toBeTruthy();
        expect(failed.message, m.name).toMatch(/^batch refused, nothing was added: /);
        expect(legacy, m.name).toBe(failed.message);
        if (answer) expect(answer, m.name).toEqual({ ok: false, ...failed });
      }
      expect(f.count('task:add:confirm')).toBe(0);
      expect(f.socket.connected).toBe(true);
      expect(await h.client().queue().count()).toBe(0);

      // A good batch still goes through, on this connection and on a new one.
      const good = (await f.ask('task:add', [{ module: 'record', params: ['after'] }])) as { ok: boolean };
      expect(good.ok).toBe(true);
      const other = await connect(h, '2.5.0', b.url);
      const good2 = (await other.ask('task:add', { module: 'record', params: ['other'] })) as { ok: boolean };
      expect(good2.ok).toBe(true);
      expect(await h.client().queue().count()).toBe(2);
    });
  }
});
