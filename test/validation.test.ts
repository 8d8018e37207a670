import { describe, expect, it } from 'vitest';
import { InvalidTaskError, type TaskProblem } from '../src/errors.ts';
import { validateTasks, type ValidateOptions } from '../src/tasks/validate.ts';
import { useHarness } from './support/harness.ts';

/**
 * A corpus of bad (and good) inputs for task validation. Each bad case names the task's index
 * in the batch, the offending field, and a fragment of the message that says what is allowed,
 * so a feeder gets an answer it can act on.
 */

const TASKS_DIR = '/srv/taskmaster/tasks';
const NOW = 1_700_000_000;
const OPTS: ValidateOptions = {
  defaults: { priority: 50, timeout: 300_000 },
  limits: { maxBatch: 100, maxPayloadBytes: 1024 * 1024 },
  tasksDir: TASKS_DIR,
  now: NOW,
};
const MAX_TIMEOUT = 2_147_483_647;

const MODULE_ALLOWED = /is not allowed: letters, digits, "-", "_", "\." and "\/" between folder names/;
const PRIORITY_ALLOWED = /must be an integer from -1000000 to 1000000 \(higher runs sooner\)/;
const TIMEOUT_ALLOWED = /must be a whole number of milliseconds from 1 to 2147483647/;
const POISON = (key: string) => new RegExp(`the key "${key}" is not allowed`);
const DEPTH = /nested deeper than 64 levels/;

