import type { Logger } from 'pino';

/** Codes of a Redis that cannot be reached, as opposed to one that refused a command. */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
]);

/**
 * Whether `err` says Redis could not be reached (or the connection was closed under a command),
 * rather than that Redis answered with an error. ioredis and BullMQ report both kinds through
 * the same 'error' events.
 */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  if (code && UNREACHABLE_CODES.has(code)) return true;
  return (
    err.name === 'MaxRetriesPerRequestError' ||
    err.name === 'ConnectionClosedError' ||
    /Connection is closed|Stream isn't writeable|connect ECONNREFUSED|read ECONNRESET/.test(err.message)
  );
}

export interface OutageLogOptions {
  /** How often an outage that goes on is logged again. @defaultValue 30000 */
  repeatMs?: number;
}

/**
 * What a process says about Redis being away: one warning when the first connection fails, one
 * every `repeatMs` while none has come back, and one line when Redis answers again — however many
 * connections the process holds and however often each retries. Every connection made by
 * createRedis (and every duplicate of one) reports here; see processOutageLog.
 */
export class OutageLog {
  private log?: Logger;
  /** Connections whose last word was a failure. */
  private readonly failing = new Set<object>();
  private since?: number;
  private reason?: { message: string; code?: string };
  private timer?: NodeJS.Timeout;
  private readonly watchers = new Set<() => void>();

  constructor(private readonly opts: OutageLogOptions = {}) {}

  /** Where the lines go; until this is called (one-shot CLI commands, tests) nothing is logged. */
  logTo(log: Logger): this {
    this.log = log.child({ component: 'redis' });
    return this;
  }

  /** Whether Redis is away now (a connection failed and none has been ready since). */
  get unreachable(): boolean {
    return this.since !== undefined;
  }

  /** How long Redis has been away, or 0. */
  get downForMs(): number {
    return this.since === undefined ? 0 : Date.now() - this.since;
  }

  /**
   * Calls `fn` once Redis is away (at once if it is now); returns what stops watching. Used by a
   * stop, which then stops waiting for Redis.
   */
  whenUnreachable(fn: () => void): () => void {
    if (this.unreachable) {
      fn();
      return () => {};
    }
    const once = () => {
      this.watchers.delete(once);
      fn();
    };
    this.watchers.add(once);
    return () => this.watchers.delete(once);
  }

  /** A connection failed (its 'error' event). */
  failed(connection: object, err: Error): void {
    this.failing.add(connection);
    this.reason = { message: err.message, code: (err as NodeJS.ErrnoException).code };
    if (this.since !== undefined) return;
    this.since = Date.now();
    const { message, code } = this.reason;
    this.log?.warn({ reason: message, code }, 'Redis is unreachable; retrying until it is back');
    this.timer = setInterval(() => {
      this.log?.warn(
        { reason: this.reason?.message, code: this.reason?.code, downForMs: this.downForMs },
        'Redis is still unreachable; retrying',
      );
    }, this.opts.repeatMs ?? 30_000).unref();
    for (const fn of [...this.watchers]) fn();
  }

  /** A connection is ready: when none is still failing, Redis is back. */
  ready(connection: object): void {
    this.failing.delete(connection);
    if (this.since === undefined || this.failing.size) return;
    this.log?.info({ downForMs: this.downForMs }, 'Redis is reachable again');
    this.since = undefined;
    this.reason = undefined;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A connection was closed for good: it no longer counts, but its end says nothing of Redis. */
  ended(connection: object): void {
    this.failing.delete(connection);
  }

  /**
   * An 'error' listener for a BullMQ object (Worker, Queue, QueueEvents): a connection error is
   * already part of the outage its connection reported, so only other errors are logged.
   */
  static listener(log: Logger, msg: string): (err: Error) => void {
    return (err) => {
      if (isConnectionError(err)) log.debug({ reason: err.message }, `${msg} (Redis unreachable)`);
      else log.error({ err }, msg);
    };
  }
}

let processLog: OutageLog | undefined;

/**
 * The process's one OutageLog: an outage is one story per process, not one per connection or
 * per component. Made on first use, so importing this module does nothing.
 */
export function processOutageLog(): OutageLog {
  return (processLog ??= new OutageLog());
}
