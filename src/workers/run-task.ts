import type { Logger } from 'pino';
import { TaskmasterError, TaskTimeoutError } from '../errors.ts';
import { LegacyContext } from './legacy-context.ts';
import type { TaskFunction } from './module-loader.ts';

/** What a modern task receives as its last argument (and a legacy one as `this`). */
export interface TaskContext {
  /** Aborted when the run times out or is cancelled; stop work when it fires. */
  signal: AbortSignal;
  log: Logger;
  jobId: string;
  module: string;
  /** 1 for the first run, 2 for the first retry, … */
  attempt: number;
  /** Reports progress (a number 0-100 or an object), visible on the status page. */
  progress(value: number | object): Promise<void>;
  /** Adds tasks (one, or an array) as a feeder would; resolves to their ids. */
  add(tasks: unknown): Promise<string[]>;
}

/** The result is not JSON: it could not be stored, so the run fails (and is not retried). */
export class ResultNotSerialisableError extends TaskmasterError {
  override readonly code = 'RESULT_NOT_SERIALISABLE';
}

/**
 * Aborts one run. Its AbortController (and so `ctx.signal`) is made only when the task asks
 * for the signal: most runs never do, and a controller and its listener cost on every run.
 */
export class RunAbort {
  aborted = false;
  reason: unknown;
  /**
   * Told first, before the signal's own listeners (runTask settles the run here). Private, so
   * that a task serialising its context does not walk into the run.
   */
  #onAbort?: { aborted(reason: unknown): void };
  private controller?: AbortController;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  /** Sets who is told first when the run is aborted. */
  tell(run: { aborted(reason: unknown): void }): void {
    this.#onAbort = run;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.#onAbort?.aborted(reason);
    this.controller?.abort(reason);
  }
}

/**
 * Runs one task function and settles on the first of: `this.done()` / `this.error()` (or
 * `this.emit('done' | 'error')`, see LegacyContext), the returned promise, a synchronous
 * throw, or the timeout. Outcomes, defined:
 * - `done` (or `error`) called again after settling: ignored, with a warning;
 * - a function that returns a promise: its value is the result, unless `done`/`error` came
 *   first; a rejection fails the run;
 * - a plain function that returns a value other than undefined: that value is the result;
 *   one that returns undefined runs until it calls `done`/`error` or times out;
 * - a result that is not JSON-serialisable fails the run without retry.
 * Resolves to the result (JSON, never a promise), or rejects with the run's error.
 */
export function runTask(
  fn: TaskFunction,
  params: unknown[],
  ctx: TaskContext,
  timeoutMs: number,
  abort: RunAbort,
  linger?: { ms: number; onLinger(ctx: TaskContext): void },
): Promise<unknown> {
  const run = new Run(ctx, abort, linger);
  run.start(fn, params, timeoutMs);
  return run.done;
}

/** Timeouts up to this long get a timer of their own; longer ones are swept (see Sweep). */
const OWN_TIMER_MAX_MS = 5_000;
/** How often the sweep looks for runs past their timeout: the most a long timeout fires late. */
const SWEEP_MS = 100;

/**
 * Runs with a long timeout (the default is five minutes), checked together every SWEEP_MS
 * instead of each setting and clearing a timer of its own: most runs end long before their
 * timeout. The runs form a list through their own `prev`/`next` fields, so joining and leaving
 * it allocates nothing. The interval stops once a check finds no runs.
 */
class Sweep {
  private head?: Run;
  private timer?: NodeJS.Timeout;

  add(run: Run): void {
    run.next = this.head;
    if (this.head) this.head.prev = run;
    this.head = run;
    this.timer ??= setInterval(() => this.check(), SWEEP_MS);
  }

  delete(run: Run): void {
    if (run.prev) run.prev.next = run.next;
    else if (this.head === run) this.head = run.next;
    if (run.next) run.next.prev = run.prev;
    run.prev = run.next = undefined;
  }

  private check(): void {
    if (!this.head) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const now = Date.now();
    for (let run: Run | undefined = this.head; run;) {
      const next: Run | undefined = run.next;
      if (now >= run.deadline) {
        this.delete(run);
        run.timedOut();
      }
      run = next;
    }
  }
}

const sweep = new Sweep();

/**
 * One run's state. A class rather than closures: a run is made for every job, and its methods
 * are made once.
 */
