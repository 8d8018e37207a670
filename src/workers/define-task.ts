import type { TaskContext } from './run-task.ts';

/**
 * Types a modern task module: `export default defineTask(async (params: {ticker: string}, ctx) => …)`.
 * It returns the function unchanged; it only gives `ctx` its type.
 */
export function defineTask<P, R>(
  fn: (params: P, ctx: TaskContext) => R | Promise<R>,
): (params: P, ctx: TaskContext) => R | Promise<R> {
  return fn;
}
