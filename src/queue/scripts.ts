import { readFileSync } from 'node:fs';
import { FLOW_SCRIPTS, RELEASE_SCRIPT } from './bullmq/flow-commands.ts';
import { embedBullmqScripts } from './bullmq/lua-split.ts';
import { spliceIntoMoveToFinished } from './bullmq/move-to-finished.ts';
import { parentMoverAsFunction } from './bullmq/parent-mover.ts';
import { promoteAsFunction } from './bullmq/promote.ts';
import { removeJobAsFunction, spliceIntoRemoveJob } from './bullmq/remove-job.ts';
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

/** Starts the message of the error the add script stops with when a batch cannot be written. */
export const ADD_REFUSED = 'TM_ADD_REFUSED';

/** add.lua, after BullMQ's scripts a flow is written with, embedded as functions. */
export const addScript = once(() => {
  const constants = `local RELEASE, REFUSED = ${RELEASE_SCRIPT + 1}, '${ADD_REFUSED}'`;
  return `${embedBullmqScripts(FLOW_SCRIPTS, 'bullmqScripts')}\n${constants}\n${lua('add')}`;
});

/** cancel.lua, after BullMQ's removeJob and moveParentToWaitIfNeeded as functions. */
export const cancelScript = once(() => {
  const what = 'the cancel script';
  return `local rcall = redis.call\n${removeJobAsFunction(what)}\n${parentMoverAsFunction(what)}\n${lua('cancel')}`;
});

/** open-gates.lua, after BullMQ's promote as a function. */
export const openGatesScript = once(() => `${promoteAsFunction('the gate opening script')}\n${lua('open-gates')}`);

/**
 * BullMQ's removeJob with remove-finished.lua spliced in; undefined when BullMQ's script no
 * longer has the line it goes after.
 */
export const removeFinishedScript = once(() => spliceIntoRemoveJob(lua('remove-finished')));
