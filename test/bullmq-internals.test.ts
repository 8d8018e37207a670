import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Worker } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { FLOW_SCRIPTS, RELEASE_SCRIPT } from '../src/queue/bullmq/flow-commands.ts';
import { splitBullmqScript } from '../src/queue/bullmq/lua-split.ts';
import { ManualWorker } from '../src/queue/bullmq/manual-worker.ts';
import { MOVE_TO_FINISHED_ANCHOR, spliceIntoMoveToFinished } from '../src/queue/bullmq/move-to-finished.ts';
import { parentMoverAsFunction } from '../src/queue/bullmq/parent-mover.ts';
import { promoteAsFunction } from '../src/queue/bullmq/promote.ts';
import { removeJobAsFunction, spliceIntoRemoveJob } from '../src/queue/bullmq/remove-job.ts';
import * as bullmq from '../src/queue/bullmq/scripts.ts';
import { setScriptCommandClass } from '../src/queue/bullmq/script-command-class.ts';
import { installedVersions, PINNED, versionMismatch } from '../src/queue/bullmq/versions.ts';
import { keysFor } from '../src/queue/keys.ts';
import * as scripts from '../src/queue/scripts.ts';
import { Command } from 'ioredis';
import { useHarness } from './support/harness.ts';

const SRC = fileURLToPath(new URL('../src', import.meta.url));
const LUA = join(SRC, 'queue', 'lua');

/** Every file under `dir`, as a path. */
function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)],
  );
}

/** What each script of lua/ is built into: the ones spliced into or run after BullMQ's are assembled. */
const ASSEMBLED: Record<string, () => string | undefined> = {
  'finish-record': scripts.finishScript,
  'remove-finished': scripts.removeFinishedScript,
  add: scripts.addScript,
  cancel: scripts.cancelScript,
  'open-gates': scripts.openGatesScript,
};

describe('BullMQ and ioredis internals (src/queue/bullmq/)', () => {
  const h = useHarness();

  it('are the pinned versions, and a different one is named with both versions', () => {
    expect(installedVersions()).toEqual(PINNED);
    expect(versionMismatch()).toBeUndefined();
    const differs = versionMismatch({ bullmq: '6.8.0', ioredis: PINNED.ioredis });
    expect(differs?.code).toBe('LIBRARY_VERSION');
    expect(differs?.message).toContain(`bullmq 6.8.0 is installed, Taskmaster is built for ${PINNED.bullmq}`);
    expect(differs?.message).not.toContain('ioredis');
  });

  it('reach scripts that exist with the key counts their file names give', () => {
    const expected = {
      addDelayedJob: 6,
      addParentJob: 6,
      addPrioritizedJob: 9,
      addStandardJob: 9,
      moveToFinished: 14,
      promote: 9,
      releaseParentIfNoPendingDependencies: 2,
      removeJob: 2,
    };
    for (const [name, keys] of Object.entries(expected)) {
      const script = bullmq[name as keyof typeof expected];
      expect(script.name, name).toBe(name);
      expect(script.keys, name).toBe(keys);
      expect(script.content.length, name).toBeGreaterThan(0);
    }
    expect(FLOW_SCRIPTS[RELEASE_SCRIPT]).toBe(bullmq.releaseParentIfNoPendingDependencies);
  });

  it('find their anchors and shapes: each splice and wrap builds', () => {
    expect(bullmq.moveToFinished.content.split(MOVE_TO_FINISHED_ANCHOR)).toHaveLength(2);
    expect(spliceIntoMoveToFinished('-- ours')).toContain(`-- ours\n${MOVE_TO_FINISHED_ANCHOR}`);
    expect(spliceIntoRemoveJob('-- ours')).toContain('local repeatKey = KEYS[2]\n-- ours\n');
    expect(removeJobAsFunction('a test')).toMatch(/^local function bullmqRemoveJob\(KEYS, ARGV\)/);
    expect(parentMoverAsFunction('a test')).toContain('moveParentOn = moveParentToWaitIfNeeded');
    expect(promoteAsFunction('a test')).toMatch(/^local function bullmqPromote\(KEYS, ARGV\)/);
    // The add scripts split into helpers defined once (the parent release has no header to split).
    for (const script of FLOW_SCRIPTS) {
      if (script !== bullmq.releaseParentIfNoPendingDependencies)
        expect(splitBullmqScript(script.content), script.name).toBeDefined();
    }
  });

  it('reach protected and private members that exist', async () => {
    const connection = h.connection('internals');
    const worker = new Worker('internals', null, { connection, prefix: h.prefix, autorun: false });
    h.defer(() => worker.close());
    const backend = worker.backend as unknown as Record<string, unknown>;
    expect(typeof backend.moveToFinishedArgs).toBe('function');
    expect(backend.moveToFinishedKeys).toHaveLength(bullmq.moveToFinished.keys);
    expect(typeof (ManualWorker.prototype as unknown as Record<string, unknown>).nextJobFromJobData).toBe('function');
    const flows = new FlowProducer({ connection, prefix: h.prefix });
    h.defer(() => flows.close());
    const flowBackend = (flows as unknown as { backend: Record<string, unknown> }).backend;
    expect(typeof flowBackend.addJobToTransaction).toBe('function');
    expect(typeof flowBackend.execCommand).toBe('function');
    class Marked extends Command {}
    connection.defineCommand('internalsEcho', { numberOfKeys: 0, lua: 'return ARGV[1]' });
    expect(setScriptCommandClass(connection, 'internalsEcho', Marked)).toBe(true);
    expect(setScriptCommandClass(connection, 'notDefined', Marked)).toBe(false);
    expect(await (connection as unknown as { internalsEcho(a: string): Promise<string> }).internalsEcho('x')).toBe('x');
  });
});

