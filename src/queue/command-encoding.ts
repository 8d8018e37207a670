import { Command, type Redis } from 'ioredis';
import { setScriptCommandClass } from './bullmq/script-command-class.ts';

/**
 * The RESP encoding of a command, as ioredis sends it: `*<n>`, then `$<bytes>` and the bytes of
 * the name and of each argument. The strings between Buffer arguments are joined into one run
 * and converted to bytes once. (ioredis encodes any command that holds a Buffer piece by piece,
 * measuring each string three times and copying each on its own; BullMQ's finishing command
 * holds one, its packed options, and is sent once per job, so that was a noticeable part of
 * what a worker spends on a job.)
 */
export function encodeCommand(name: string, args: readonly unknown[]): string | Buffer {
  let run = `*${args.length + 1}\r\n$${Buffer.byteLength(name)}\r\n${name}\r\n`;
  let chunks: (string | Buffer)[] | undefined;
  for (const arg of args) {
    if (Buffer.isBuffer(arg)) {
      (chunks ??= []).push(`${run}$${arg.length}\r\n`, arg);
      run = '\r\n';
    } else {
      // As ioredis makes its arguments: null and undefined are empty, anything else String().
      const s = typeof arg === 'string' ? arg : arg === null || arg === undefined ? '' : String(arg);
      run += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
    }
  }
  if (!chunks) return run;
  chunks.push(run);
  const buffers = chunks.map((c) => (typeof c === 'string' ? Buffer.from(c, 'utf8') : c));
  return Buffer.concat(buffers);
}

/** A Command whose encoding is encodeCommand's. */
class EncodedCommand extends Command {
  override toWritable(): string | Buffer {
    return encodeCommand(this.name, this.args);
  }
}

/**
 * Makes the commands of the script defined on `connection` as `name` (Redis#defineCommand) be
 * encoded by encodeCommand, and no other's; false, changing nothing, where ioredis no longer
 * lets that be done (see setScriptCommandClass).
 */
export function encodeScriptCommands(connection: Redis, name: string): boolean {
  return setScriptCommandClass(connection, name, EncodedCommand);
}
