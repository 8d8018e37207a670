import { spawn, type ChildProcess } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FIXTURE_TASKS, useHarness, waitFor, type Harness } from './support/harness.ts';

// The compiled start-up, tested on a copy of the project whose node_modules lacks tsx: a command
// that runs there runs from dist/, since falling back to the sources would need tsx.
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Building and forking are slow on a busy machine; these bound how long a step may take, not how fast. */
const STEP_MS = 240_000;

let copy: string;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  const child = spawn(command, args, {
    cwd: copy,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

const cli = (args: string[], env?: NodeJS.ProcessEnv) =>
  run(process.execPath, [join(copy, 'bin/taskmaster.js'), ...args], env);
const prepare = () => run('npm', ['run', '--silent', 'prepare']);

/** tsx in the copy's node_modules, or not. */
function withTsx(present: boolean): void {
  const link = join(copy, 'node_modules', 'tsx');
  rmSync(link, { force: true });
  if (present) symlinkSync(join(ROOT, 'node_modules', 'tsx'), link);
}

/** Files under src/ that are not TypeScript (Lua scripts, the status page), relative to it. */
function assets(): string[] {
  const src = join(copy, 'src');
  return readdirSync(src, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && !/\.[cm]?ts$/.test(e.name))
    .map((e) => relative(src, join(e.parentPath, e.name)));
}

function env(h: Harness, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    REDIS_URL: inject('redisUrl'),
    TASKMASTER_PREFIX: h.prefix,
    TASKMASTER_TASKS_DIR: FIXTURE_TASKS,
    LOG_LEVEL: 'error',
    ...extra,
  };
}

/** `taskmaster workers` from the copy with one process, stopped (SIGTERM, by pid) after the test. */
function startWorkers(h: Harness): ChildProcess {
  const child = spawn(process.execPath, [join(copy, 'bin/taskmaster.js'), 'workers'], {
    cwd: copy,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env(h, { TASKMASTER_WORKERS: '1' }) },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  h.defer(
    () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  );
  return child;
}

async function result(h: Harness, id: string): Promise<unknown> {
  const queue = new Queue(h.config.queue, { connection: h.connection('assert'), prefix: h.prefix });
  h.defer(() => queue.close());
  await waitFor(async () => (await queue.getJobState(id)) === 'completed', `job ${id} to complete`, STEP_MS);
  return (await queue.getJob(id))!.returnvalue;
}

beforeAll(async () => {
  copy = mkdtempSync(join(tmpdir(), 'taskmaster-startup-'));
  for (const part of ['src', 'bin', 'package.json', 'tsconfig.json', 'tsconfig.build.json']) {
    cpSync(join(ROOT, part), join(copy, part), { recursive: true });
  }
  mkdirSync(join(copy, 'node_modules'));
  for (const name of readdirSync(join(ROOT, 'node_modules'))) {
    if (name !== 'tsx' && name !== '.bin')
      symlinkSync(join(ROOT, 'node_modules', name), join(copy, 'node_modules', name));
  }
  const built = await prepare();
  expect(built.code, built.stderr).toBe(0);
}, STEP_MS);

afterAll(() => {
  if (copy) rmSync(copy, { recursive: true, force: true });
});

describe('compiled start-up', () => {
  const h = useHarness();

  it(
    'runs the CLI from dist/ without tsx',
    async () => {
      const r = await cli(['--help']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('Usage: taskmaster [options] [command]');
      expect(r.stdout).toMatch(/add .*\n(.|\n)*status/);
    },
    STEP_MS,
  );

  it(
    'finds the Lua scripts and other assets from dist/',
    async () => {
      expect(assets()).toContain(join('queue', 'lua', 'cancel.lua'));
      expect(assets()).toContain(join('queue', 'lua', 'includes', 'settle-one.lua'));
      for (const file of assets()) expect(existsSync(join(copy, 'dist', file)), file).toBe(true);
      const added = await cli(['add', 'record', '{"n":1}'], env(h));
      expect(added.stderr).toBe('');
      const id = added.stdout.trim();
      // The cancel runs cancel.lua and its include, read from beside the compiled scripts.js.
      const cancelled = await cli(['cancel', id], env(h));
      expect(cancelled.stderr).toBe('');
      expect(cancelled.stdout.trim()).toBe(`${id}: removed (it was prioritized)`);
    },
    STEP_MS,
  );

  it(
    'runs worker processes compiled: JavaScript tasks without tsx, TypeScript tasks through tsx on demand',
    async () => {
      const js = (await cli(['add', 'record', '{"n":2}'], env(h))).stdout.trim();
      const workers = startWorkers(h);
      expect(await result(h, js)).toEqual({ params: { n: 2 } });
      workers.kill('SIGTERM');
      await new Promise((r) => workers.once('exit', r));

      withTsx(true);
      try {
        const ts = (await cli(['add', 'modern', '{"value":3}'], env(h))).stdout.trim();
        startWorkers(h);
        expect(await result(h, ts)).toEqual({ value: 3, jobId: ts });
      } finally {
        withTsx(false);
      }
    },
    STEP_MS,
  );

  it(
    'runs the sources through tsx once they are newer than dist/, until the prepare script compiles them again',
    async () => {
      const main = join(copy, 'src/cli/main.ts');
      writeFileSync(
        main,
        readFileSync(main, 'utf8').replace('Distributed task runner for Node.js', 'Rebuilt task runner'),
      );
      // Without tsx the changed sources cannot run: the CLI does not take the old dist/ for them.
      const stale = await cli(['--help']);
      expect(stale.code).not.toBe(0);
      expect(stale.stderr).toContain("'tsx'");
      withTsx(true);
      try {
        expect((await cli(['--help'])).stdout).toContain('Rebuilt task runner');
        const built = await prepare();
        expect(built.code, built.stderr).toBe(0);
      } finally {
        withTsx(false);
      }
      const fresh = await cli(['--help']);
      expect(fresh.code).toBe(0);
      expect(fresh.stdout).toContain('Rebuilt task runner');
    },
    STEP_MS,
  );
});
