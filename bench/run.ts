/**
 * `npm run bench`: Taskmaster against raw BullMQ, both measured in the same run on the same
 * Redis. It reports; it does not assert: a goal that is not met still exits 0, while a case
 * that breaks (or no Redis) exits 1.
 *
 * Each case is one file in bench/cases exporting a BenchCase, listed once in CASES below; cases
 * import only types from this file (importing a value would start a second run).
 * Environment: REDIS_URL (else a private redis-server is started and stopped), BENCH_ROUNDS
 * (timed rounds per side, default 8, an odd number is rounded up; one untimed warm-up per side
 * comes first).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { loadConfig, redactUrl, type Config } from '../src/config/config.ts';
import { assertRedisReachable, createRedis } from '../src/queue/connection.ts';
import { hasRedisServer, TestRedisServer } from '../test/support/redis-server.ts';
import { deleteKeys } from '../test/support/keys.ts';
import { addTasks } from './cases/add-tasks.ts';
import { fanInDag } from './cases/fan-in-dag.ts';
import { workerNoop } from './cases/worker-noop.ts';
import { cpuScaling } from './cases/cpu-scaling.ts';
import { legacyFeeder } from './cases/legacy-feeder.ts';
import { runnerSockets } from './cases/runner-sockets.ts';
import { startUp } from './cases/start-up.ts';
import { workersCold } from './cases/workers-cold.ts';

/** The cases, in the order they run. */
const CASES: BenchCase[] = [
  startUp,
  addTasks,
  fanInDag,
  workerNoop,
  workersCold,
  cpuScaling,
  legacyFeeder,
  runnerSockets,
];

/** Costs a side reports for one run (durations in ms: lower is better), by name. */
export type Metrics = Record<string, number>;

/**
 * One run of one side, in its own scope (fresh prefix, cleaned afterwards): either measured at
 * once, or set up and returned as `Ready`, to be timed right after the other side's.
 */
export type Measure<M extends Metrics> = (scope: Scope) => Promise<M | Ready<M>>;

/**
 * A side that is set up and waiting. compare sets up both sides of a round first and then
 * times them one right after the other, so the two timed runs of a pair are close together
 * rather than seconds of set-up apart: a shared machine's speed drifts within seconds.
 */
export interface Ready<M extends Metrics> {
  timed(): Promise<M>;
}

/** What one run may open: everything is closed, and every key deleted, when the run ends. */
export interface Scope {
  /** A fresh BullMQ / Taskmaster prefix, used by nothing else. */
  readonly prefix: string;
  /** Taskmaster config on that prefix, with bench/tasks as the tasks folder, logging off. */
  readonly config: Config;
  /** A new connection (as createRedis makes them), ready, closed at the end of the run. */
  connection(name: string): Promise<Redis>;
  /** Something else to close at the end of the run; closed in reverse order. */
  defer(fn: () => unknown): void;
}

export interface BenchContext {
  readonly rounds: number;
  /**
   * Runs each side once untimed, then `rounds` rounds (rounded up to even) of one timed run per
   * side; sides that return `Ready` are both set up before either is timed. Who goes first
   * alternates, so the rounds come in blocks of ours-raw, raw-ours. Returns per metric the
   * median of each side and, as `ratio`, the median over blocks of the block's raw / ours (the
   * geometric mean of its two rounds' raw / ours). Within a block the runs are close together,
   * so background load on a shared machine does not tilt the ratio; and each side runs once
   * first and once second, so neither does the place in the round: on a 2-core machine the
   * side timed first in a round ran 5-10% slower than the same side timed second.
   * A heavy case may pass fewer `rounds` than the default.
   */
  compare<M extends Metrics>(
    label: string,
    sides: { ours: Measure<M>; raw: Measure<M> },
    rounds?: number,
  ): Promise<{ ours: M; raw: M; ratio: M }>;
}

/** One line of the table. `ratio` is "ours relative to raw", higher is better for ours. */
export interface Row {
  name: string;
  ours: string;
  raw: string;
  ratio?: number;
  /** Lowest acceptable ratio; rows without one (or `within`) are informational. */
  goal?: number;
  /** A goal on ours alone instead of the ratio: it took `ms` (the median), at most `max` is acceptable. */
  within?: { ms: number; max: number };
}

export interface BenchCase {
  name: string;
  run(ctx: BenchContext): Promise<Row[]>;
}

