import { describe, expect, it } from 'vitest';
import type { LegacyTask } from '../src/bridge/legacy-shape.ts';
import { bridge, connect } from './fixtures/bridge-clients.ts';
import { useHarness } from './support/harness.ts';

describe('duplicate answers', () => {
  const h = useHarness();

  it('show the stored task as it was added, not the second add', async () => {
    const c = h.client();
    const [first] = await c.add({ module: 'record', params: [1], created: 1000, priority: 70, timeout: 5000 });
    const [again] = await c.add({ module: 'record', params: [1], created: 2000, priority: 70, timeout: 9000 });
    expect(again).toMatchObject({ id: first!.id, duplicate: true });
    expect(again!.task).toMatchObject({ created: 1000, timeout: 5000, priority: 70 });
    // Inside one batch, a repeat shows the first of the batch.
    const batch = await c.add([
      { module: 'record', params: [2], created: 3000 },
      { module: 'record', params: [2], created: 4000 },
    ]);
    expect(batch[1]).toMatchObject({ id: batch[0]!.id, duplicate: true, task: { created: 3000 } });
  });

  it('reach a legacy feeder with the stored task’s created', async () => {
    const b = await bridge(h);
    const f = await connect(h, '1.7.4', b.url);
    const ask = async (created: number) =>
      ((await f.ask('task:add', [{ module: 'record', params: ['x'], created }])) as { tasks: LegacyTask[] }).tasks[0]!;
    const first = await ask(1_500_000_000);
    const again = await ask(1_600_000_000);
    expect(again).toMatchObject({ _id: first._id, duplicate: true, created: 1_500_000_000 });
  });
});
