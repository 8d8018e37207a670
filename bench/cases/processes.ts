/**
 * Processes the start-up and cold-worker cases launch: the `taskmaster` command as a user runs it
 * (bin/taskmaster.js, which runs the compiled dist/ when it is current) and the raw BullMQ
 * scripts in bench/raw (plain JavaScript, as a BullMQ service starts).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { build, compiledEntry } from '../../bin/build.js';
import type { Scope } from '../run.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = fileURLToPath(new URL('../../bin/taskmaster.js', import.meta.url));
export const RAW_WORKER = fileURLToPath(new URL('../raw/worker.js', import.meta.url));
export const RAW_ONE_SHOT = fileURLToPath(new URL('../raw/one-shot.js', import.meta.url));
const BENCH_TASKS = fileURLToPath(new URL('../tasks', import.meta.url));
const STOP_LIMIT_MS = 30_000;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Builds dist/ when it is not as new as src/, so that the rows time the compiled command a user
 * runs after `npm install`; says so on stderr.
 */
export function ensureCompiled(): void {
  if (compiledEntry()) return;
  process.stderr.write('  dist/ is older than src/: compiling it first (bin/build.js)\n');
  if (build() !== 0) throw new Error('compiling src/ into dist/ failed');
}

/** A note for a row whose command may have run through tsx: src/ changed during the case. */
export const staleNote = () => (compiledEntry() ? '' : ' [src/ changed during the run: some runs went through tsx]');

/** The environment of a `taskmaster` command on the scope's Redis and prefix, tasks from bench/tasks. */
export function cliEnv(scope: Scope, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    REDIS_URL: scope.config.redisUrl,
    TASKMASTER_PREFIX: scope.prefix,
    TASKMASTER_QUEUE: scope.config.queue,
    TASKMASTER_TASKS_DIR: BENCH_TASKS,
    LOG_LEVEL: 'silent',
    ...extra,
  };
}

/** The CPU (user + system, ms) of the children in the output of sh's `times` (its second line). */
function childrenCpuMs(times: string): number {
  const [user, system] = (times.trim().split('\n')[1] ?? '').split(/\s+/).map((t) => {
    const m = /^(\d+)m([\d.]+)s$/.exec(t);
    return m ? (Number(m[1]) * 60 + Number(m[2])) * 1000 : NaN;
  });
  return user! + system!;
}

/**
 * Runs `node <args>` to its exit; resolves with the wall time from spawn to exit and the CPU the
 * process spent (which, unlike the wall time, a busy machine does not stretch), rejects on a
 * non-zero exit. It runs under sh, whose `times` reports the CPU (in hundredths of a second):
 * Node has no way to read a child's.
 */
export function timedRun(args: string[], env: NodeJS.ProcessEnv): Promise<{ ms: number; cpuMs: number }> {
  const start = performance.now();
  const script = '"$0" "$@"; code=$?; times >&3; exit $code';
  const child = spawn('/bin/sh', ['-c', script, process.execPath, ...args], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  let times = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdio[3]!.on('data', (d) => (times += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const ms = performance.now() - start;
      if (code === 0) resolve({ ms, cpuMs: childrenCpuMs(times) });
      else reject(new Error(`node ${args.join(' ')} exited with ${signal ?? code}: ${stderr.trim()}`));
    });
  });
}

/**
 * Starts a long-running process (`node <args>`, with an IPC channel) and stops it, by its pid,
 * when the scope ends: SIGTERM, then SIGKILL if it has not exited within STOP_LIMIT_MS.
 */
export function startProcess(scope: Scope, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const [script, ...rest] = args;
  const child = fork(script!, rest, { cwd: ROOT, env, execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child.on('error', () => {}); // a send to a process that has exited: its exit is what counts
  scope.defer(
    () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), STOP_LIMIT_MS).unref();
      }),
  );
  return child;
}

/** Resolves with the first IPC message of `child` that `pick` accepts; rejects if it exits first. */
export function message<T>(child: ChildProcess, pick: (msg: unknown) => T | undefined, limitMs = 60_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => done(new Error(`no message from process ${child.pid} within ${limitMs} ms`)),
      limitMs,
    );
    const onMessage = (msg: unknown) => {
      const got = pick(msg);
      if (got !== undefined) done(undefined, got);
    };
    const onExit = (code: number | null) =>
      done(new Error(`process ${child.pid} exited (${code}) before it was ready`));
    const done = (err?: Error, value?: T) => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(value as T);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** Whether a process with this pid exists (and is not yet reaped). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
