import { readFileSync } from 'node:fs';
import { spliceIntoMoveToFinished } from './bullmq/move-to-finished.ts';
import { checkPinnedVersions } from './bullmq/versions.ts';

/**
 * Every Lua script Taskmaster sends to Redis, gathered here: ours are the files of lua/ (each
 * opening with its KEYS and ARGV), shared pieces in lua/includes/; where a script is BullMQ's
 * own with ours in it, the assembly is a function of bullmq/. Each is read and built once per
 * process.
 */

/** `--@include "<file>"` on a line of its own: the file of lua/includes/ goes in its place. */
const INCLUDE = /^[ \t]*--@include "([\w-]+\.lua)"[ \t]*$/gm;
const built = new Map<string, string>();

function read(path: string): string {
  return readFileSync(new URL(`./lua/${path}`, import.meta.url), 'utf8').replace(/\n$/, '');
}

/**
 * The file `lua/<name>.lua` with its includes resolved, recursively; an include already put in
 * the script is left out the second time (its functions are defined already).
 */
export function lua(name: string): string {
  let text = built.get(name);
  if (text === undefined) {
    checkPinnedVersions();
    const seen = new Set<string>();
    const resolve = (source: string): string =>
      source.replace(INCLUDE, (_, file: string) => {
        if (seen.has(file)) return '';
        seen.add(file);
        return resolve(read(`includes/${file}`));
      });
    text = resolve(read(`${name}.lua`));
    built.set(name, text);
  }
  return text;
}

/** Builds a script once, the first time it is asked for. */
function once<T>(build: () => T): () => T {
  let value: { v: T } | undefined;
  return () => (value ??= { v: build() }).v;
}

/**
 * BullMQ's finishing script with finish-record.lua spliced in; undefined when BullMQ's script no
 * longer has the line it goes after.
 */
export const finishScript = once(() => spliceIntoMoveToFinished(lua('finish-record')));
