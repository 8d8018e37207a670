import { resolve, sep } from 'node:path';
import { InvalidTaskError, type TaskProblem } from '../errors.ts';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../queue/keys.ts';
import { dependencyKey, dependencyRefKey } from './identity.ts';
import { PRIORITY_MAX, PRIORITY_MIN } from './priority.ts';
import type { DependencyRef, Task } from './task.ts';

export interface ValidateOptions {
  defaults: { priority: number; timeout: number };
  limits: { maxBatch: number; maxPayloadBytes: number };
  /** When given, module names must resolve inside it. */
  tasksDir?: string;
  /** Seconds since the epoch to stamp on tasks without `created`. */
  now?: number;
}

/** Module names: plain path segments of letters, digits, '-', '_', '.', joined by '/'. */
const MODULE_SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/;
export const MODULE_RULE =
  'letters, digits, "-", "_", "." and "/" between folder names (no "..", no leading "/" or ".", at most 200 characters)';

const KNOWN_FIELDS = new Set([
  'module',
  'params',
  'priority',
  'timeout',
  'dependencies',
  'queue',
  'created',
  'scope',
  'rerun',
]);
const DEPENDENCY_FIELDS = new Set(['module', 'params', 'scope']);
/** A scope: 1-200 characters, none of them control or other non-printing characters. */
const SCOPE = /^\P{C}{1,200}$/u;
const SCOPE_RULE = 'a string of 1 to 200 printable characters (no control characters)';
/** Fields a 2016 feeder may echo back from a stored task; accepted and ignored. */
const IGNORED_LEGACY_FIELDS = new Set(['_id', 'assigned', '__v', 'id']);
/** Keys that could reach Object.prototype when an object is merged or assigned. */
const POISON_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const MAX_DEPTH = 64;
const MAX_DEPENDENCIES = 1000;
export const MAX_TIMEOUT = 2_147_483_647;

export function moduleNameProblem(name: unknown, tasksDir?: string): string | undefined {
  if (typeof name !== 'string') return `must be a string (${MODULE_RULE}), got ${typeName(name)}`;
  // A batch names few modules many times: each name is checked once.
  const memo = `${tasksDir ?? ''}\0${name}`;
  if (checkedNames.has(memo)) return checkedNames.get(memo);
  const problem = nameProblem(name, tasksDir);
  if (checkedNames.size >= CHECKED_NAMES_MAX) checkedNames.clear();
  checkedNames.set(memo, problem);
  return problem;
}

const checkedNames = new Map<string, string | undefined>();
const CHECKED_NAMES_MAX = 1000;

function nameProblem(name: string, tasksDir?: string): string | undefined {
  if (name.length === 0 || name.length > 200) return `must be 1 to 200 characters (${MODULE_RULE})`;
  const segments = name.split('/');
  if (!segments.every((s) => MODULE_SEGMENT.test(s))) {
    return `${JSON.stringify(name)} is not allowed: ${MODULE_RULE}`;
  }
  if (tasksDir) {
    const root = resolve(tasksDir);
    if (!resolve(root, name).startsWith(root + sep)) return `${JSON.stringify(name)} resolves outside the tasks folder`;
  }
  return undefined;
}

function typeName(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

/** Finds a poisonous key or excessive nesting anywhere inside `value`; returns its path and why. */
function poisonPath(value: unknown, path: string, depth: number): { field: string; message: string } | undefined {
  if (depth > MAX_DEPTH) return { field: path, message: `nested deeper than ${MAX_DEPTH} levels` };
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = poisonPath(value[i], `${path}[${i}]`, depth + 1);
      if (p) return p;
    }
  } else if (value && typeof value === 'object') {
    for (const key of Object.keys(value)) {
      if (POISON_KEYS.has(key)) return { field: `${path}.${key}`, message: `the key "${key}" is not allowed` };
      const p = poisonPath((value as Record<string, unknown>)[key], `${path}.${key}`, depth + 1);
      if (p) return p;
    }
  }
  return undefined;
}

/**
 * The 2016 master stored tasks through a Mongoose schema, which cast a string to a number with
 * Number() and refused it only when that gave NaN: `"70"` → 70, `" 7 "` → 7, `"1e3"` → 1000,
 * `"0x46"` → 70. Strings are read the same way here, except blank ones (Mongoose stored `""` as
 * null and `"  "` as 0, neither a value anyone meant). What comes out is checked like any number,
 * so `"1e400"` (Infinity) or `"7.5"` for a priority is refused; anything that is not a string is
 * returned as it is.
 */
function castNumber(value: unknown): unknown {
  if (typeof value !== 'string' || value.trim() === '') return value;
  const n = Number(value);
  // + 0 turns "-0" into 0.
  return Number.isNaN(n) ? value : n + 0;
}

