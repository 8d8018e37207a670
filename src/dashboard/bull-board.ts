import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance } from 'fastify';
import type { RouteContext } from '../http/context.ts';
import { GATE_QUEUE } from '../queue/keys.ts';

export const BULL_BOARD_PATH = '/queues';

/**
 * bull-board at `/queues`: job lists per state, job detail, retry, promote, clean, for every
 * task queue the system knows (a queue a consumer starts serving later is added on the next
 * visit); the internal gates queue read-only, since moving a gate by hand would release or
 * strand its dependent. Auth: the main token (see http/auth.ts).
 */
export async function bullBoardRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  const server = new FastifyAdapter();
  server.setBasePath(BULL_BOARD_PATH);
  const shown = new Set<string>();
  const adapter = (name: string) =>
    new BullMQAdapter(ctx.components.queues.get(name), { readOnlyMode: name === GATE_QUEUE });
  const names = await ctx.queues();
  const board = createBullBoard({
    queues: [...names, GATE_QUEUE].map(adapter),
    serverAdapter: server,
    options: { uiConfig: { boardTitle: 'Taskmaster' } },
  });
  for (const name of [...names, GATE_QUEUE]) shown.add(name);
  app.addHook('onRequest', async () => {
    for (const name of await ctx.queues()) {
      if (shown.has(name)) continue;
      shown.add(name);
      board.addQueue(adapter(name));
    }
  });
  await app.register(server.registerPlugin(), { prefix: BULL_BOARD_PATH });
}
