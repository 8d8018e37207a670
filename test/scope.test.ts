import { createHash } from 'node:crypto';
import { Job } from 'bullmq';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LegacyTask } from '../src/bridge/legacy-shape.ts';
import { documentFromJob, type FinishedJob } from '../src/archive/document.ts';
import type { InvalidTaskError } from '../src/errors.ts';
import { GATE_QUEUE } from '../src/queue/keys.ts';
import { dependencyKey, taskKey } from '../src/tasks/identity.ts';
import type { TaskClient } from '../src/tasks/task-client.ts';
import { validateTasks } from '../src/tasks/validate.ts';
import { bridge, connect } from './fixtures/bridge-clients.ts';
import { useHarness, waitFor } from './support/harness.ts';

// `hold` runs until the test calls globalThis.__tmHolds[name](); it logs its start and end.
type Step = { at: 'start' | 'end'; name: string };
const g = globalThis as { __tmSteps?: Step[]; __tmHolds?: Record<string, (v?: unknown) => void> };
beforeEach(() => {
  g.__tmSteps = [];
  g.__tmHolds = {};
});
const releaseHolds = () => Object.values(g.__tmHolds ?? {}).forEach((done) => done());
const at = (kind: Step['at'], name: string) => g.__tmSteps!.findIndex((s) => s.at === kind && s.name === name);

const state = (c: TaskClient, id: string) => c.queue().getJobState(id);
const settled = (c: TaskClient, id: string, want = 'completed') =>
  waitFor(async () => (await state(c, id)) === want, `job ${id} to be ${want}`);
const sha = (text: string) => createHash('sha256').update(text).digest('base64url');

describe('scope', () => {
  const h = useHarness();
  afterEach(releaseHolds);

  it('keeps the keys of tasks without a scope as they were, and hashes a scope in', () => {
    // The keys every task already in Redis or in the archive was stored with.
    expect(dependencyKey('record', [{ a: 1 }])).toBe(sha('["record",[{"a":1}]]'));
    expect(taskKey('record', [1], ['k2', 'k1'])).toBe(sha('["record",[1],["k1","k2"]]'));
    expect(dependencyKey('record', [{ a: 1 }], 'close@2026-12-04')).not.toBe(dependencyKey('record', [{ a: 1 }]));
    const scoped = taskKey('record', [1], ['k1'], 's');
    expect(scoped).not.toBe(taskKey('record', [1], ['k1']));
    expect(scoped).not.toBe(taskKey('record', [1], ['k1'], 't'));
    expect(taskKey('record', [1], [], 's')).toBe(dependencyKey('record', [1], 's'));
  });

  it('runs tasks alike but for their scope once each, and dedupes within one scope', async () => {
    const c = h.client();
    const w = h.worker({ concurrency: 2 });
    const ran: unknown[] = [];
    w.worker.on('completed', (job) => ran.push(job.data));
    const task = { module: 'record', params: [{ ticker: 'AAPL' }] };
    const [a] = await c.add([{ ...task, scope: 'close@1' }]);
    const [b] = await c.add([{ ...task, scope: 'close@2' }]);
    const [again] = await c.add([{ ...task, scope: 'close@1' }]);
    expect(a!.duplicate).toBe(false);
    expect(b!.duplicate).toBe(false);
    expect(b!.id).not.toBe(a!.id);
    expect(again).toMatchObject({ id: a!.id, duplicate: true });
    await settled(c, a!.id);
    await settled(c, b!.id);
    expect(ran).toHaveLength(2);
    const job = await c.queue().getJob(a!.id);
    expect(job!.data).toMatchObject({ $taskmaster: { params: task.params, scope: 'close@1' } });
    const doc = documentFromJob({ ...job!, queueName: job!.queueName } as unknown as FinishedJob, 'completed');
    expect(doc).toMatchObject({ scope: 'close@1', dependencyKey: dependencyKey('record', task.params, 'close@1') });
  });

  it('makes a dependency with a scope wait for the scoped task, not the unscoped one', async () => {
    const c = h.client();
    h.worker({ concurrency: 2 });
    const dep = { module: 'hold', params: [{ name: 'h' }] };
    const dependent = { module: 'hold', params: [{ name: 'dependent' }], dependencies: [{ ...dep, scope: 's1' }] };
    const [d] = await c.add(dependent);
    expect(await state(c, d!.id)).toBe('waiting-children');
    // Its one gate (`<dependent id>-<dependency index>`) waits on the scoped identity.
    const gate = await Job.fromId(c.queue(GATE_QUEUE), `${d!.id}-0`);
    expect(gate!.data.dependencyKey).toBe(dependencyKey('hold', dep.params, 's1'));

    // The unscoped task of the same module and params runs and completes: not the dependency.
    const [u] = await c.add(dep);
    await waitFor(() => !!g.__tmHolds!.h, 'the unscoped task to run');
    g.__tmHolds!.h!();
    await settled(c, u!.id);
    const [s] = await c.add({ ...dep, scope: 's1' });
    expect(s!.duplicate).toBe(false);
    await waitFor(() => !!g.__tmHolds!.h, 'the scoped task to run');
    expect(await state(c, d!.id)).toBe('waiting-children');
    g.__tmHolds!.h!();
    await waitFor(() => !!g.__tmHolds!.dependent, 'the dependent to run');
    // The dependent started after the scoped task ended (the second end of `h`).
    const ends = g.__tmSteps!.flatMap((step, i) => (step.at === 'end' && step.name === 'h' ? [i] : []));
    expect(ends).toHaveLength(2);
    expect(at('start', 'dependent')).toBeGreaterThan(ends[1]!);
    g.__tmHolds!.dependent!();
    await settled(c, d!.id);
  });

  it('refuses a scope that is not 1-200 printable characters, naming the field', () => {
    const cases: [unknown, string][] = [
      [{ module: 'record', scope: '' }, 'scope'],
      [{ module: 'record', scope: 'x'.repeat(201) }, 'scope'],
      [{ module: 'record', scope: 'a\nb' }, 'scope'],
      [{ module: 'record', scope: 7 }, 'scope'],
      [{ module: 'record', dependencies: [{ module: 'record', scope: '\u0000' }] }, 'dependencies[0].scope'],
    ];
    for (const [input, field] of cases) {
      const problems = (() => {
        try {
          validateTasks(input, h.config);
          return [];
        } catch (err) {
          return (err as InvalidTaskError).problems;
        }
      })();
      expect(problems, JSON.stringify(input)).toEqual([
        { index: 0, field, message: expect.stringMatching(/^must be a string of 1 to 200 printable characters/) },
      ]);
    }
    expect(validateTasks({ module: 'record', scope: 'x'.repeat(200) }, h.config)[0]!.scope).toHaveLength(200);
  });

  it('carries the scope through the socket protocol and shows it in the task JSON', async () => {
    const b = await bridge(h);
    const f = await connect(h, '1.7.4', b.url);
    const answer = (await f.ask('task:add', [{ module: 'record', params: [1], scope: 'close@3' }])) as {
      ok: boolean;
      tasks: LegacyTask[];
    };
    expect(answer.tasks[0]).toMatchObject({ module: 'record', scope: 'close@3', duplicate: false });
    const refused = (await f.ask('task:add', { module: 'record', scope: '' })) as { ok: boolean; problems: unknown[] };
    expect(refused.ok).toBe(false);
    expect(refused.problems[0]).toMatchObject({ index: 0, field: 'scope' });
  });
});