describe('Lua scripts (src/queue/lua/)', () => {
  const h = useHarness();

  it('each opens with a header naming its KEYS and ARGV; includes with one saying what they define', () => {
    const all = files(SRC).filter((f) => f.endsWith('.lua'));
    expect(all.length).toBeGreaterThan(20);
    for (const file of all) {
      const text = readFileSync(file, 'utf8');
      const header = text.startsWith('--[[') ? text.slice(0, text.indexOf(']]')) : '';
      expect(header, relative(SRC, file)).not.toBe('');
      if (!file.includes(`${join('lua', 'includes')}`)) expect(header, relative(SRC, file)).toMatch(/KEYS[\s\S]*ARGV/);
    }
  });

  it('all compile in Redis, assembled with BullMQ where they go with it', async () => {
    const names = readdirSync(LUA)
      .filter((f) => f.endsWith('.lua'))
      .map((f) => f.slice(0, -'.lua'.length));
    for (const name of names) {
      const text = name in ASSEMBLED ? ASSEMBLED[name]!() : scripts.lua(name);
      expect(text, name).toBeDefined();
      expect(text, name).not.toContain('--@include');
      await expect(h.redis.script('LOAD', text!), name).resolves.toMatch(/^[0-9a-f]{40}$/);
    }
  });

  it("finish-record.lua builds the keys keys.ts gives, from the queue's prefix", () => {
    const text = readFileSync(join(LUA, 'finish-record.lua'), 'utf8');
    const k = keysFor('');
    for (const suffix of [k.live, k.waiters(''), k.done, k.failed, k.opening, k.openingChannel]) {
      expect(text).toContain(`pfx .. "${suffix}"`);
    }
  });

  it('are the only Lua: no TypeScript file outside src/queue/bullmq/ reaches into bullmq/dist or holds Lua', () => {
    for (const file of files(SRC).filter((f) => f.endsWith('.ts'))) {
      const text = readFileSync(file, 'utf8');
      if (!file.startsWith(join(SRC, 'queue', 'bullmq'))) expect(text, file).not.toContain('bullmq/dist');
      expect(text, file).not.toMatch(/redis\.call\(|rcall\(/);
    }
  });
});
