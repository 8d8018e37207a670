import { lua, cancelScript } from '../queue/scripts.ts';

export { cancelScript };

/** The sweep of cancel requests whose runs are over (sweep-cancels.lua). */
export function sweepCancelsScript(): string {
  return lua('sweep-cancels');
}