/** `depth` arrays nested inside each other around `leaf`. */
function nested(depth: number, leaf: unknown = 1): unknown {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

function circular(): unknown {
  const o: Record<string, unknown> = { module: 'm' };
  o.params = [o];
  return o;
}

interface BadCase {
  name: string;
  input: unknown | (() => unknown);
  opts?: Partial<ValidateOptions>;
  index: number;
  /** The exact field, or a pattern when the path is long. */
  field: string | RegExp;
  message: RegExp;
}

const ok = { module: 'ok', params: [1] };

const BAD: BadCase[] = [
  // ── module names ──────────────────────────────────────────────────────────────────────────
  {
    name: 'module missing',
    input: { params: [] },
    index: 0,
    field: 'module',
    message: /must be a string \(letters, digits/,
  },
  {
    name: 'module a number',
    input: { module: 42 },
    index: 0,
    field: 'module',
    message: /must be a string .*got number 42/,
  },
  { name: 'module null', input: { module: null }, index: 0, field: 'module', message: /must be a string .*got null/ },
  { name: 'module an array', input: { module: ['m'] }, index: 0, field: 'module', message: /must be a string/ },
  { name: 'module empty', input: { module: '' }, index: 0, field: 'module', message: /must be 1 to 200 characters/ },
  {
    name: 'module 201 characters',
    input: { module: 'm'.repeat(201) },
    index: 0,
    field: 'module',
    message: /must be 1 to 200 characters/,
  },
  { name: 'module ".."', input: { module: '..' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  {
    name: 'module "../etc/passwd"',
    input: { module: '../etc/passwd' },
    index: 0,
    field: 'module',
    message: MODULE_ALLOWED,
  },
  {
    name: 'module ".." in the middle',
    input: { module: 'a/../../b' },
    index: 0,
    field: 'module',
    message: MODULE_ALLOWED,
  },
  { name: 'module "." segment', input: { module: 'a/./b' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  {
    name: 'module absolute path',
    input: { module: '/etc/passwd' },
    index: 0,
    field: 'module',
    message: MODULE_ALLOWED,
  },
  { name: 'module with NUL', input: { module: 'ok\0.js' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  { name: 'module with backslash', input: { module: 'sub\\name' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  {
    name: 'module Windows absolute',
    input: { module: 'C:\\tasks\\m' },
    index: 0,
    field: 'module',
    message: MODULE_ALLOWED,
  },
  { name: 'module Windows ".." ', input: { module: '..\\..\\m' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  { name: 'module leading "."', input: { module: '.env' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  { name: 'module empty segment', input: { module: 'a//b' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  { name: 'module trailing "/"', input: { module: 'a/' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  { name: 'module with space', input: { module: 'my task' }, index: 0, field: 'module', message: MODULE_ALLOWED },
  {
    name: 'module with shell characters',
    input: { module: 'm;rm -rf' },
    index: 0,
    field: 'module',
    message: MODULE_ALLOWED,
  },
  {
    name: 'module percent-encoded ".."',
    input: { module: '%2e%2e/m' },
    index: 0,
    field: 'module',
    message: MODULE_ALLOWED,
  },
  {
    name: 'module file URL',
    input: { module: 'file:///etc/passwd' },
    index: 0,
    field: 'module',
    message: MODULE_ALLOWED,
  },
  { name: 'module non-ASCII', input: { module: 'tâche' }, index: 0, field: 'module', message: MODULE_ALLOWED },

  // ── params: prototype pollution and nesting ──────────────────────────────────────────────
  {
    name: '__proto__ in params (JSON text)',
    input: () => JSON.parse('{"module":"m","params":[{"__proto__":{"polluted":1}}]}'),
    index: 0,
    field: 'params[0].__proto__',
    message: POISON('__proto__'),
  },
  {
    name: '__proto__ as a lone params object (JSON text)',
    input: () => JSON.parse('{"module":"m","params":{"__proto__":{"polluted":1}}}'),
    index: 0,
    field: 'params.__proto__',
    message: POISON('__proto__'),
  },
  {
    name: 'constructor.prototype in params (JSON text)',
    input: () => JSON.parse('{"module":"m","params":[{"constructor":{"prototype":{"polluted":1}}}]}'),
    index: 0,
    field: 'params[0].constructor',
    message: POISON('constructor'),
  },
  {
    name: 'prototype deep inside params',
    input: { module: 'm', params: [{ a: { b: [1, { prototype: { polluted: 1 } }] } }] },
    index: 0,
    field: 'params[0].a.b[1].prototype',
    message: POISON('prototype'),
  },
  {
    name: 'poisoned key under a key containing ": " is named in full',
    input: () => JSON.parse('{"module":"m","params":[{"note: x":{"__proto__":{"polluted":1}}}]}'),
    index: 0,
    field: 'params[0].note: x.__proto__',
    message: POISON('__proto__'),
  },
  {
    name: 'params nested 100 deep',
    input: { module: 'm', params: [nested(100)] },
    index: 0,
    field: /^params(\[0\]){60,}$/,
    message: DEPTH,
  },
  {
    name: 'params nested 10000 deep (JSON text)',
    input: `{"module":"m","params":${'['.repeat(10_000)}${']'.repeat(10_000)}}`,
    index: 0,
    field: /^params(\[0\]){60,}$/,
    message: DEPTH,
  },
  {
    name: 'objects nested 100 deep in params',
    input: () => {
      let v: unknown = 1;
      for (let i = 0; i < 100; i++) v = { k: v };
      return { module: 'm', params: [v] };
    },
    index: 0,
    field: /^params\[0\](\.k){60,}$/,
    message: DEPTH,
  },

  // ── priority ─────────────────────────────────────────────────────────────────────────────
  {
    name: 'priority a string of a float',
    input: { module: 'm', priority: '50.5' },
    index: 0,
    field: 'priority',
    message: /must be an integer from -1000000 to 1000000.*got string "50.5"/,
  },
  {
    name: 'priority a word',
    input: { module: 'm', priority: 'high' },
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority a float',
    input: { module: 'm', priority: 50.5 },
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority NaN',
    input: { module: 'm', priority: Number.NaN },
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority Infinity',
    input: { module: 'm', priority: Number.POSITIVE_INFINITY },
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority -Infinity',
    input: { module: 'm', priority: Number.NEGATIVE_INFINITY },
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority above range',
    input: { module: 'm', priority: 1_000_001 },
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority below range',
    input: { module: 'm', priority: -1_000_001 },
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority 1e300',
    input: '{"module":"m","priority":1e300}',
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority null',
    input: { module: 'm', priority: null },
    index: 0,
    field: 'priority',
    message: /must be an integer.*got null/,
  },
  {
    name: 'priority boolean',
    input: { module: 'm', priority: true },
    index: 0,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'priority an object',
    input: { module: 'm', priority: { valueOf: 1 } },
    index: 0,
    field: 'priority',
    message: /got an object/,
  },

  // ── timeout ──────────────────────────────────────────────────────────────────────────────
  { name: 'timeout 0', input: { module: 'm', timeout: 0 }, index: 0, field: 'timeout', message: TIMEOUT_ALLOWED },
  {
    name: 'timeout negative',
    input: { module: 'm', timeout: -1000 },
    index: 0,
    field: 'timeout',
    message: TIMEOUT_ALLOWED,
  },
  {
    name: 'timeout a float',
    input: { module: 'm', timeout: 1500.5 },
    index: 0,
    field: 'timeout',
    message: TIMEOUT_ALLOWED,
  },
  {
    name: 'timeout 2^31',
    input: { module: 'm', timeout: MAX_TIMEOUT + 1 },
    index: 0,
    field: 'timeout',
    message: TIMEOUT_ALLOWED,
  },
  { name: 'timeout huge', input: { module: 'm', timeout: 1e20 }, index: 0, field: 'timeout', message: TIMEOUT_ALLOWED },
  {
    name: 'timeout Infinity',
    input: { module: 'm', timeout: Number.POSITIVE_INFINITY },
    index: 0,
    field: 'timeout',
    message: TIMEOUT_ALLOWED,
  },
  {
    name: 'timeout NaN',
    input: { module: 'm', timeout: Number.NaN },
    index: 0,
    field: 'timeout',
    message: TIMEOUT_ALLOWED,
  },
  {
    name: 'timeout a string',
    input: { module: 'm', timeout: '1000ms' },
    index: 0,
    field: 'timeout',
    message: /from 1 to 2147483647 or a string of one such as "5000", got string "1000ms"/,
  },

  // ── dependencies ─────────────────────────────────────────────────────────────────────────
  {
    name: 'dependencies an object',
    input: { module: 'm', dependencies: { module: 'd' } },
    index: 0,
    field: 'dependencies',
    message: /must be an array of \{"module", "params"\}, got an object/,
  },
  {
    name: 'dependencies a string',
    input: { module: 'm', dependencies: 'd' },
    index: 0,
    field: 'dependencies',
    message: /must be an array of \{"module", "params"\}/,
  },
  {
    name: 'dependencies a number',
    input: { module: 'm', dependencies: 3 },
    index: 0,
    field: 'dependencies',
    message: /must be an array/,
  },
  {
    name: 'dependency null',
    input: { module: 'm', dependencies: [null] },
    index: 0,
    field: 'dependencies[0]',
    message: /must be an object \{"module", "params"\}, got null/,
  },
  {
    name: 'dependency a bare name',
    input: { module: 'm', dependencies: ['d'] },
    index: 0,
    field: 'dependencies[0]',
    message: /must be an object \{"module", "params"\}/,
  },
  {
    name: 'dependency an array',
    input: { module: 'm', dependencies: [['d', []]] },
    index: 0,
    field: 'dependencies[0]',
    message: /must be an object/,
  },
  {
    name: 'dependency without module',
    input: { module: 'm', dependencies: [{ params: [] }] },
    index: 0,
    field: 'dependencies[0].module',
    message: /must be a string \(letters, digits/,
  },
  {
    name: 'dependency module ".."',
    input: { module: 'm', dependencies: [{ module: '../x' }] },
    index: 0,
    field: 'dependencies[0].module',
    message: MODULE_ALLOWED,
  },
  {
    name: 'dependency module absolute',
    input: { module: 'm', dependencies: [{ module: 'ok' }, { module: 'ok2' }, { module: '/bin/sh' }] },
    index: 0,
    field: 'dependencies[2].module',
    message: MODULE_ALLOWED,
  },
  {
    name: 'dependency unknown field',
    input: { module: 'm', dependencies: [{ module: 'd', priority: 5 }] },
    index: 0,
    field: 'dependencies[0].priority',
    message: /unknown field; allowed: module, params/,
  },
  {
    name: 'dependency with its own dependencies',
    input: { module: 'm', dependencies: [{ module: 'd', dependencies: [] }] },
    index: 0,
    field: 'dependencies[0].dependencies',
    message: /unknown field; allowed: module, params/,
  },
  {
    name: '__proto__ in a dependency (JSON text)',
    input: () => JSON.parse('{"module":"m","dependencies":[{"module":"d","__proto__":{"polluted":1}}]}'),
    index: 0,
    field: 'dependencies[0].__proto__',
    message: POISON('__proto__'),
  },
  {
    name: '__proto__ in dependency params (JSON text)',
    input: () => JSON.parse('{"module":"m","dependencies":[{"module":"d","params":[{"__proto__":{"polluted":1}}]}]}'),
    index: 0,
    field: 'dependencies[0].params[0].__proto__',
    message: POISON('__proto__'),
  },
  {
    name: 'dependency params nested 100 deep',
    input: { module: 'm', dependencies: [{ module: 'd', params: [nested(100)] }] },
    index: 0,
    field: /^dependencies\[0\]\.params(\[0\]){50,}$/,
    message: DEPTH,
  },
  {
    name: 'more than 1000 dependencies',
    input: { module: 'm', dependencies: Array.from({ length: 1001 }, (_, i) => ({ module: 'd', params: [i] })) },
    index: 0,
    field: 'dependencies',
    message: /has 1001 entries; at most 1000 are allowed/,
  },

  // ── self-dependency and cycles ───────────────────────────────────────────────────────────
  {
    name: 'self-dependency',
    input: { module: 'm', params: [1], dependencies: [{ module: 'm', params: [1] }] },
    index: 0,
    field: 'dependencies',
    message: /cannot depend on itself/,
  },
  {
    name: 'self-dependency, lone param vs array',
    input: { module: 'm', params: 'x', dependencies: [{ module: 'm', params: ['x'] }] },
    index: 0,
    field: 'dependencies',
    message: /cannot depend on itself/,
  },
  {
    name: 'self-dependency, object keys in another order',
    input: {
      module: 'm',
      params: [{ a: 1, b: 2 }],
      dependencies: [{ module: 'other' }, { module: 'm', params: [{ b: 2, a: 1 }] }],
    },
    index: 0,
    field: 'dependencies',
    message: /cannot depend on itself/,
  },
  {
    name: 'self-dependency at index 2 of a batch',
    input: [ok, { module: 'x' }, { module: 'y', dependencies: [{ module: 'y', params: [] }] }],
    index: 2,
    field: 'dependencies',
    message: /cannot depend on itself/,
  },

  // ── unknown fields and task shape ────────────────────────────────────────────────────────
  {
    name: 'unknown field',
    input: { module: 'm', prio: 5 },
    index: 0,
    field: 'prio',
    message: /unknown field; allowed: module, params, priority, timeout, dependencies/,
  },
  {
    name: 'misspelt params',
    input: { module: 'm', parmas: [] },
    index: 0,
    field: 'parmas',
    message: /unknown field; allowed: module, params/,
  },
  {
    name: 'top-level __proto__ (JSON text)',
    input: () => JSON.parse('{"module":"m","__proto__":{"polluted":1}}'),
    index: 0,
    field: '__proto__',
    message: /unknown field/,
  },
  {
    name: 'top-level constructor',
    input: { module: 'm', constructor: { prototype: { polluted: 1 } } },
    index: 0,
    field: 'constructor',
    message: /unknown field/,
  },
  {
    name: 'task null',
    input: [ok, null],
    index: 1,
    field: '(task)',
    message: /must be an object like \{"module": "name", "params": \[\.\.\.\]\}, got null/,
  },
  { name: 'task a number', input: 42, index: 0, field: '(task)', message: /must be an object like.*got number 42/ },
  {
    name: 'task a bare module name in a batch',
    input: [ok, ok, 'm'],
    index: 2,
    field: '(task)',
    message: /must be an object like/,
  },
  {
    name: 'task a nested array',
    input: [[ok]],
    index: 0,
    field: '(task)',
    message: /must be an object like.*got an array/,
  },
  { name: 'JSON text of a bare string', input: '"m"', index: 0, field: '(task)', message: /must be an object like/ },
  {
    name: 'created negative',
    input: { module: 'm', created: -1 },
    index: 0,
    field: 'created',
    message: /must be unix seconds \(a non-negative number\)/,
  },
  {
    name: 'created a date string',
    input: { module: 'm', created: '2015-06-01' },
    index: 0,
    field: 'created',
    message: /must be unix seconds/,
  },
  {
    name: 'queue with ":"',
    input: { module: 'm', queue: 'a:b' },
    index: 0,
    field: 'queue',
    message: /must be a queue name of letters, digits/,
  },

  // ── batch, payload and JSON text ─────────────────────────────────────────────────────────
  { name: 'empty batch', input: [], index: -1, field: '(batch)', message: /is empty: send at least one task/ },
  {
    name: 'empty batch as JSON text',
    input: '[]',
    index: -1,
    field: '(batch)',
    message: /is empty: send at least one task/,
  },
  {
    name: 'too many tasks',
    input: [ok, ok, ok, ok],
    opts: { limits: { maxBatch: 3, maxPayloadBytes: 1e6 } },
    index: -1,
    field: '(batch)',
    message: /has 4 tasks; at most 3 are allowed in one batch/,
  },
  {
    name: 'too many tasks as JSON text',
    input: JSON.stringify(Array.from({ length: 11 }, (_, i) => ({ module: 'm', params: [i] }))),
    opts: { limits: { maxBatch: 10, maxPayloadBytes: 1e6 } },
    index: -1,
    field: '(batch)',
    message: /at most 10 are allowed/,
  },
  {
    name: 'oversize payload (object)',
    input: { module: 'm', params: ['x'.repeat(300)] },
    opts: { limits: { maxBatch: 10, maxPayloadBytes: 256 } },
    index: -1,
    field: '(payload)',
    message: /larger than 256 bytes/,
  },
  {
    name: 'oversize payload (JSON text)',
    input: JSON.stringify({ module: 'm', params: ['x'.repeat(300)] }),
    opts: { limits: { maxBatch: 10, maxPayloadBytes: 256 } },
    index: -1,
    field: '(payload)',
    message: /larger than 256 bytes/,
  },
  {
    name: 'oversize payload counted in bytes, not characters',
    input: JSON.stringify({ module: 'm', params: ['é'.repeat(200)] }), // ~230 characters, ~430 bytes
    opts: { limits: { maxBatch: 10, maxPayloadBytes: 256 } },
    index: -1,
    field: '(payload)',
    message: /larger than 256 bytes/,
  },
  { name: 'invalid JSON text', input: '{"module": "m",', index: -1, field: '(payload)', message: /not valid JSON/ },
  {
    name: 'JSON text with a trailing comma',
    input: '[{"module":"m"},]',
    index: -1,
    field: '(payload)',
    message: /not valid JSON/,
  },
  { name: 'empty string', input: '', index: -1, field: '(payload)', message: /not valid JSON/ },
  { name: 'circular object', input: circular, index: -1, field: '(payload)', message: /cannot be serialised as JSON/ },
  {
    name: 'BigInt param',
    input: { module: 'm', params: [10n] },
    index: -1,
    field: '(payload)',
    message: /cannot be serialised as JSON/,
  },

  // ── one bad task among good ones ─────────────────────────────────────────────────────────
  {
    name: 'bad priority at index 2 of 4',
    input: [ok, { module: 'b' }, { module: 'c', priority: 'nine' }, { module: 'd' }],
    index: 2,
    field: 'priority',
    message: PRIORITY_ALLOWED,
  },
  {
    name: 'bad module at index 3 of 4',
    input: [ok, { module: 'b' }, { module: 'c' }, { module: '../d' }],
    index: 3,
    field: 'module',
    message: MODULE_ALLOWED,
  },
  {
    name: 'bad task at index 1 of JSON text',
    input: JSON.stringify([ok, { module: 'b', timeout: 0 }, { module: 'c' }]),
    index: 1,
    field: 'timeout',
    message: TIMEOUT_ALLOWED,
  },
  {
    name: 'poison at index 1 of JSON text',
    input: '[{"module":"a"},{"module":"b","params":[{"x":{"__proto__":{"polluted":1}}}]},{"module":"c"}]',
    index: 1,
    field: 'params[0].x.__proto__',
    message: POISON('__proto__'),
  },
];

function optsWith(extra?: Partial<ValidateOptions>): ValidateOptions {
  return { ...OPTS, ...extra };
}

/** Runs validation expecting an InvalidTaskError and returns its problems. */
function problemsOf(input: unknown, opts: ValidateOptions = OPTS): TaskProblem[] {
  let thrown: unknown;
  try {
    validateTasks(input, opts);
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected validation to throw').toBeInstanceOf(InvalidTaskError);
  const err = thrown as InvalidTaskError;
  expect(err.code).toBe('TASK_INVALID');
  expect(err.problems.length).toBeGreaterThan(0);
  return err.problems;
}

function expectNotPolluted(): void {
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.prototype).not.toHaveProperty('polluted');
  expect(Object.getPrototypeOf({})).toBe(Object.prototype);
}

describe('validateTasks: bad inputs', () => {
  it.each(BAD.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const input = typeof c.input === 'function' ? (c.input as () => unknown)() : c.input;
    const problems = problemsOf(input, optsWith(c.opts));
    const hit = problems.find(
      (p) => p.index === c.index && (typeof c.field === 'string' ? p.field === c.field : c.field.test(p.field)),
    );
    expect(
      hit,
      `no problem at index ${c.index} field ${String(c.field)} in ${JSON.stringify(problems).slice(0, 500)}`,
    ).toBeDefined();
    expect(hit!.message).toMatch(c.message);
    // The error's own message carries the same answer for callers that only log it.
    const err = (() => {
      try {
        validateTasks(input, optsWith(c.opts));
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    expect(err!.message).toContain(`task[${c.index}].`);
    expectNotPolluted();
  });
});

describe('validateTasks: batches', () => {
  it('names only the bad task of a batch', () => {
    const problems = problemsOf([ok, { module: 'b' }, { module: 'c', priority: 'high' }, { module: 'd' }]);
    expect(problems).toEqual([{ index: 2, field: 'priority', message: expect.stringMatching(PRIORITY_ALLOWED) }]);
  });

  it('collects every problem of every task, each with its index and field', () => {
    const problems = problemsOf([{ module: '../a', priority: 1.5 }, ok, { module: 'c', timeout: 0, extra: true }]);
    expect(problems.map((p) => [p.index, p.field])).toEqual(
      expect.arrayContaining([
        [0, 'module'],
        [0, 'priority'],
        [2, 'timeout'],
        [2, 'extra'],
      ]),
    );
    expect(problems.some((p) => p.index === 1)).toBe(false);
  });

  it('refuses a cycle of two tasks in one batch, naming a task of the cycle', () => {
    const problems = problemsOf([
      { module: 'a', dependencies: [{ module: 'b', params: [] }] },
      { module: 'b', dependencies: [{ module: 'a', params: [] }] },
    ]);
    expect(problems).toHaveLength(1);
    expect([0, 1]).toContain(problems[0]!.index);
    expect(problems[0]!.field).toBe('dependencies');
    expect(problems[0]!.message).toMatch(/forms a cycle with task\[[01]\] in the same batch/);
  });

  it('refuses a longer cycle among good tasks, naming a task of the cycle', () => {
    const problems = problemsOf([
      ok,
      { module: 'a', params: [1], dependencies: [{ module: 'b', params: 2 }] },
      { module: 'b', params: [2], dependencies: [{ module: 'c', params: [{ k: 3 }] }] },
      {
        module: 'c',
        params: { k: 3 },
        dependencies: [
          { module: 'a', params: [1] },
          { module: 'ok', params: [1] },
        ],
      },
    ]);
    expect(problems).toHaveLength(1);
    expect([1, 2, 3]).toContain(problems[0]!.index);
    expect(problems[0]!.field).toBe('dependencies');
    expect(problems[0]!.message).toMatch(/forms a cycle with task\[[123]\] in the same batch/);
  });

  it.each([
    ['before', 2],
    ['after', 1],
  ])(
    'refuses a cycle through a module+params that the batch holds twice, listed %s the plain copy',
    (_where, plainAt) => {
      // "a" waits for record(B); one copy of record(B) waits for "a". TaskClient makes the first
      // copy a flow child of "a" whose own gate waits for "a": neither could ever start.
      const cyclic = { module: 'b', params: [1], dependencies: [{ module: 'a', params: [] }] };
      const plain = { module: 'b', params: [1] };
      const batch = [
        { module: 'a', dependencies: [{ module: 'b', params: [1] }] },
        plainAt === 2 ? cyclic : plain,
        plainAt === 2 ? plain : cyclic,
      ];
      const problems = problemsOf(batch);
      expect(problems).toHaveLength(1);
      expect(problems[0]!.field).toBe('dependencies');
      expect(problems[0]!.message).toMatch(/forms a cycle with task\[\d\] in the same batch/);
    },
  );

  it('refuses a cycle given as JSON text', () => {
    const problems = problemsOf(
      JSON.stringify([
        { module: 'a', dependencies: [{ module: 'b', params: [] }] },
        { module: 'b', dependencies: [{ module: 'a', params: [] }] },
      ]),
    );
    expect(problems[0]!.message).toMatch(/cycle/);
  });

  it('accepts a diamond (a DAG, not a tree) and dependencies outside the batch', () => {
    const tasks = validateTasks(
      [
        { module: 'top', dependencies: [{ module: 'left' }, { module: 'right' }] },
        { module: 'left', dependencies: [{ module: 'base' }] },
        { module: 'right', dependencies: [{ module: 'base' }, { module: 'elsewhere', params: [7] }] },
        { module: 'base' },
      ],
      OPTS,
    );
    expect(tasks.map((t) => t.module)).toEqual(['top', 'left', 'right', 'base']);
  });

  it('accepts a batch of exactly maxBatch tasks', () => {
    const batch = Array.from({ length: 3 }, (_, i) => ({ module: 'm', params: [i] }));
    expect(validateTasks(batch, optsWith({ limits: { maxBatch: 3, maxPayloadBytes: 1e6 } }))).toHaveLength(3);
  });
});

describe('validateTasks: prototype pollution', () => {
  const payloads = [
    '{"module":"m","params":[{"__proto__":{"polluted":1}}]}',
    '{"module":"m","params":{"__proto__":{"polluted":1}}}',
    '[{"module":"m"},{"module":"n","params":[{"a":[{"__proto__":{"polluted":1}}]}]}]',
    '{"module":"m","params":[{"constructor":{"prototype":{"polluted":1}}}]}',
    '{"module":"m","dependencies":[{"module":"d","params":[{"__proto__":{"polluted":1}}]}]}',
    '{"module":"m","dependencies":[{"module":"d","__proto__":{"polluted":1}}]}',
    '{"module":"m","__proto__":{"polluted":1}}',
  ];

  it.each(payloads)('refuses %s, parsed or as text, and Object.prototype stays clean', (text) => {
    expect(problemsOf(JSON.parse(text)).length).toBeGreaterThan(0);
    expect(problemsOf(text).length).toBeGreaterThan(0);
    expectNotPolluted();
  });

  it('does not mistake harmless look-alike keys for poison', () => {
    const [t] = validateTasks(
      { module: 'm', params: [{ proto: 1, __proto: 2, constructorName: 3, prototypes: 4, _id: 5 }] },
      OPTS,
    );
    expect(t!.params).toEqual([{ proto: 1, __proto: 2, constructorName: 3, prototypes: 4, _id: 5 }]);
  });

  it('accepts params nested well within the limit', () => {
    const [t] = validateTasks({ module: 'm', params: [nested(30)] }, OPTS);
    expect(t!.params).toEqual([nested(30)]);
  });
});

describe('validateTasks: good inputs', () => {
  it('applies defaults', () => {
    expect(validateTasks({ module: 'm' }, OPTS)).toEqual([
      { module: 'm', params: [], priority: 50, timeout: 300_000, dependencies: [], created: NOW },
    ]);
  });

  it('takes defaults from the options', () => {
    const [t] = validateTasks({ module: 'm' }, optsWith({ defaults: { priority: 7, timeout: 1234 } }));
    expect(t).toMatchObject({ priority: 7, timeout: 1234 });
  });

  it('wraps a lone object params as one parameter', () => {
    const [t] = validateTasks({ module: 'm', params: { ticker: 'AAPL' } }, OPTS);
    expect(t!.params).toEqual([{ ticker: 'AAPL' }]);
  });

  it.each([
    ['a string', 'AAPL', ['AAPL']],
    ['a number', 0, [0]],
    ['false', false, [false]],
    ['null', null, []],
    ['an array', [1, 'two', { three: 3 }], [1, 'two', { three: 3 }]],
    ['an empty array', [], []],
  ])('params %s', (_what, params, expected) => {
    const [t] = validateTasks({ module: 'm', params }, OPTS);
    expect(t!.params).toEqual(expected);
  });

  it('wraps a lone dependency params the same way, and keeps a dependency without params as any task of its module', () => {
    const [t] = validateTasks(
      { module: 'm', dependencies: [{ module: 'd', params: { x: 1 } }, { module: 'e' }] },
      OPTS,
    );
    expect(t!.dependencies).toEqual([{ module: 'd', params: [{ x: 1 }] }, { module: 'e' }]);
  });

  it('ignores legacy _id, assigned, __v and id on tasks and dependencies', () => {
    const [t] = validateTasks(
      {
        _id: '55a0c5e8f1d2a3b4c5d6e7f8',
        id: 'x',
        assigned: 1433160000,
        __v: 0,
        module: 'm',
        params: [1],
        dependencies: [{ _id: '55a0c5e8f1d2a3b4c5d6e7f9', module: 'd', params: [] }],
      },
      OPTS,
    );
    expect(t).toEqual({
      module: 'm',
      params: [1],
      priority: 50,
      timeout: 300_000,
      dependencies: [{ module: 'd', params: [] }],
      created: NOW,
    });
  });

  it('keeps given values: boundaries, created, queue, nested module names', () => {
    const tasks = validateTasks(
      [
        { module: 'sub/dir/name-1_v2.js', priority: 1_000_000, timeout: 1 },
        { module: 'm', priority: -1_000_000, timeout: MAX_TIMEOUT, created: 1433160000, queue: 'gpu.jobs-1' },
        { module: 'm', params: [2], dependencies: null, priority: 0 },
      ],
      OPTS,
    );
    expect(tasks[0]).toMatchObject({ module: 'sub/dir/name-1_v2.js', priority: 1_000_000, timeout: 1 });
    expect(tasks[1]).toMatchObject({
      priority: -1_000_000,
      timeout: MAX_TIMEOUT,
      created: 1433160000,
      queue: 'gpu.jobs-1',
    });
    expect(tasks[2]).toMatchObject({ priority: 0, dependencies: [] });
    expect(tasks[0]).not.toHaveProperty('queue');
  });

  it('accepts a task, an array, or JSON text of either', () => {
    const one = { module: 'm', params: [1], priority: 60 };
    const expected = [{ module: 'm', params: [1], priority: 60, timeout: 300_000, dependencies: [], created: NOW }];
    expect(validateTasks(one, OPTS)).toEqual(expected);
    expect(validateTasks([one], OPTS)).toEqual(expected);
    expect(validateTasks(JSON.stringify(one), OPTS)).toEqual(expected);
    expect(validateTasks(JSON.stringify([one, one]), OPTS)).toEqual([...expected, ...expected]);
  });

  it('checks module names without a tasks folder too', () => {
    const noDir = { ...OPTS, tasksDir: undefined };
    expect(validateTasks({ module: 'a/b' }, noDir)).toHaveLength(1);
    expect(problemsOf({ module: '../a' }, noDir)[0]!.field).toBe('module');
  });

  it('a dependency on the same module with other params is not a self-dependency', () => {
    const [t] = validateTasks({ module: 'm', params: [1], dependencies: [{ module: 'm', params: [2] }] }, OPTS);
    expect(t!.dependencies).toEqual([{ module: 'm', params: [2] }]);
  });
});

describe('TaskClient.add on Redis: a bad batch adds nothing', () => {
  const h = useHarness();

  async function jobCount(client: ReturnType<typeof h.client>): Promise<number> {
    const counts = await client.queue().getJobCounts();
    return Object.values(counts).reduce((a, b) => a + b, 0);
  }

  it('refuses a batch with one bad task and leaves Redis untouched', async () => {
    const client = h.client();
    const batch = [
      { module: 'record', params: [{ n: 1 }] },
      { module: 'record', params: [{ n: 2 }], dependencies: [{ module: 'record', params: [{ n: 1 }] }] },
      { module: 'record', params: [{ n: 3 }], priority: 'high' },
      { module: 'record', params: [{ n: 4 }] },
    ];
    const err = await (async () => client.add(batch))().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidTaskError);
    expect((err as InvalidTaskError).problems).toEqual([
      { index: 2, field: 'priority', message: expect.stringMatching(PRIORITY_ALLOWED) },
    ]);
    // Keys first: the Queue object that counts jobs writes its own meta key.
    expect(await h.redis.keys(`${h.prefix}:*`)).toEqual([]);
    expect(await jobCount(client)).toBe(0);

    // The good tasks were not claimed either: added on their own they are new, not duplicates.
    const added = await client.add(batch.filter((_, i) => i !== 2));
    expect(added.map((a) => a.duplicate)).toEqual([false, false, false]);
    expect(await jobCount(client)).toBe(3);
  });

  it('answers invalid input with a rejected promise, never a synchronous throw', async () => {
    // Callers write `client.add(batch).then(confirm, refuse)` (the bridge, the CLI); a
    // synchronous throw would skip `refuse` and escape the caller's event handler instead.
    const client = h.client();
    let result: Promise<unknown> | undefined;
    expect(() => {
      result = client.add([{ module: 'record' }, { module: '../etc/passwd' }]);
    }).not.toThrow();
    await expect(result).rejects.toBeInstanceOf(InvalidTaskError);
    expect(await jobCount(client)).toBe(0);
  });

  it('refuses bad JSON text, cycles and poison without adding to a queue that already has jobs', async () => {
    const client = h.client();
    await client.add([{ module: 'record', params: [{ n: 'kept' }] }]);
    const before = await jobCount(client);
    const keysBefore = (await h.redis.keys(`${h.prefix}:*`)).sort();
    expect(before).toBe(1);

    const bad: unknown[] = [
      '[{"module":"record"},{"module":"record","params":[1]},',
      JSON.stringify([
        { module: 'record', params: [9], dependencies: [{ module: 'record', params: [8] }] },
        { module: 'record', params: [8], dependencies: [{ module: 'record', params: [9] }] },
      ]),
      '[{"module":"record","params":[5]},{"module":"record","params":[{"__proto__":{"polluted":1}}]}]',
      [
        { module: 'record', params: [6] },
        { module: 'record', params: [7], timeout: 0 },
      ],
      [],
    ];
    for (const input of bad) {
      await expect(async () => client.add(input)).rejects.toBeInstanceOf(InvalidTaskError);
    }
    expectNotPolluted();
    expect(await jobCount(client)).toBe(before);
    expect((await h.redis.keys(`${h.prefix}:*`)).sort()).toEqual(keysBefore);
  });
});
