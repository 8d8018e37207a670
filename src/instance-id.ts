import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/** This process as other processes see it in names: `<host>:<pid>`. */
export function processName(): string {
  return `${hostname()}:${process.pid}`;
}

/**
 * A new id for one process root (a master, a worker process): its process name and a random
 * part, so that a restarted process with a reused pid, or two roots in one process (tests), are
 * told apart. It names the root's consumer entry, its bridge, and its hold on the archiver's lock.
 */
export function newInstanceId(): string {
  return `${processName()}:${randomBytes(3).toString('hex')}`;
}
