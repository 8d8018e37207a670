/**
 * A legacy feeder over the Socket.IO bridge: 20,000 tasks in batches of 1,000, each batch
 * `task:add`ed by a socket.io-client 1.7.4 feeder (the 2016 client) that waits for
 * `task:add:confirm` before sending the next, against Queue.addBulk of the same jobs. The
 * feeder runs in this process, so its own encoding and decoding count against ours.
 */
import type { BenchCase, Scope } from '../run.ts';
import { rawAddBulk } from './add-tasks.ts';
import { fmt, noopBatches, rate, benchBridge, legacyIo } from './common.ts';

const TOTAL = 20_000;
const BATCH = 1_000;

const inputs = () => noopBatches(TOTAL, BATCH);

async function ours(scope: Scope) {
  const { url } = await benchBridge(scope);
  const socket = legacyIo(url, { forceNew: true, reconnection: false });
  scope.defer(() => socket.close());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', (err) => reject(err as Error));
  });
  const batches = inputs();
  const start = performance.now();
  for (const batch of batches) {
    await new Promise<void>((resolve, reject) => {
      socket.once('task:add:confirm', () => resolve());
      socket.once('task:add:failed', (why) => reject(new Error(`batch refused: ${JSON.stringify(why)}`)));
      socket.emit('task:add', batch);
    });
  }
  return { ms: performance.now() - start };
}

export const legacyFeeder: BenchCase = {
  name: 'legacy feeder',
  async run(ctx) {
    const m = await ctx.compare('legacy feeder', { ours, raw: (scope) => rawAddBulk(scope, inputs()) });
    return [
      {
        name: `legacy task:add (socket.io-client 1.7.4) ${fmt(TOTAL)} tasks, batches of ${fmt(BATCH)} until confirmed`,
        ours: rate(TOTAL, m.ours.ms),
        raw: rate(TOTAL, m.raw.ms),
        ratio: m.ratio.ms,
        goal: 0.7,
      },
    ];
  },
};