/** What to say about `task` where `module` is meant: the 2016 README's feeder example used it. */
function taskFieldHint(t: Record<string, unknown>): string {
  const example = t.module === undefined && typeof t.task === 'string' && t.task.length <= 200;
  const hint = 'unknown field: use "module" for the task\'s module name';
  return example ? `${hint}, e.g. {"module": ${JSON.stringify(t.task)}, ...}` : hint;
}

/** `params`: an array is the argument list; any other value is one argument (as mongoose cast it). */
function normaliseParams(value: unknown): unknown[] {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

/**
 * Turns what a producer sent (a task, an array of tasks, or a JSON string of either) into
 * validated tasks. Every problem is collected, each naming the task's index and the field, and
 * the whole batch is refused if any task is wrong.
 */
export function validateTasks(input: unknown, opts: ValidateOptions): Task[] {
  let payload = input;
  if (typeof payload === 'string') {
    if (Buffer.byteLength(payload) > opts.limits.maxPayloadBytes) {
      throw new InvalidTaskError([
        { index: -1, field: '(payload)', message: `larger than ${opts.limits.maxPayloadBytes} bytes` },
      ]);
    }
    try {
      payload = JSON.parse(payload);
    } catch (err) {
      throw new InvalidTaskError([
        { index: -1, field: '(payload)', message: `not valid JSON: ${(err as Error).message}` },
      ]);
    }
  } else {
    let size: number;
    try {
      size = Buffer.byteLength(JSON.stringify(payload) ?? '');
    } catch (err) {
      throw new InvalidTaskError([
        { index: -1, field: '(payload)', message: `cannot be serialised as JSON: ${(err as Error).message}` },
      ]);
    }
    if (size > opts.limits.maxPayloadBytes) {
      throw new InvalidTaskError([
        { index: -1, field: '(payload)', message: `larger than ${opts.limits.maxPayloadBytes} bytes` },
      ]);
    }
  }
  const batch = Array.isArray(payload) ? payload : [payload];
  if (batch.length === 0)
    throw new InvalidTaskError([{ index: -1, field: '(batch)', message: 'is empty: send at least one task' }]);
  if (batch.length > opts.limits.maxBatch) {
    throw new InvalidTaskError([
      {
        index: -1,
        field: '(batch)',
        message: `has ${batch.length} tasks; at most ${opts.limits.maxBatch} are allowed in one batch`,
      },
    ]);
  }
  const problems: TaskProblem[] = [];
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const tasks = batch.map((raw, index) => validateOne(raw, index, opts, now, problems));
  if (!problems.length && tasks.some((t) => t!.dependencies.length)) problems.push(...findCycles(tasks as Task[]));
  if (problems.length) throw new InvalidTaskError(problems);
  return tasks as Task[];
}

function validateOne(
  raw: unknown,
  index: number,
  opts: ValidateOptions,
  now: number,
  problems: TaskProblem[],
): Task | undefined {
  const fail = (field: string, message: string) => {
    problems.push({ index, field, message });
    return undefined;
  };
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    return fail('(task)', `must be an object like {"module": "name", "params": [...]}, got ${typeName(raw)}`);
  }
  const t = raw as Record<string, unknown>;
  const before = problems.length;
  for (const key of Object.keys(t)) {
    if (key === 'task') fail(key, taskFieldHint(t));
    else if (!KNOWN_FIELDS.has(key) && !IGNORED_LEGACY_FIELDS.has(key)) {
      fail(key, `unknown field; allowed: ${[...KNOWN_FIELDS].join(', ')}`);
    }
  }
  // A module given as `task` is one problem, said above, not a second one here.
  const moduleProblem =
    t.module === undefined && t.task !== undefined ? undefined : moduleNameProblem(t.module, opts.tasksDir);
  if (moduleProblem) fail('module', moduleProblem);

  const poisoned = poisonPath(t.params, 'params', 0) ?? poisonPath(t.dependencies, 'dependencies', 0);
  if (poisoned) fail(poisoned.field, poisoned.message);

  let priority = opts.defaults.priority;
  if (t.priority !== undefined) {
    const p = castNumber(t.priority);
    if (typeof p !== 'number' || !Number.isInteger(p) || p < PRIORITY_MIN || p > PRIORITY_MAX) {
      fail(
        'priority',
        `must be an integer from ${PRIORITY_MIN} to ${PRIORITY_MAX} (higher runs sooner) ` +
          `or a string of one such as "70", got ${typeName(t.priority)}`,
      );
    } else priority = p;
  }
  let timeout = opts.defaults.timeout;
  if (t.timeout !== undefined) {
    const v = castNumber(t.timeout);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_TIMEOUT) {
      fail(
        'timeout',
        `must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT} or a string of one such as "5000", ` +
          `got ${typeName(t.timeout)}`,
      );
    } else timeout = v;
  }
  let created = now;
  if (t.created !== undefined) {
    const c = castNumber(t.created);
    if (typeof c !== 'number' || !Number.isFinite(c) || c < 0) {
      fail('created', `must be unix seconds (a non-negative number) or a string of one, got ${typeName(t.created)}`);
    } else created = c;
  }
  if (t.queue !== undefined && (typeof t.queue !== 'string' || !QUEUE_NAME.test(t.queue))) {
    fail('queue', `must be a queue name of ${QUEUE_NAME_RULE}, got ${typeName(t.queue)}`);
  }

  if (t.scope !== undefined && !isScope(t.scope)) fail('scope', `must be ${SCOPE_RULE}, got ${typeName(t.scope)}`);
  if (t.rerun !== undefined && typeof t.rerun !== 'boolean') {
    fail(
      'rerun',
      `must be true (queue a new run even if an identical task completed lately) or false, got ${typeName(t.rerun)}`,
    );
  }

  const dependencies: DependencyRef[] = [];
  if (t.dependencies !== undefined && t.dependencies !== null) {
    if (!Array.isArray(t.dependencies)) {
      fail('dependencies', `must be an array of {"module", "params"}, got ${typeName(t.dependencies)}`);
    } else if (t.dependencies.length > MAX_DEPENDENCIES) {
      fail('dependencies', `has ${t.dependencies.length} entries; at most ${MAX_DEPENDENCIES} are allowed`);
    } else {
      t.dependencies.forEach((d, i) => {
        const field = `dependencies[${i}]`;
        if (!d || typeof d !== 'object' || Array.isArray(d)) {
          return fail(field, `must be an object {"module", "params"}, got ${typeName(d)}`);
        }
        const dep = d as Record<string, unknown>;
        const extra = Object.keys(dep).filter((k) => !DEPENDENCY_FIELDS.has(k) && !IGNORED_LEGACY_FIELDS.has(k));
        if (extra[0] === 'task') return fail(`${field}.task`, taskFieldHint(dep));
        const allowed = [...DEPENDENCY_FIELDS].join(', ');
        if (extra.length) return fail(`${field}.${extra[0]}`, `unknown field; allowed: ${allowed}`);
        const p = moduleNameProblem(dep.module, opts.tasksDir);
        if (p) return fail(`${field}.module`, p);
        if (dep.scope !== undefined && !isScope(dep.scope)) {
          return fail(`${field}.scope`, `must be ${SCOPE_RULE}, got ${typeName(dep.scope)}`);
        }
        // Without params: any task of the module (the 2016 master matched dependencies as
        // patterns). Params, when given, name one task exactly; patterns on them are not matched.
        const ref: DependencyRef = { module: dep.module as string };
        if (dep.params !== undefined) ref.params = normaliseParams(dep.params);
        else if (dep.scope !== undefined) {
          return fail(
            `${field}.scope`,
            'a dependency without params waits for any task of its module, in any scope; give "params" to name a scoped task',
          );
        }
        if (dep.scope !== undefined) ref.scope = dep.scope as string;
        dependencies.push(ref);
      });
    }
  }
  if (problems.length > before) return undefined;
  const params = normaliseParams(t.params);
  const task: Task = { module: t.module as string, params, priority, timeout, dependencies, created };
  if (t.queue !== undefined) task.queue = t.queue as string;
  if (t.scope !== undefined) task.scope = t.scope as string;
  if (t.rerun === true) task.rerun = true;
  const own = dependencies.length ? dependencyKey(task.module, params, task.scope) : undefined;
  if (own && dependencies.some((d) => d.module === task.module && dependencyRefKey(d) === own)) {
    return fail('dependencies', 'a task cannot depend on itself (same module, params and scope)');
  }
  return task;
}

