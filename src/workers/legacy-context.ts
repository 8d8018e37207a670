import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { TaskContext } from './run-task.ts';

/** How a run hears that a legacy task finished (Run.settle in run-task.ts). */
export interface LegacySettle {
  settle(err: unknown, value?: unknown, how?: string): void;
}

/**
 * `this` of a legacy task module. Both legacy conventions run on it:
 * - the 2015 slides': `this.done(result)`, `this.error(err)`, `this.add(task)`;
 * - the 2016 runner's (its lib/task.js applied modules to an EventEmitter and listened for these
 *   events): `this.emit('done', result)`, `this.emit('error', err)`, `this.emit('add', task)`.
 * The run hears 'done', 'error' and 'add' before any listener of the task's own, and `done` and
 * `error` are those events, so a task listening for them hears either form. An 'error' nobody
 * else listens for is the run's failure, never Node's ERR_UNHANDLED_ERROR: the run is always its
 * listener, as in 2016. The run does not register listeners, so `removeAllListeners()` cannot
 * cut it off.
 */
export class LegacyContext extends EventEmitter {
  readonly #run: LegacySettle;

  constructor(
    readonly ctx: TaskContext,
    run: LegacySettle,
  ) {
    super();
    this.#run = run;
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    switch (event) {
      case 'done':
        this.#run.settle(undefined, args[0], 'done');
        break;
      case 'error':
        this.#run.settle(args[0] ?? new Error("task emitted 'error' without an error"), undefined, 'error');
        // The run listened; the task's own listeners, if any, hear it too.
        if (this.listenerCount('error') > 0) super.emit(event, ...args);
        return true;
      case 'add':
        void this.add(args[0]);
        break;
      default:
        return super.emit(event, ...args);
    }
    super.emit(event, ...args);
    return true;
  }

  done(result?: unknown): void {
    this.emit('done', result);
  }

  error(err?: unknown): void {
    this.emit('error', err ?? new Error('task called this.error() without an error'));
  }

  /**
   * Queues tasks; resolves to their ids. A legacy task rarely looks at what this returns, so a
   * refused add is logged here: left unhandled, its rejection would end the worker process.
   */
  add(tasks: unknown): Promise<string[]> {
    const added = this.ctx.add(tasks);
    added.catch((err: unknown) => this.ctx.log.warn({ err }, 'task added a task that was refused'));
    return added;
  }

  /** Reports progress; a failed report is logged, as with add. */
  progress(value: number | object): Promise<void> {
    const reported = this.ctx.progress(value);
    reported.catch((err: unknown) => this.ctx.log.warn({ err }, 'task progress could not be reported'));
    return reported;
  }

  get log(): Logger {
    return this.ctx.log;
  }

  get signal(): AbortSignal {
    return this.ctx.signal;
  }
}
