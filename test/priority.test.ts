import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { toBullPriority } from '../src/tasks/priority.ts';
import { useHarness, waitFor } from './support/harness.ts';

describe('priority', () => {
  const h = useHarness();

  it('runs higher priorities first and equal priorities FIFO, legacy and native producers mixed', async () => {
    const client = h.client();
    const native = new Queue(h.config.queue, { connection: h.connection('native'), prefix: h.prefix });
    h.defer(() => native.close());
    // All added before any worker runs, interleaving the two kinds of producer.
    await client.add({ module: 'record', params: [{ n: 'L50-a' }] });
    await native.add('record', { n: 'N50-b' }, { priority: toBullPriority(50) });
    await client.add({ module: 'record', params: [{ n: 'L90-a' }], priority: 90 });
    await client.add({ module: 'record', params: [{ n: 'L10-a' }], priority: 10 });
    await native.add('record', { n: 'N90-b' }, { priority: toBullPriority(90) });
    await client.add({ module: 'record', params: [{ n: 'L50-c' }] });
    await client.add({ module: 'record', params: [{ n: 'L90-c' }], priority: 90 });

    const seen: string[] = [];
    const w = h.worker({ concurrency: 1 });
    w.worker.on('completed', (_job, result) => seen.push(result.params.n));
    await waitFor(() => seen.length === 7, '7 completions');
    expect(seen).toEqual(['L90-a', 'N90-b', 'L90-c', 'L50-a', 'N50-b', 'L50-c', 'L10-a']);
  });
});
