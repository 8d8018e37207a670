import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { RedisUnavailableError } from '../errors.ts';

const HOST = '127.0.0.1';
const DEFAULT_PORT = 6379;

/** A redis-server this process started; `stop()` shuts it down (it flushes its append-only file). */
export interface LocalRedis {
  url: string;
  port: number;
  /** Folder holding its append-only file. */
  dir: string;
  pid: number;
  stop(): Promise<void>;
}

export interface LocalRedisOptions {
  log: Logger;
  /**
   * Whether a Redis server answers PING on 127.0.0.1:port.
   * @defaultValue a real TCP probe (1 s timeout)
   */
  redisAnswers?: (port: number) => Promise<boolean>;
  /**
   * Whether 127.0.0.1:port can be bound.
   * @defaultValue tries to listen on it
   */
  portFree?: (port: number) => Promise<boolean>;
  /** @defaultValue looks for `redis-server` on PATH */
  hasRedisServer?: () => boolean;
  /** The server binary. @defaultValue redis-server */
  binary?: string;
}

export const HOW_TO_GET_REDIS =
  'set REDIS_URL=redis://host:port, install Redis so it can be started for you (apt-get install redis-server), or run `docker compose up -d redis`';

/**
 * For `taskmaster start` on a machine without configured Redis: when REDIS_URL is not set and
 * nothing answers on 127.0.0.1:6379, starts a private redis-server (6379 if free, otherwise a free
 * port) with its data under `<dataDir>/redis` and the append-only file on. Returns undefined when
 * the configured URL should be used as it is.
 */
export async function ensureLocalRedis(
  config: Pick<Config, 'redisUrl' | 'redisUrlExplicit' | 'dataDir'>,
  opts: LocalRedisOptions,
): Promise<LocalRedis | undefined> {
  if (config.redisUrlExplicit) return undefined;
  const answers = opts.redisAnswers ?? pingRedis;
  if (await answers(DEFAULT_PORT)) return undefined;
  if (!(opts.hasRedisServer ?? hasRedisServer)()) {
    throw new RedisUnavailableError(
      `nothing answers on ${HOST}:${DEFAULT_PORT} and redis-server is not on PATH: ${HOW_TO_GET_REDIS}`,
    );
  }
  const port = (await (opts.portFree ?? portFree)(DEFAULT_PORT)) ? DEFAULT_PORT : await freePort();
  const dir = join(config.dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const binary = opts.binary ?? 'redis-server';
  // Detached: a Ctrl+C on the terminal reaches this process, which closes its workers first and
  // stops Redis last, instead of Redis dying under the workers still using it.
  const proc = spawn(
    binary,
    ['--port', String(port), '--bind', HOST, '--dir', dir, '--appendonly', 'yes', '--daemonize', 'no'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    },
  );
  await waitReady(proc, port);
  const url = `redis://${HOST}:${port}`;
  const hint = port === DEFAULT_PORT ? 'set REDIS_URL to use another Redis' : `other commands need REDIS_URL=${url}`;
  opts.log.info(
    { port, dataDir: dir, pid: proc.pid },
    `started a private redis-server on ${url}, data in ${dir} (${hint})`,
  );
  return { url, port, dir, pid: proc.pid!, stop: () => stopProcess(proc) };
}

function waitReady(proc: ChildProcess, port: number): Promise<void> {
  let output = '';
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      proc.stdout!.off('data', onData);
      proc.off('exit', onExit);
      proc.off('error', onError);
      // Keep draining its output so the server never blocks on a full pipe.
      proc.stdout!.resume();
      proc.stderr!.resume();
      if (err) reject(err);
      else resolve();
    };
    const onData = (d: Buffer) => {
      output += d;
      if (output.includes('Ready to accept connections')) done();
    };
    const onExit = (code: number | null) =>
      done(
        new RedisUnavailableError(
          `redis-server on port ${port} exited (code ${code}) before it was ready: ${lastLine(output)}`,
        ),
      );
    const onError = (err: Error) =>
      done(new RedisUnavailableError(`cannot start redis-server: ${err.message}; ${HOW_TO_GET_REDIS}`, { cause: err }));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      done(new RedisUnavailableError(`redis-server on port ${port} was not ready within 10 s: ${lastLine(output)}`));
    }, 10_000);
    proc.stdout!.on('data', onData);
    proc.once('exit', onExit);
    proc.once('error', onError);
  });
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop() ?? '(no output)';
}

function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGTERM');
  });
}

export function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Whether something on 127.0.0.1:port answers PING like Redis does (a NOAUTH answer counts). */
export function pingRedis(port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
    let reply = '';
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('error', () => finish(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      reply += d;
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH'));
    });
  });
}

export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
