import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { SingleBar, Presets } from 'cli-progress';
import { InvalidTaskError, UsageError } from '../errors.ts';
import type { Task } from '../tasks/task.ts';
import { validateTasks } from '../tasks/validate.ts';
import { loadConfig, type Config } from '../config/config.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import { out, withClient, type Env } from './context.ts';
import { BatchFileError } from './errors.ts';

/** Tasks per `addTasks` call: each chunk is one atomic step. */
export const CHUNK = 1000;
/** Plain progress lines (stderr not a terminal) at most this often, plus the last one. */
const PLAIN_EVERY_MS = 1000;

/** A problem and where it sits in the file (line or index), to report them in file order. */
type Problem = [position: number, text: string];

interface Parsed {
  values: unknown[];
  /** For each value: its position (1-based line for ndjson, index for json) and how to name it. */
  positions: number[];
  where: string[];
  problems: Problem[];
}

function parseNdjson(text: string): Parsed {
  const parsed: Parsed = { values: [], positions: [], where: [], problems: [] };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line) continue;
    try {
      parsed.values.push(JSON.parse(line));
      parsed.positions.push(i + 1);
      parsed.where.push(`line ${i + 1}`);
    } catch (err) {
      parsed.problems.push([i + 1, `line ${i + 1}: not valid JSON (${(err as Error).message})`]);
    }
  }
  return parsed;
}

function parseJson(text: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { values: [], positions: [], where: [], problems: [[0, `not valid JSON (${(err as Error).message})`]] };
  }
  const values = Array.isArray(value) ? value : [value];
  return { values, positions: values.map((_, i) => i), where: values.map((_, i) => `task[${i}]`), problems: [] };
}

/** Reads and validates the whole file; throws BatchFileError naming every bad line or index. */
export async function readBatchFile(path: string, opts: Pick<Config, 'defaults' | 'tasksDir'>): Promise<Task[]> {
  const ext = extname(path).toLowerCase();
  const kind = ext === '.json' ? 'json' : ext === '.ndjson' || ext === '.jsonl' ? 'ndjson' : undefined;
  if (!kind)
    throw new UsageError(
      `--file ${path}: expected a .json file (a task or an array of tasks) or a .ndjson file (one task per line)`,
    );
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(
      `--file ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      { cause: err },
    );
  }
  const name = basename(path);
  const parsed = kind === 'json' ? parseJson(text) : parseNdjson(text);
  if (!parsed.values.length && !parsed.problems.length) throw new BatchFileError(name, ['contains no tasks']);
  if (!parsed.values.length)
    throw new BatchFileError(
      name,
      parsed.problems.map(([, text]) => text),
    );
  const problems = parsed.problems;
  let tasks: Task[] = [];
  try {
    // The file is validated as one batch, so a dependency cycle across chunks is found too. The
    // batch limits guard the network edges (sockets, API); a local file is bounded by memory.
    tasks = validateTasks(parsed.values, {
      defaults: opts.defaults,
      tasksDir: opts.tasksDir,
      limits: { maxBatch: Math.max(1, parsed.values.length), maxPayloadBytes: Number.MAX_SAFE_INTEGER },
    });
  } catch (err) {
    if (!(err instanceof InvalidTaskError)) throw err;
    for (const p of err.problems) {
      if (p.index < 0) problems.push([-1, `${p.field}: ${p.message}`]);
      else problems.push([parsed.positions[p.index]!, `${parsed.where[p.index]}: ${p.field}: ${p.message}`]);
    }
  }
  if (problems.length) {
    throw new BatchFileError(
      name,
      problems.sort((a, b) => a[0] - b[0]).map(([, text]) => text),
    );
  }
  return tasks;
}

interface Progress {
  update(done: number): void;
  stop(): void;
}

function progress(total: number): Progress {
  if (process.stderr.isTTY) {
    const bar = new SingleBar(
      {
        stream: process.stderr,
        format: 'adding [{bar}] {value}/{total} tasks | {percentage}% | eta {eta_formatted}',
        hideCursor: true,
      },
      Presets.shades_classic,
    );
    bar.start(total, 0);
    return { update: (n) => bar.update(n), stop: () => bar.stop() };
  }
  let last = 0;
  return {
    update(done) {
      const now = Date.now();
      if (done === total || now - last >= PLAIN_EVERY_MS) {
        last = now;
        process.stderr.write(`added ${done}/${total}\n`);
      }
    },
    stop() {},
  };
}

/**
 * `taskmaster add --file`: reads and validates the whole file before touching Redis, then adds
 * it in atomic chunks with progress.
 */
export async function addFile(env: Env, path: string, opts: { json: boolean }): Promise<void> {
  const started = performance.now();
  const tasks = await readBatchFile(path, loadConfig(env));
  await withClient(env, ({ client }) => addInChunks(client, tasks, started, opts));
}

async function addInChunks(client: TaskClient, tasks: Task[], started: number, opts: { json: boolean }): Promise<void> {
  let added = 0;
  let duplicates = 0;
  const bar = progress(tasks.length);
  try {
    for (let i = 0; i < tasks.length; i += CHUNK) {
      const result = await client.addTasks(tasks.slice(i, i + CHUNK));
      added += result.length;
      for (const r of result) if (r.duplicate) duplicates++;
      bar.update(added);
    }
  } catch (err) {
    throw new Error(
      `stopped after adding ${added} of ${tasks.length} tasks (each chunk of ${CHUNK} is all-or-nothing): ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  } finally {
    bar.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  if (opts.json) out(JSON.stringify({ added, duplicates, seconds: Number(seconds.toFixed(3)) }));
  else out(`added ${added} tasks (${duplicates} duplicates) in ${seconds.toFixed(1)} s`);
}