const BENCH_TASKS = fileURLToPath(new URL('./tasks', import.meta.url));

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 100) {
    throw new Error(`${name} must be an integer from 1 to 100, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

/** Rounds come in blocks of two (see compare). */
const evenUp = (n: number) => n + (n % 2);

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Per metric, the median over the samples. */
function medians<M extends Metrics>(samples: M[]): M {
  const out: Metrics = {};
  for (const key of Object.keys(samples[0]!)) out[key] = median(samples.map((s) => s[key]!));
  return out as M;
}

/** Per metric, `fn` of its values in `a` and `b`. */
function perMetric<M extends Metrics>(a: M, b: M, fn: (x: number, y: number) => number): M {
  const out: Metrics = {};
  for (const key of Object.keys(a)) out[key] = fn(a[key]!, b[key]!);
  return out as M;
}

const show = (m: Metrics) =>
  Object.entries(m)
    .map(([k, v]) => `${k}=${Math.round(v)}`)
    .join(' ');

function progress(line: string): void {
  process.stderr.write(`  ${line}\n`);
}

/** A fresh scope (see Scope) and how to end it: close everything it opened, delete its keys. */
function openScope(redisUrl: string, admin: Redis): { scope: Scope; end(): Promise<void> } {
  const prefix = `tmbench-${randomBytes(4).toString('hex')}`;
  const releasers: (() => unknown)[] = [];
  const scope: Scope = {
    prefix,
    config: loadConfig({
      REDIS_URL: redisUrl,
      TASKMASTER_PREFIX: prefix,
      TASKMASTER_TASKS_DIR: BENCH_TASKS,
      LOG_LEVEL: 'silent',
    }),
    async connection(name) {
      const c = createRedis(redisUrl, { name: `${prefix}:${name}` });
      releasers.push(() => c.quit().catch(() => c.disconnect()));
      await c.ping();
      return c;
    },
    defer(fn) {
      releasers.push(fn);
    },
  };
  const end = async () => {
    while (releasers.length) await releasers.pop()!();
    await deleteKeys(admin, prefix);
  };
  return { scope, end };
}

const isReady = <M extends Metrics>(m: M | Ready<M>): m is Ready<M> => typeof (m as Ready<M>).timed === 'function';

/**
 * Runs the given measurements, each in a fresh scope: first every one's set-up, then the timed
 * steps of those that returned `Ready`, in the same order. Always cleans up every scope.
 */
async function measured<M extends Metrics>(redisUrl: string, admin: Redis, measures: Measure<M>[]): Promise<M[]> {
  const scopes: ReturnType<typeof openScope>[] = [];
  try {
    const got: (M | Ready<M>)[] = [];
    for (const measure of measures) {
      scopes.push(openScope(redisUrl, admin));
      got.push(await measure(scopes.at(-1)!.scope));
    }
    const out: M[] = [];
    for (const m of got) out.push(isReady(m) ? await m.timed() : m);
    return out;
  } finally {
    while (scopes.length) await scopes.pop()!.end();
  }
}

/**
 * Makes the private Redis rewrite its append-only file only between rounds. Left to itself it
 * rewrites whenever the file has doubled, which here is every few seconds, and the forked
 * rewrite then takes a core from whichever side happens to be timed. Returns what to run
 * between rounds: a rewrite (of the few keys left once a round's are deleted), awaited.
 */
async function aofBetweenRounds(admin: Redis): Promise<() => Promise<void>> {
  await admin.config('SET', 'auto-aof-rewrite-percentage', '0');
  return async () => {
    await admin.bgrewriteaof();
    while (/aof_rewrite_(in_progress|scheduled):1/.test(await admin.info('persistence')))
      await new Promise((r) => setTimeout(r, 20));
  };
}

function context(redisUrl: string, admin: Redis, rounds: number, between: () => Promise<void>): BenchContext {
  const run = async <M extends Metrics>(measures: Measure<M>[]) => {
    const out = await measured(redisUrl, admin, measures);
    await between();
    return out;
  };
  return {
    rounds,
    async compare<M extends Metrics>(label: string, sides: { ours: Measure<M>; raw: Measure<M> }, caseRounds = rounds) {
      await run([sides.ours]);
      await run([sides.raw]);
      const ours: M[] = [];
      const raw: M[] = [];
      caseRounds = evenUp(caseRounds);
      for (let r = 0; r < caseRounds; r++) {
        const oursFirst = r % 2 === 0;
        const [first, second] = await run(oursFirst ? [sides.ours, sides.raw] : [sides.raw, sides.ours]);
        ours.push(oursFirst ? first! : second!);
        raw.push(oursFirst ? second! : first!);
        progress(`${label} round ${r + 1}/${caseRounds}: ours ${show(ours[r]!)} | raw ${show(raw[r]!)} (ms)`);
      }
      // Block b: round 2b (ours first) and round 2b + 1 (raw first).
      const rawOverOurs = (r: number) => perMetric(raw[r]!, ours[r]!, (x, y) => x / y);
      const blocks = Array.from({ length: caseRounds / 2 }, (_, b) =>
        perMetric(rawOverOurs(2 * b), rawOverOurs(2 * b + 1), (x, y) => Math.sqrt(x * y)),
      );
      return { ours: medians(ours), raw: medians(raw), ratio: medians(blocks) };
    },
  };
}

async function machine(admin: Redis): Promise<string[]> {
  const info = await admin.info('server');
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  const bullmq = JSON.parse(readFileSync(new URL('../node_modules/bullmq/package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  const cpu = cpus();
  return [
    `CPU     ${cpu[0]?.model.trim() ?? 'unknown'}, ${cpu.length} cores`,
    `Memory  ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `Node    ${process.version}; Redis ${redisVersion}; BullMQ ${bullmq.version}`,
  ];
}

