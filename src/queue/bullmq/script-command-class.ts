import { Command, type Redis } from 'ioredis';

type ScriptsSet = Record<string, { Command?: { prototype: object } }>;

/**
 * Makes the commands of the script defined on `connection` as `name` (Redis#defineCommand) be
 * instances of `Encoded`, a subclass of ioredis's Command (one that encodes them its own way).
 * ioredis gives each defined script a command class of its own, kept in its private
 * `scriptsSet`, whose toWritable picks EVAL or EVALSHA and then calls its parent's; that parent
 * becomes `Encoded`, so this script's commands change and no other's do. Returns false,
 * changing nothing, where ioredis no longer has that shape.
 */
export function setScriptCommandClass(connection: Redis, name: string, Encoded: typeof Command): boolean {
  const scripts = (connection as unknown as { scriptsSet?: ScriptsSet }).scriptsSet;
  const proto = scripts?.[name]?.Command?.prototype;
  if (!proto || Object.getPrototypeOf(proto) !== Command.prototype) return false;
  Object.setPrototypeOf(proto, Encoded.prototype);
  return true;
}