/** Dependencies inside one batch must not form a cycle: such tasks could never start. */
function findCycles(tasks: Task[]): TaskProblem[] {
  // A module+params may occur more than once in a batch (with other dependencies); a dependency
  // on it is an edge to every copy, since TaskClient may make any of them the flow child.
  const byKey = new Map<string, number[]>();
  tasks.forEach((t, i) => {
    const k = dependencyKey(t.module, t.params, t.scope);
    const same = byKey.get(k);
    if (same) same.push(i);
    else byKey.set(k, [i]);
  });
  const edges = tasks.map((t) => t.dependencies.flatMap((d) => byKey.get(dependencyRefKey(d)) ?? []));
  const state = new Uint8Array(tasks.length); // 0 new, 1 on stack, 2 done
  for (let start = 0; start < tasks.length; start++) {
    if (state[start]) continue;
    const stack: [number, number][] = [[start, 0]];
    state[start] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [node, next] = top;
      if (next < edges[node]!.length) {
        top[1]++;
        const to = edges[node]![next]!;
        if (state[to] === 1) {
          return [{ index: node, field: 'dependencies', message: `forms a cycle with task[${to}] in the same batch` }];
        }
        if (!state[to]) {
          state[to] = 1;
          stack.push([to, 0]);
        }
      } else {
        state[node] = 2;
        stack.pop();
      }
    }
  }
  return [];
}

function isScope(value: unknown): value is string {
  return typeof value === 'string' && SCOPE.test(value);
}
