import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Cluster } from 'ioredis';
import mongoose from 'mongoose';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { startMaster } from '../src/app.ts';
import type { TaskDocument } from '../src/archive/document.ts';
import { loadConfig } from '../src/config/config.ts';
import { ConfigError } from '../src/errors.ts';
import { abandonRedis, createRedis } from '../src/queue/connection.ts';
import { hashTagOf } from '../src/queue/keys.ts';
import { useHarness, waitFor } from './support/harness.ts';
import { testMongo } from './support/mongo.ts';
import { TestRedisCluster } from './support/redis-cluster.ts';

// Runs in the cluster project only (vitest.config.ts): `redisUrl` is a three-master Redis Cluster.
const BIN = fileURLToPath(new URL('../bin/taskmaster.js', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

type Step = { at: 'start' | 'end'; name: string };
const g = globalThis as { __tmSteps?: Step[]; __tmHolds?: Record<string, (v?: unknown) => void> };
const at = (kind: Step['at'], name: string) => (g.__tmSteps ?? []).findIndex((s) => s.at === kind && s.name === name);

beforeEach(() => {
  g.__tmSteps = [];
  g.__tmHolds = {};
});
afterEach(() => Object.values(g.__tmHolds ?? {}).forEach((done) => done()));

/** Runs the command line to its end with `env`: its exit code and what it wrote on stderr. */
async function cli(env: Record<string, string | undefined>, ...args: string[]) {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, stderr };
}

describe('a prefix on Redis Cluster', () => {
  it('is refused without a hash tag, saying why and what to use', () => {
    for (const prefix of ['taskmaster', '{}taskmaster', 'task{master']) {
      const load = () => loadConfig({ REDIS_URL: inject('redisUrl'), TASKMASTER_PREFIX: prefix });
      expect(load, prefix).toThrow(ConfigError);
      expect(load, prefix).toThrow(
        /TASKMASTER_PREFIX must hold a hash tag such as \{taskmaster\} on Redis Cluster .*queue's keys .* one slot/,
      );
    }
    // Also the default prefix: a cluster URL alone is not enough.
    expect(() => loadConfig({ REDIS_URL: inject('redisUrl') })).toThrow(/TASKMASTER_PREFIX must hold a hash tag/);
    for (const prefix of ['{taskmaster}', 'tm{a}b']) {
      expect(loadConfig({ REDIS_URL: inject('redisUrl'), TASKMASTER_PREFIX: prefix }).prefix).toBe(prefix);
    }
  });

  it('is refused by a command at start: a one-line error and a non-zero exit', async () => {
    const env = { PATH: process.env.PATH, REDIS_URL: inject('redisUrl'), TASKMASTER_PREFIX: 'taskmaster' };
    const { code, stderr } = await cli(env, 'status');
    expect(code).not.toBe(0);
    expect(stderr.trim()).toMatch(/^taskmaster: TASKMASTER_PREFIX must hold a hash tag such as \{taskmaster\}/);
    expect(stderr).not.toMatch(/^\s+at /m);
  });
});

describe('a one-server URL to a node of Redis Cluster', () => {
  it('is refused by a command at start, which names the cluster URL to use instead', async () => {
    const node = inject('redisUrl').replace(/^redis\+cluster:\/\/([^,]+).*$/, 'redis://$1');
    const env = { PATH: process.env.PATH, REDIS_URL: node, TASKMASTER_PREFIX: '{taskmaster}' };
    const { code, stderr } = await cli(env, 'add', 'record', '{"n":1}');
    expect(code).not.toBe(0);
    const cluster = node.replace('redis://', 'redis+cluster://');
    expect(stderr.trim()).toBe(
      `taskmaster: REDIS_URL ${node} is a node of a Redis Cluster: use a cluster URL, ${cluster}`,
    );
  });
});

describe('a connection to Redis Cluster', () => {
  it('shows its name when serialised (a task result may hold one), not its password or its internals', async () => {
    const cluster = createRedis(inject('redisUrl').replace('://', '://default:hunter2secret@'), { name: 'shown' });
    const server = createRedis('redis://:hunter2secret@127.0.0.1:1', { name: 'shown', failFast: true });
    try {
      for (const redis of [cluster, server, cluster.duplicate(), server.duplicate()]) {
        expect(JSON.parse(JSON.stringify({ held: redis }))).toEqual({ held: { connection: 'taskmaster:shown' } });
      }
    } finally {
      abandonRedis(cluster);
      abandonRedis(server);
    }
  });

  it('abandoned while the cluster is away fails what waits, on it and its duplicates, and later commands', async () => {
    const cluster = await TestRedisCluster.start();
    try {
      const redis = createRedis(cluster.url, { name: 'abandoned' });
      const dup = redis.duplicate();
      expect(await redis.set('{t}:k', '1')).toBe('OK');
      expect(await dup.get('{t}:k')).toBe('1');
      await cluster.destroy();
      await waitFor(() => redis.status === 'reconnecting' && dup.status === 'reconnecting', 'both to reconnect');
      const answer = (p: Promise<unknown>) =>
        p.then(
          () => 'answered',
          (e: Error) => e.message,
        );
      const waiting = [answer(redis.get('{t}:k')), answer(dup.get('{t}:k'))];
      abandonRedis(redis);
      const away = 'None of startup nodes is available';
      expect(await Promise.all(waiting)).toEqual([away, away]);
      const late = redis.duplicate();
      expect(await late.get('{t}:k').catch((e: Error) => e.message)).toBe('Connection is closed.');
    } finally {
      await cluster.destroy();
    }
  });
});

describe('tasks on Redis Cluster', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1', TASKMASTER_KEEP_COMPLETED: '0', TASKMASTER_KEEP_FAILED: '0' });

  /** The test's keys on every master: [node port, key]. */
  async function keysByNode(): Promise<[number, string][]> {
    const cluster = h.redis as unknown as Cluster;
    const out: [number, string][] = [];
    for (const node of cluster.nodes('master')) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${h.prefix}:*`, 'COUNT', 1000);
        cursor = next;
        out.push(...keys.map((k): [number, string] => [node.options.port!, k]));
      } while (cursor !== '0');
    }
    return out;
  }

  it('runs a task behind a gate, answers its duplicate, cancels a blocked one and archives them all', async () => {
    expect(h.redis.isCluster).toBe(true);
    expect((h.redis as unknown as Cluster).nodes('master')).toHaveLength(3);
    expect(hashTagOf(h.prefix)).toBeDefined();
    const c = h.client();
    const [dep] = await c.add({ module: 'hold', params: [{ name: 'dep' }] });
    // Added in another batch than its dependency: it waits through a gate.
    const dependent = {
      module: 'step',
      params: [{ name: 'x' }],
      dependencies: [{ module: 'hold', params: [{ name: 'dep' }] }],
    };
    const [x] = await c.add(dependent);
    expect(await c.queue().getJobState(x!.id)).toBe('waiting-children');
    const [again] = await c.add(dependent);
    expect(again).toMatchObject({ id: x!.id, duplicate: true });
    const never = [{ module: 'step', params: ['never'] }];
    const [blocked] = await c.add({ module: 'step', params: [{ name: 'never-runs' }], dependencies: never });
    expect(await c.cancel(blocked!.id)).toMatchObject({ state: 'removed' });

    h.worker({ concurrency: 4 });
    await waitFor(() => !!g.__tmHolds?.dep, 'the dependency to run');
    expect(await c.queue().getJobState(x!.id)).toBe('waiting-children');
    g.__tmHolds!.dep!();
    await waitFor(async () => (await c.queue().getJobState(x!.id)) === 'completed', 'the dependent to complete');
    expect(at('end', 'dep')).toBeLessThan(at('start', 'x'));
    expect(at('start', 'never-runs')).toBe(-1);

    // Every key the work wrote, Taskmaster's and BullMQ's, lies in the slot of the prefix's tag.
    const keys = await keysByNode();
    expect(keys.some(([, k]) => k.startsWith(`${h.prefix}:tm:`))).toBe(true);
    expect(keys.some(([, k]) => k.startsWith(`${h.prefix}:_gates:`))).toBe(true);
    const slots = new Set(await Promise.all(keys.map(([, k]) => h.redis.cluster('KEYSLOT', k))));
    expect([...slots]).toEqual([await h.redis.cluster('KEYSLOT', `{${hashTagOf(h.prefix)}}`)]);
    expect(new Set(keys.map(([port]) => port)).size).toBe(1);

    const mongo = await testMongo();
    h.defer(() => mongo.close());
    const db = await mongoose.createConnection(mongo.url, { serverSelectionTimeoutMS: 5000 }).asPromise();
    h.defer(() => db.close());
    const config = Object.freeze({ ...h.config, mongoUrl: mongo.url, port: 0, host: '127.0.0.1' });
    const master = await startMaster(config, h.log);
    h.defer(() => master.close());
    const docs = db.collection<TaskDocument>('tasks');
    await waitFor(async () => (await docs.countDocuments()) === 3, 'three archived tasks');
    const status = new Map((await docs.find().toArray()).map((d) => [d.jobId, d.status]));
    expect(status).toEqual(
      new Map([
        [dep!.id, 'completed'],
        [x!.id, 'completed'],
        [blocked!.id, 'cancelled'],
      ]),
    );
    await waitFor(async () => (await c.queue().getCompletedCount()) === 0, 'Redis trimmed after archiving');
  });
});