function table(rows: Row[]): string {
  const head = ['case', 'ours', 'raw BullMQ', 'ratio', 'goal', 'met?'];
  const met = (ok: boolean) => (ok ? 'yes' : 'NO');
  const cells = rows.map((r) => [
    r.name,
    r.ours,
    r.raw,
    r.ratio === undefined ? '-' : r.ratio.toFixed(2),
    r.within ? `ours <= ${(r.within.max / 1000).toFixed(1)} s` : r.goal === undefined ? '-' : `>= ${r.goal}`,
    r.within
      ? met(r.within.ms <= r.within.max)
      : r.goal === undefined || r.ratio === undefined
        ? '-'
        : met(r.ratio >= r.goal),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => `| ${c.map((v, i) => v.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.map(line)].join('\n');
}

async function main(): Promise<number> {
  const rounds = evenUp(positiveInt('BENCH_ROUNDS', 8));
  let server: TestRedisServer | undefined;
  let redisUrl = process.env.REDIS_URL;
  let source = 'REDIS_URL';
  if (!redisUrl) {
    if (!hasRedisServer()) {
      throw new Error(
        'the benchmark needs Redis: set REDIS_URL=redis://host:port, or install redis-server ' +
          '(apt-get install redis-server) so it can start a private one',
      );
    }
    server = await TestRedisServer.start();
    redisUrl = server.url;
    source = 'private redis-server';
  }
  const stop = () => void (server?.destroy() ?? Promise.resolve()).finally(() => process.exit(130));
  process.once('SIGINT', stop);
  const admin = createRedis(redisUrl, { name: 'bench:admin', failFast: true });
  try {
    await assertRedisReachable(admin, redisUrl);
    const header = [
      ...(await machine(admin)),
      `Redis   ${redactUrl(redisUrl)} (${source}); ${rounds} rounds per side; ` +
        'ratio = median over blocks of two rounds (ours first, then raw first) of raw/ours',
    ];
    process.stderr.write(`bench: ${rounds} rounds per side after one warm-up, on ${redactUrl(redisUrl)} (${source})\n`);
    const ctx = context(redisUrl, admin, rounds, server ? await aofBetweenRounds(admin) : async () => undefined);
    const rows: Row[] = [];
    let failed = false;
    // `npm run bench -- worker add` runs the cases whose name contains one of the words.
    const only = process.argv.slice(2).map((w) => w.toLowerCase());
    for (const c of CASES.filter((k) => !only.length || only.some((w) => k.name.toLowerCase().includes(w)))) {
      process.stderr.write(`${c.name}\n`);
      try {
        rows.push(...(await c.run(ctx)));
      } catch (err) {
        failed = true;
        process.stderr.write(`  ${c.name} failed: ${(err as Error).stack ?? err}\n`);
        rows.push({ name: c.name, ours: `error: ${(err as Error).message}`, raw: '-' });
      }
    }
    process.stdout.write(`\n${header.join('\n')}\n\n${table(rows)}\n`);
    return failed ? 1 : 0;
  } finally {
    process.off('SIGINT', stop);
    admin.disconnect();
    await server?.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(1);
  },
);
