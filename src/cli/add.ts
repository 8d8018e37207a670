import { InvalidArgumentError, type Command } from 'commander';
import { UsageError } from '../errors.ts';
import { PRIORITY_MAX, PRIORITY_MIN } from '../tasks/priority.ts';
import { MAX_TIMEOUT } from '../tasks/validate.ts';
import type { Env } from './context.ts';

interface AddOptions {
  priority?: number;
  timeout?: number;
  after?: unknown[];
  queue?: string;
  file?: string;
  json?: boolean;
  rerun?: boolean;
}

function integer(name: string, min: number, max: number, what: string) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be ${what} from ${min} to ${max}`);
    }
    return n;
  };
}

/** `'<module> <json>'`: an array is the parameter list, any other JSON value is one parameter. */
export function parseAfter(raw: string, previous: unknown[] = []): unknown[] {
  const m = /^\s*(\S+)(?:\s+([\s\S]*))?$/.exec(raw);
  if (!m) throw new InvalidArgumentError(`expected '<module> [json-params]', e.g. --after 'sampleTask {"ticker":"A"}'`);
  const rest = m[2]?.trim();
  let params: unknown[] = [];
  if (rest) {
    let value: unknown;
    try {
      value = JSON.parse(rest);
    } catch {
      throw new InvalidArgumentError(
        `the parameters after "${m[1]}" must be JSON (quote strings: '"AAPL"'), e.g. --after 'sampleTask {"ticker":"A"}'`,
      );
    }
    params = Array.isArray(value) ? value : [value];
  }
  return [...previous, { module: m[1], params }];
}

/** Each positional parameter is JSON; a bare word is almost always a string missing its quotes. */
export function parseParams(raw: string[]): unknown[] {
  return raw.map((text, i) => {
    try {
      return JSON.parse(text);
    } catch {
      throw new UsageError(
        `parameter ${i + 1} (${text}) is not valid JSON; quote strings as JSON, e.g. '${JSON.stringify(text)}'`,
      );
    }
  });
}

export function registerAdd(program: Command, env: Env): void {
  program
    .command('add')
    .summary('add a task, or a batch of tasks from a file')
    .description(
      'Add one task; each parameter is JSON and the module gets them as its arguments:\n' +
        `  taskmaster add sampleTask '{"ticker":"AAPL"}' --priority 80 \\\n` +
        `    --after 'fetchPrices {"ticker":"AAPL"}'\n` +
        'Or add a batch from a file: .json holds a task or an array of tasks, .ndjson one\n' +
        'task per line. The whole file is validated first; nothing is added if any task\n' +
        'is wrong. Prints the id of the task (of the existing one when already queued).',
    )
    .argument('[module]', 'name of a module in the tasks folder')
    .argument('[params...]', `JSON parameters (quote strings: '"AAPL"')`)
    .option(
      '--priority <n>',
      `higher runs sooner (${PRIORITY_MIN} to ${PRIORITY_MAX}; default 50)`,
      integer('--priority', PRIORITY_MIN, PRIORITY_MAX, 'an integer'),
    )
    .option(
      '--timeout <ms>',
      'milliseconds before a run is abandoned and retried',
      integer('--timeout', 1, MAX_TIMEOUT, 'a whole number of milliseconds'),
    )
    .option('--after <task>', `a dependency: '<module> [json-params]' (repeatable)`, parseAfter)
    .option('--queue <name>', 'queue to add to (default: TASKMASTER_QUEUE)')
    .option('--file <path>', 'add the tasks in a .json or .ndjson file')
    .option('--rerun', 'queue a new run even if an identical task completed within the dedup window')
    .option('--json', 'print the result as JSON')
    .action(async (module: string | undefined, params: string[], opts: AddOptions) => {
      const after = opts.after ?? [];
      if (opts.file) {
        if (module) throw new UsageError('give either <module> or --file, not both');
        const clash = [
          opts.priority !== undefined && '--priority',
          opts.timeout !== undefined && '--timeout',
          opts.queue !== undefined && '--queue',
          after.length > 0 && '--after',
          opts.rerun && '--rerun',
        ].find(Boolean);
        if (clash) throw new UsageError(`${clash} cannot be combined with --file; set it on the tasks in the file`);
        // Loaded here so that --help and bad arguments answer without loading BullMQ.
        const { addFile } = await import('./add-file.ts');
        await addFile(env, opts.file, { json: Boolean(opts.json) });
        return;
      }
      if (!module) throw new UsageError("missing <module> (or --file <path>); see 'taskmaster add --help'");
      const task: Record<string, unknown> = { module, params: parseParams(params), dependencies: after };
      if (opts.priority !== undefined) task.priority = opts.priority;
      if (opts.timeout !== undefined) task.timeout = opts.timeout;
      if (opts.queue !== undefined) task.queue = opts.queue;
      if (opts.rerun) task.rerun = true;
      const { withClient, out } = await import('./context.ts');
      await withClient(env, async ({ client }) => {
        const [added] = await client.add(task);
        out(opts.json ? JSON.stringify(added) : `${added!.id}${added!.duplicate ? ' (already queued)' : ''}`);
      });
    });
}
