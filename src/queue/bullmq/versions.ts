import { createRequire } from 'node:module';
import process from 'node:process';
import { version as bullmq } from 'bullmq/dist/esm/version.js';
import { LibraryVersionError } from './errors.ts';

/** The versions whose internals the files of this folder were written against (as package.json pins them). */
export const PINNED = { bullmq: '6.7.0', ioredis: '5.9.2' } as const;

/** BullMQ's version as it names its scripts on a connection (`<script>:<version>`). */
export const bullmqVersion: string = bullmq;

/** The installed versions of BullMQ and ioredis. */
export function installedVersions(): Record<keyof typeof PINNED, string> {
  const ioredis = (createRequire(import.meta.url)('ioredis/package.json') as { version: string }).version;
  return { bullmq, ioredis };
}

/** An error naming each library whose installed version is not the pinned one; undefined when all are. */
export function versionMismatch(installed = installedVersions()): LibraryVersionError | undefined {
  const differ = (Object.keys(PINNED) as (keyof typeof PINNED)[]).filter((lib) => installed[lib] !== PINNED[lib]);
  if (!differ.length) return undefined;
  const what = differ.map((lib) => `${lib} ${installed[lib]} is installed, Taskmaster is built for ${PINNED[lib]}`);
  return new LibraryVersionError(
    `${what.join('; ')}: the scripts and members of theirs it reaches into (src/queue/bullmq/) may differ; ` +
      'each is checked for its shape where it is used, and falls back or stops with BULLMQ_SHAPE where it changed',
  );
}

let checked = false;

/**
 * Warns once per process (a process warning, code LIBRARY_VERSION) when BullMQ or ioredis is
 * not the pinned version. Called when the first of Taskmaster's scripts is built, which every
 * process that talks to Redis does as it starts.
 */
export function checkPinnedVersions(): void {
  if (checked) return;
  checked = true;
  const mismatch = versionMismatch();
  if (mismatch) process.emitWarning(mismatch.message, { type: mismatch.name, code: mismatch.code });
}
