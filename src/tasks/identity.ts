import { hash as digest, randomBytes } from 'node:crypto';
import { types } from 'node:util';

/**
 * JSON with object keys sorted at every depth, so that `{a:1,b:2}` and `{b:2,a:1}` name the
 * same task (the 2016 master matched tasks by an upsert on module, params and dependencies).
 * Keys aside, it is what JSON.stringify writes — toJSON honoured at every depth, boxed values
 * unwrapped, undefined and functions dropped from objects and null in arrays — so an identity
 * follows exactly the JSON that is stored.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(jsonValue(value, ''));
}

const isRawJson = (JSON as { isRawJSON?: (v: unknown) => boolean }).isRawJSON;

/**
 * The value JSON.stringify would serialise in place of `value` (found under `key`, what a
 * toJSON is handed), as plain JSON data with object keys sorted; undefined where JSON writes
 * nothing. Built as a copy and stringified once, as JSON.stringify with a replacer is slower.
 */
function jsonValue(value: unknown, key: string | number): unknown {
  const type = typeof value;
  if (value !== null && (type === 'object' || type === 'function' || type === 'bigint')) {
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') value = toJSON.call(value, String(key));
  }
  if (value === null || typeof value !== 'object') return plain(value);
  if (Array.isArray(value)) {
    const out: unknown[] = new Array(value.length);
    for (let i = 0; i < value.length; i++) out[i] = jsonValue(value[i], i) ?? null;
    return out;
  }
  // Plain objects, most of what params hold, need neither test.
  if (Object.getPrototypeOf(value) !== Object.prototype) {
    if (types.isBoxedPrimitive(value) && !types.isSymbolObject(value)) return unboxed(value);
    if (isRawJson?.(value)) return value;
  }
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value as object).sort()) {
    const v = jsonValue((value as Record<string, unknown>)[k], k);
    if (v === undefined) continue;
    // An own `__proto__` key stays a key (plain assignment would set the prototype).
    if (k === '__proto__') {
      Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
    } else out[k] = v;
  }
  return out;
}

/** A primitive as JSON writes it: functions, symbols and undefined are nothing. */
function plain(value: unknown): unknown {
  const type = typeof value;
  return type === 'function' || type === 'symbol' ? undefined : value;
}

/** Boxed primitives as JSON.stringify unwraps them (a boxed BigInt stays, and throws there). */
function unboxed(value: object): unknown {
  if (types.isNumberObject(value)) return Number(value);
  if (types.isStringObject(value)) return String(value);
  return types.isBooleanObject(value) ? value.valueOf() : value;
}

/**
 * `params` as the job data stores them: under the key "params" (what a toJSON on the array
 * itself is handed), or null where they serialise to nothing, as an array element would.
 */
function paramsJson(params: readonly unknown[]): string {
  return JSON.stringify(jsonValue(params, 'params') ?? null);
}

function hash(text: string): string {
  return digest('sha256', text, 'base64url');
}

/**
 * What dependents wait for: a module with its parameters (and its scope, when it has one),
 * whatever that task itself waits on. A task without a scope keeps the key it always had.
 */
export function dependencyKey(module: string, params: readonly unknown[], scope?: string): string {
  // The canonical JSON of [module, params] or [module, params, scope].
  const tail = scope === undefined ? '' : `,${JSON.stringify(scope)}`;
  return hash(`[${JSON.stringify(module)},${paramsJson(params)}${tail}]`);
}

/**
 * What a dependency on any task of a module waits for: a record, kept up to date by every
 * completion of a task of that module, under this key. `m:` and the SHA-1 of the name, which
 * Redis scripts can compute too (redis.sha1hex), and which no other key (base64url, no ':')
 * can be. Memoised: every completion asks for its module's.
 */
export function moduleKey(module: string): string {
  let key = moduleKeys.get(module);
  if (key === undefined) {
    if (moduleKeys.size >= MODULE_KEYS_MAX) moduleKeys.clear();
    moduleKeys.set(module, (key = `m:${digest('sha1', module, 'hex')}`));
  }
  return key;
}

const moduleKeys = new Map<string, string>();
const MODULE_KEYS_MAX = 10_000;

/**
 * The key a dependency names: the identity of a task (see dependencyKey) when it gives params,
 * or, without params, its module (any task of that module; see moduleKey).
 */
export function dependencyRefKey(dep: { module: string; params?: readonly unknown[]; scope?: string }): string {
  return dep.params === undefined ? moduleKey(dep.module) : dependencyKey(dep.module, dep.params, dep.scope);
}

/**
 * What deduplicates: module, parameters, scope and the set of dependencies (their order does
 * not matter). A task without dependencies is identified by its dependency key (`ownKey`, when
 * already computed, saves hashing again); the two never collide, as they hash differently
 * shaped JSON (a scope is a string where dependency keys are an array).
 */
export function taskKey(
  module: string,
  params: readonly unknown[],
  dependencyKeys: readonly string[],
  scope?: string,
  ownKey?: string,
): string {
  if (!dependencyKeys.length) return ownKey ?? dependencyKey(module, params, scope);
  // The canonical JSON of [module, params, dependency keys sorted] (and the scope after them).
  const tail = scope === undefined ? '' : `,${JSON.stringify(scope)}`;
  return hash(`[${JSON.stringify(module)},${paramsJson(params)},${JSON.stringify([...dependencyKeys].sort())}${tail}]`);
}

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

/**
 * Job ids Taskmaster assigns: 't' and 14 random letters or digits (~83 bits). A letter first
 * keeps them apart from BullMQ's numeric ids and from command-line flags.
 */
export function newTaskId(): string {
  return newTaskIds(1)[0]!;
}

/** `count` new ids from one call to the random source. */
export function newTaskIds(count: number): string[] {
  const bytes = randomBytes(14 * count);
  const ids: string[] = new Array(count);
  for (let i = 0; i < count; i++) {
    let id = 't';
    for (let j = i * 14; j < i * 14 + 14; j++) id += ALPHABET[bytes[j]! % 62];
    ids[i] = id;
  }
  return ids;
}
