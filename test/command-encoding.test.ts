import { Command } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { encodeCommand, encodeScriptCommands } from '../src/queue/command-encoding.ts';
import { useHarness } from './support/harness.ts';

/** What ioredis itself sends for a command with these arguments. */
function ioredisBytes(name: string, args: unknown[]): Buffer {
  const out = new Command(name, args as never).toWritable({});
  return Buffer.isBuffer(out) ? out : Buffer.from(out, 'utf8');
}

const asBytes = (out: string | Buffer) => (Buffer.isBuffer(out) ? out : Buffer.from(out, 'utf8'));

describe('command encoding', () => {
  const h = useHarness();

  it('gives the very bytes ioredis gives, for strings, numbers, empty and missing values, multi-byte text and buffers', () => {
    const cases: unknown[][] = [
      ['a', 'bc', ''],
      ['key', 12, 3.5, null, undefined, 'héllo ☃', ''],
      [Buffer.from([0x93, 0x00, 0xff]), 'between', Buffer.alloc(0), Buffer.from('x'), 'end ✓'],
      ['sha', 2, 'k1', 'k2', Buffer.from([1, 2, 3])],
      [Buffer.from('only')],
      [],
    ];
    for (const args of cases) {
      const made = new Command('evalsha', args as never);
      expect(asBytes(encodeCommand(made.name, made.args)).equals(ioredisBytes('evalsha', args))).toBe(true);
    }
  });

  it("encodes a defined script's commands its way, with the same results from Redis, and leaves other scripts alone", async () => {
    const redis = h.connection('encoding');
    const lua = 'return {ARGV[1], ARGV[2], ARGV[3], KEYS[1]}';
    redis.defineCommand('fastEcho', { numberOfKeys: 1, lua });
    redis.defineCommand('plainEcho', { numberOfKeys: 1, lua });
    expect(encodeScriptCommands(redis, 'fastEcho')).toBe(true);
    expect(encodeScriptCommands(redis, 'notDefined')).toBe(false);

    const scripts = (
      redis as unknown as { scriptsSet: Record<string, { Command: { prototype: { toWritable: unknown } } }> }
    ).scriptsSet;
    expect(scripts.fastEcho!.Command.prototype.toWritable).not.toBe(scripts.plainEcho!.Command.prototype.toWritable);
    expect(Object.getPrototypeOf(scripts.plainEcho!.Command.prototype)).toBe(Command.prototype);

    const call = (name: string, ...args: unknown[]) =>
      (redis as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[name]!(...args);
    const args = [`${h.prefix}:k`, 'héllo ☃', Buffer.from([0x93, 0xff]), 42];
    // The first call goes as EVAL, the next as EVALSHA; both through the new encoding.
    for (let i = 0; i < 2; i++) {
      const fast = (await call('fastEcho', ...args)) as string[];
      expect(fast).toEqual(await call('plainEcho', ...args));
      expect(fast[0]).toBe('héllo ☃');
      expect(fast[3]).toBe(`${h.prefix}:k`);
    }
  });
});