class Run {
  settled = false;
  private stoppedByAbort = false;
  private reacted = false;
  private timer?: NodeJS.Timeout;
  /** When a swept run times out (Date.now() ms); 0 for a run with a timer of its own. */
  deadline = 0;
  /** Its neighbours in the sweep's list. */
  prev?: Run = undefined;
  next?: Run = undefined;
  private timeoutMs = 0;
  /** Settles with the run: its result, or its error. */
  readonly done: Promise<unknown>;
  private resolve!: (value: unknown) => void;
  private reject!: (err: unknown) => void;

  constructor(
    private readonly ctx: TaskContext,
    private readonly abort: RunAbort,
    private readonly linger?: { ms: number; onLinger(ctx: TaskContext): void },
  ) {
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  start(fn: TaskFunction, params: unknown[], timeoutMs: number): void {
    const { abort, ctx } = this;
    // Aborted (cancelled) before it began, e.g. while its module was loading: do not start it.
    if (abort.aborted) return this.settle(abort.reason ?? new Error('aborted'), undefined, 'not-started');
    this.timeoutMs = timeoutMs;
    if (timeoutMs <= OWN_TIMER_MAX_MS) this.timer = setTimeout(() => this.timedOut(), timeoutMs);
    else {
      this.deadline = Date.now() + timeoutMs;
      sweep.add(this);
    }
    abort.tell(this);
    let returned: unknown;
    try {
      // ctx comes after the declared parameters, so `async (params, ctx)` gets it second even
      // when the task has no params; legacy functions get their params exactly as before.
      const n = Math.max(params.length, fn.length - 1);
      const args: unknown[] = new Array(n + 1);
      for (let i = 0; i < n; i++) args[i] = params[i];
      args[n] = ctx;
      returned = fn.apply(new LegacyContext(ctx, this), args);
    } catch (err) {
      return this.settle(err ?? new Error('task threw a falsy value'), undefined, 'throw');
    }
    if (returned && typeof (returned as PromiseLike<unknown>).then === 'function') {
      (returned as PromiseLike<unknown>).then(
        (v) => this.settle(undefined, v, 'resolve'),
        (e) => this.settle(e ?? new Error('task rejected with a falsy value'), undefined, 'reject'),
      );
    } else if (returned !== undefined) {
      this.settle(undefined, returned, 'return');
    }
  }

  aborted(reason: unknown): void {
    this.settle(reason ?? new Error('aborted'), undefined, 'abort');
  }

  timedOut(): void {
    this.abort.abort(new TaskTimeoutError(`task ${this.ctx.module} exceeded its timeout of ${this.timeoutMs} ms`));
  }

  settle(err: unknown, value?: unknown, how = 'return'): void {
    if (this.settled) {
      // After an abort, a done/error call or the promise settling shows the task stopped.
      if (this.stoppedByAbort) this.reacted = true;
      else if (how === 'done' || how === 'error') {
        const what = `this.${how}() after it had already finished (or emitted '${how}')`;
        this.ctx.log.warn({ how }, `task called ${what}; ignored`);
      }
      return;
    }
    this.settled = true;
    if (how === 'abort') {
      this.stoppedByAbort = true;
      // A task that neither calls done/error nor settles its promise within the grace is
      // presumed still running: the owner recycles its process.
      const linger = this.linger;
      if (linger) setTimeout(() => !this.reacted && linger.onLinger(this.ctx), linger.ms).unref();
    }
    if (this.deadline) sweep.delete(this);
    else clearTimeout(this.timer);
    let failed = err !== undefined;
    let result: unknown;
    if (failed) result = toError(err);
    else {
      try {
        result = serialisable(value);
      } catch (e) {
        failed = true;
        result = e;
      }
    }
    if (failed) this.reject(result);
    else this.resolve(result);
  }
}

function toError(err: unknown): Error {
  if (err instanceof Error) return err;
  if (typeof err === 'string') return new Error(err);
  try {
    return new Error(JSON.stringify(err));
  } catch {
    return new Error(String(err));
  }
}

/** Round-trips the result through JSON so that what is stored is what a reader will get. */
function serialisable(value: unknown): unknown {
  if (value === undefined || value === null) return null;
  // Strings, booleans and finite numbers are stored as they are.
  if (typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value)))
    return value;
  try {
    const text = JSON.stringify(value);
    return text === undefined ? null : JSON.parse(text);
  } catch (err) {
    throw new ResultNotSerialisableError(`task result is not JSON-serialisable: ${(err as Error).message}`, {
      cause: err,
    });
  }
}
