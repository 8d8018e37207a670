import mongoose, { type Connection } from 'mongoose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startMaster, type Master } from '../src/app.ts';
import { ArchiveStore } from '../src/archive/store.ts';
import type { TaskDocument } from '../src/archive/document.ts';
import { loadConfig, type Config } from '../src/config/config.ts';
import { ConfigError } from '../src/errors.ts';
import { IdentityRetention } from '../src/tasks/identity-retention.ts';
import { dependencyKey } from '../src/tasks/identity.ts';
import { TaskClient } from '../src/tasks/task-client.ts';
import { useHarness, waitFor } from './support/harness.ts';
import { testMongo } from './support/mongo.ts';

describe('identity retention', () => {
  const h = useHarness({ TASKMASTER_IDENTITY_RETENTION: '1s', TASKMASTER_ATTEMPTS: '1' });

  async function master(extra: Partial<Config> = {}): Promise<Master> {
    const m = await startMaster(Object.freeze({ ...h.config, port: 0, host: '127.0.0.1', ...extra }), h.log);
    h.defer(() => m.close());
    return m;
  }

  /** Bytes Redis spends on the identity records (the hashes the retention sweeps). */
  async function recordBytes(c: TaskClient): Promise<number> {
    let total = 0;
    for (const key of [c.keys.live, c.keys.done, c.keys.failed]) {
      total += Number((await h.redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
    }
    return total;
  }

  const drained = async (c: TaskClient) => {
    const counts = await c.queue().getJobCounts('wait', 'prioritized', 'active', 'delayed');
    return Object.values(counts).every((n) => n === 0);
  };

  it('50,000 distinct tasks: the memory of identity records stops growing once records pass the retention', async () => {
    const c = h.client();
    h.worker({ concurrency: 50 });
    await master();
    const peaks: number[] = [];
    for (let wave = 0; wave < 5; wave++) {
      await c.add(Array.from({ length: 10_000 }, (_, i) => ({ module: 'record', params: [{ wave, i }] })));
      await waitFor(() => drained(c), `wave ${wave} to be worked off`, 120_000);
      peaks.push(await recordBytes(c));
    }
    expect(await h.redis.zcard(`${h.prefix}:${h.config.queue}:completed`)).toBeGreaterThan(0);
    // Without a retention every wave adds its 10,000 records (about 1.5 MB), so the fifth wave
    // would hold five times what the first held; with it, what was left of earlier waves is swept
    // while later ones run. How much of a wave is swept before it is read depends on the machine.
    expect(peaks[4]!, `record bytes after each wave: ${peaks.join(', ')}`).toBeLessThan(
      Math.max(peaks[0]!, peaks[1]!) * 2,
    );
    // And once nothing is added, the records leave Redis altogether.
    await waitFor(
      async () => (await h.redis.hlen(c.keys.live)) + (await h.redis.hlen(c.keys.done)) === 0,
      'every record swept',
      30_000,
    );
  }, 300_000);

  it('without an archive, a dependency on an identity past the retention waits until that task runs again', async () => {
    const c = h.client();
    h.worker({ concurrency: 2 });
    await master();
    const dep = { module: 'record', params: [{ n: 'old' }] };
    const dk = dependencyKey(dep.module, dep.params);
    await c.add(dep);
    await waitFor(async () => (await c.store.outcomes([dk]))[0]?.state === 'completed', 'the dependency to complete');
    await waitFor(async () => (await c.store.outcomes([dk]))[0] === undefined, 'its record to pass the retention');
    const [d] = await c.add({ module: 'record', params: [{ n: 'late' }], dependencies: [dep] });
    expect(await c.queue().getJobState(d!.id)).toBe('waiting-children');
    await c.add(dep);
    await waitFor(
      async () => (await c.queue().getJobState(d!.id)) === 'completed',
      'the dependent to run after the new run',
    );
  });

  it('keeps the records of finished jobs that are not archived yet, whatever their age', async () => {
    const c = h.client();
    const dk = dependencyKey('record', [1]);
    await h.redis.hset(c.keys.done, dk, JSON.stringify({ jobId: 'a', at: 1000 }));
    await h.redis.hset(c.keys.failed, 'other', JSON.stringify({ jobId: 'b', at: 5000, reason: 'x' }));
    const retention = new IdentityRetention({
      connection: h.redis,
      keys: c.keys,
      retentionMs: 1000,
      oldestUnarchived: async () => 2000,
      log: h.log,
    });
    expect(await retention.sweep(1_000_000)).toBe(1);
    expect(await h.redis.hget(c.keys.done, dk)).toBeNull();
    expect(await h.redis.hget(c.keys.failed, 'other')).not.toBeNull();
  });

  it('removes a claim left by a crashed producer once it is past the retention and its job does not exist', async () => {
    const c = h.client();
    await h.redis.hset(
      c.keys.live,
      'crashed',
      `1000|${c.keys.job(h.config.queue, 'gone')}`,
      'young',
      `${Date.now()}|${c.keys.job(h.config.queue, 'x')}`,
    );
    const retention = new IdentityRetention({ connection: h.redis, keys: c.keys, retentionMs: 60_000, log: h.log });
    expect(await retention.sweep()).toBe(1);
    expect(await h.redis.hkeys(c.keys.live)).toEqual(['young']);
  });
});

describe('identity retention with an archive', () => {
  const h = useHarness({
    TASKMASTER_IDENTITY_RETENTION: '1s',
    TASKMASTER_KEEP_COMPLETED: '0',
    TASKMASTER_ATTEMPTS: '1',
  });
  let mongo: Awaited<ReturnType<typeof testMongo>>;
  let db: Connection;
  beforeEach(async () => {
    mongo = await testMongo();
    db = await mongoose.createConnection(mongo.url, { serverSelectionTimeoutMS: 5000 }).asPromise();
  });
  afterEach(async () => {
    await db.close();
    await mongo.close();
  });

  it('a late dependency on an identity past the retention is found in the archive', async () => {
    const c = h.client();
    h.worker({ concurrency: 2 });
    const m = await startMaster(Object.freeze({ ...h.config, mongoUrl: mongo.url, port: 0, host: '127.0.0.1' }), h.log);
    h.defer(() => m.close());
    const docs = () => db.collection<TaskDocument>('tasks');
    const dep = { module: 'record', params: [{ n: 'ancient' }] };
    const dk = dependencyKey(dep.module, dep.params);
    const [d] = await c.add(dep);
    await waitFor(async () => (await docs().countDocuments({ jobId: d!.id })) === 1, 'the dependency archived');
    await waitFor(
      async () => (await c.store.outcomes([dk]))[0] === undefined,
      'its record in Redis to pass the retention',
    );
    const store = new ArchiveStore(mongo.url, h.log);
    h.defer(() => store.close());
    const archived = new TaskClient(h.config, h.connection('archive-client'), { identityArchive: store });
    h.defer(() => archived.close());
    const [x] = await archived.add({ module: 'record', params: [{ n: 'late' }], dependencies: [dep] });
    await waitFor(
      async () => (await docs().countDocuments({ jobId: x!.id, status: 'completed' })) === 1,
      'the dependent to run and be archived',
    );
  });
});

describe('TASKMASTER_IDENTITY_RETENTION', () => {
  it('reads durations and "forever", and refuses anything else naming the setting', () => {
    expect(loadConfig({}).identityRetentionMs).toBe(7 * 86_400_000);
    expect(loadConfig({ TASKMASTER_IDENTITY_RETENTION: '12h' }).identityRetentionMs).toBe(12 * 3_600_000);
    expect(loadConfig({ TASKMASTER_IDENTITY_RETENTION: '500ms' }).identityRetentionMs).toBe(500);
    expect(loadConfig({ TASKMASTER_IDENTITY_RETENTION: 'forever' }).identityRetentionMs).toBeUndefined();
    for (const bad of ['7', '-1d', '1.5h', '0s', '3 weeks']) {
      expect(() => loadConfig({ TASKMASTER_IDENTITY_RETENTION: bad })).toThrow(ConfigError);
      expect(() => loadConfig({ TASKMASTER_IDENTITY_RETENTION: bad })).toThrow(
        /TASKMASTER_IDENTITY_RETENTION must be a duration/,
      );
    }
  });
});
