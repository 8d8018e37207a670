import { createHash, randomBytes } from 'node:crypto';

/**
 * JSON with object keys sorted at every depth, so that `{a:1,b:2}` and `{b:2,a:1}` name the
 * same task (the 2016 master matched tasks by an upsert on module, params and dependencies).
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object' && (value as object).constructor !== Date) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}

/** What dependents wait for: a module with its parameters, whatever that task itself waits on. */
export function dependencyKey(module: string, params: readonly unknown[]): string {
  return hash(canonicalJson([module, params]));
}

/**
 * What deduplicates: module, parameters and the set of dependencies (their order does not
 * matter). A task without dependencies is identified by its dependency key (`ownKey`, when
 * already computed, saves hashing again); the two never collide, as they hash differently
 * shaped JSON.
 */
export function taskKey(module: string, params: readonly unknown[], dependencyKeys: readonly string[], ownKey?: string): string {
  if (!dependencyKeys.length) return ownKey ?? dependencyKey(module, params);
  return hash(canonicalJson([module, params, [...dependencyKeys].sort()]));
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
