import { io as ioClient, type Socket } from 'socket.io-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startMaster, type Master } from '../src/app.ts';
import type { Config } from '../src/config/config.ts';
import type { Overview } from '../src/dashboard/overview.ts';
import { useHarness, waitFor, type Harness } from './support/harness.ts';
import { testMongo } from './support/mongo.ts';
import { connect } from './fixtures/bridge-clients.ts';

interface Answer {
  status: number;
  headers: Headers;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each test reads its own endpoint's shape
  body: any;
  text: string;
}

function api(base: string, defaults: { token?: string; cookie?: string } = {}) {
  return async (path: string, init: RequestInit & { token?: string; cookie?: string } = {}): Promise<Answer> => {
    const headers = new Headers(init.headers);
    const token = init.token ?? defaults.token;
    const cookie = init.cookie ?? defaults.cookie;
    if (token) headers.set('authorization', `Bearer ${token}`);
    if (cookie) headers.set('cookie', cookie);
    const res = await fetch(`${base}${path}`, { redirect: 'manual', ...init, headers });
    const text = await res.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined; // an HTML answer
    }
    return { status: res.status, headers: res.headers, body, text };
  };
}

async function startOn(h: Harness, extra: Partial<Config> = {}): Promise<{ master: Master; base: string }> {
  const master = await startMaster(Object.freeze({ ...h.config, port: 0, host: '127.0.0.1', ...extra }), h.log);
  h.defer(() => master.close());
  return { master, base: `http://127.0.0.1:${master.port}` };
}

/** A client of the live status namespace that records the overviews it receives. */
async function statusClient(h: Harness, base: string, opts: { token?: string; cookie?: string } = {}) {
  const seen: Overview[] = [];
  const socket: Socket = ioClient(`${base}/status`, {
    transports: ['websocket'],
    reconnection: false,
    ...(opts.token ? { auth: { token: opts.token } } : {}),
    ...(opts.cookie ? { extraHeaders: { cookie: opts.cookie } } : {}),
  });
  h.defer(() => socket.close());
  socket.on('overview', (o: Overview) => seen.push(o));
  const outcome = await new Promise<string>((resolve) => {
    socket.once('connect', () => resolve('connected'));
    socket.once('connect_error', (err) => resolve(`refused: ${err.message}`));
  });
  return { socket, seen, outcome, last: () => seen[seen.length - 1] };
}

describe('status API without a token', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1', TASKMASTER_ALERT_WAITING_AGE: '1ms' });

  it('answers every endpoint’s bad parameters with 400 naming the parameter', async () => {
    const { base } = await startOn(h);
    const get = api(base);
    const cases: [string, string, string?][] = [
      ['/api/history?status=done', 'status'],
      ['/api/archive?colour=red', 'colour'],
      ['/api/overview?colour=red', 'colour'],
      ['/api/metrics?hours=0', 'hours'],
      ['/api/metrics?hours=1000', 'hours'],
      ['/api/metrics?hours=two', 'hours'],
      ['/api/metrics?queue=a:b', 'queue'],
      ['/api/metrics?colour=red', 'colour'],
      ['/api/tasks?page=0', 'page'],
      ['/api/tasks?pageSize=500', 'pageSize'],
      ['/api/tasks?page=1000&pageSize=200', 'page'],
      ['/api/tasks?status=done', 'status'],
      ['/api/tasks?since=yesterday', 'since'],
      ['/api/tasks?id=a:b', 'id'],
      [`/api/tasks?text=${'x'.repeat(201)}`, 'text'],
      [`/api/tasks?error=${'x'.repeat(201)}`, 'error'],
      ['/api/tasks?module=../etc', 'module'],
      ['/api/tasks?colour=red', 'colour'],
      ['/api/tasks/a%3Ab', 'id'],
      ['/api/tasks/1?colour=red', 'colour'],
      ['/api/tasks/1?queue=a:b', 'queue'],
      ['/api/tasks/1/retry?colour=red', 'colour', 'POST'],
      ['/api/tasks/1/cancel?queue=a:b', 'queue', 'POST'],
      ['/api/tasks/a%3Ab/remove', 'id', 'POST'],
      ['/api/modules/..%2Fetc/retry-failed', 'module', 'POST'],
      ['/api/modules/record/retry-failed?queue=a:b', 'queue', 'POST'],
      ['/api/queues/a:b/pause', 'name', 'POST'],
      ['/api/queues/tasks/resume?colour=red', 'colour', 'POST'],
      ['/api/schedules?colour=red', 'colour'],
    ];
    for (const [path, param, method] of cases) {
      const r = await get(path, { method: method ?? 'GET' });
      expect(r, path).toMatchObject({ status: 400, body: { code: 'INVALID_QUERY', param, parameter: param } });
      expect(r.body.error as string, path).toMatch(new RegExp(`^${param}: `));
    }
    expect((await get('/api/tasks/1/cancel')).status).toBe(405);
    expect((await get('/api/queues/tasks/pause')).status).toBe(405);
    expect((await get('/api/overview', { method: 'POST' })).status).toBe(405);
    expect((await get('/api/queues/nope/pause', { method: 'POST' })).body).toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('status API with a token', () => {
  const h = useHarness({ TASKMASTER_TOKEN: 'main-secret', TASKMASTER_FEEDER_TOKEN: 'feed-me' });

  it('refuses page, endpoints, bull-board and live feed without it; bearer, cookie, feeder token', async () => {
    const { base } = await startOn(h);
    const call = api(base);
    const gets = ['/api/overview', '/api/metrics', '/api/tasks', '/api/tasks/1', '/api/history', '/api/archive'];
    const posts = [
      '/api/tasks/1/retry',
      '/api/tasks/1/cancel',
      '/api/tasks/1/remove',
      '/api/modules/record/retry-failed',
      '/api/queues/tasks/pause',
      '/api/queues/tasks/resume',
    ];
    for (const path of [...gets, '/queues/api/queues', '/api/schedules']) {
      expect(await call(path), path).toMatchObject({ status: 401, body: { code: 'AUTH_FAILED' } });
      expect((await call(path, { token: 'guess' })).status, path).toBe(401);
    }
    for (const path of posts) {
      expect(await call(path, { method: 'POST' }), path).toMatchObject({ status: 401, body: { code: 'AUTH_FAILED' } });
    }
    // A browser asking for a page gets the login form.
    for (const path of ['/', '/queues']) {
      const page = await call(path, { headers: { accept: 'text/html' } });
      expect(page.status, path).toBe(401);
      expect(page.text).toMatch(/<form method="post" action="\/login">/);
      expect(page.text).toMatch(/<label for="token">Token<\/label>/);
    }

    // Bearer, and ?token= for scripts.
    const overview = await call('/api/overview', { token: 'main-secret' });
    expect(overview).toMatchObject({ status: 200, body: { auth: { required: true }, queues: [{ name: 'tasks' }] } });
    expect((await call('/api/overview?token=main-secret')).status).toBe(200);
    expect((await call('/queues/api/queues', { token: 'main-secret' })).status).toBe(200);

    // The login form: a wrong token is answered with the form again; the right one sets the cookie.
    const form = (token: string) => ({
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, next: '/queues' }).toString(),
    });
    expect((await call('/login', { headers: { accept: 'text/html' } })).text).toMatch(/name="token"/);
    const wrong = await call('/login', form('guess'));
    expect(wrong.status).toBe(401);
    expect(wrong.text).toMatch(/role="alert">token: not valid/);
    const login = await call('/login', form('main-secret'));
    expect(login.status).toBe(303);
    expect(login.headers.get('location')).toBe('/queues');
    const setCookie = login.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/^taskmaster_token=[^;]+;/);
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).not.toContain('main-secret');
    const cookie = setCookie.split(';')[0]!;
    expect((await call('/api/overview', { cookie })).status).toBe(200);
    expect((await call('/queues/api/queues', { cookie })).status).toBe(200);
    // A POST with the cookie from another site's page is refused; from the master's own, done.
    const evil = await call('/api/queues/tasks/pause', {
      method: 'POST',
      cookie,
      headers: { origin: 'http://evil.example' },
    });
    expect(evil).toMatchObject({ status: 403, body: { code: 'ROLE_NOT_ALLOWED' } });
    const own = await call('/api/queues/tasks/pause', { method: 'POST', cookie, headers: { origin: base } });
    expect(own).toMatchObject({ status: 200, body: { name: 'tasks', paused: true } });
    expect((await call('/api/queues/tasks/resume', { method: 'POST', cookie })).body).toMatchObject({ paused: false });
    const logout = await call('/logout', { method: 'POST', cookie });
    expect(logout.status).toBe(303);
    expect(logout.headers.get('set-cookie')).toMatch(/^taskmaster_token=;/);
    expect((await call('/api/overview', { cookie: 'taskmaster_token=forged' })).status).toBe(401);

    // The feeder token reads and retries; it may not pause, cancel, remove nor use bull-board.
    expect((await call('/api/overview', { token: 'feed-me' })).status).toBe(200);
    expect((await call('/api/tasks/1/retry', { method: 'POST', token: 'feed-me' })).status).toBe(404);
    for (const path of ['/api/queues/tasks/pause', '/api/tasks/1/cancel', '/api/tasks/1/remove']) {
      expect(await call(path, { method: 'POST', token: 'feed-me' }), path).toMatchObject({
        status: 403,
        body: { code: 'ROLE_NOT_ALLOWED' },
      });
    }
    expect((await call('/queues/api/queues', { token: 'feed-me' })).status).toBe(403);

    // The live feed: refused without the token; the token or the login cookie let it in.
    expect((await statusClient(h, base)).outcome).toMatch(/^refused: authentication required/);
    expect((await statusClient(h, base, { token: 'guess' })).outcome).toMatch(/^refused: authentication failed/);
    const byToken = await statusClient(h, base, { token: 'main-secret' });
    expect(byToken.outcome).toBe('connected');
    await waitFor(() => byToken.seen.length > 0, 'the first overview');
    expect(byToken.last()).toMatchObject({ auth: { required: true }, queues: [{ name: 'tasks' }] });
    const byCookie = await statusClient(h, base, { cookie });
    expect(byCookie.outcome).toBe('connected');
    await waitFor(() => byCookie.seen.length > 0, 'the first overview over the cookie');
  });
});

describe('overview and the live feed', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1', TASKMASTER_ALERT_WAITING_AGE: '1ms' });

  it('sends counts, consumers and alerts as they change: runners and feeders come and go', async () => {
    const { base } = await startOn(h);
    const live = await statusClient(h, base);
    expect(live.outcome).toBe('connected');
    await waitFor(() => live.seen.length > 0, 'the first overview');
    expect(live.last()).toMatchObject({
      auth: { required: false },
      archive: { enabled: false },
      queues: [{ name: 'tasks', paused: false, counts: { waiting: 0, prioritized: 0, completed: 0 } }],
      runners: [],
      feeders: [],
      workerProcesses: [],
      alerts: [],
    });
    const now = () => live.last()!;

    // Tasks nobody can run: counted, and flagged (no consumer serves the queue; waiting too long).
    const c = h.client();
    await c.add([
      { module: 'record', params: [1] },
      { module: 'record', params: [2] },
    ]);
    await waitFor(() => now().queues[0]!.counts.prioritized === 2, 'two waiting tasks on the live feed');
    await waitFor(
      () => now().alerts.some((a) => a.kind === 'unrunnable-module' && a.module === 'record' && a.value === 2),
      'the unrunnable-module alert',
    );
    expect(now().alerts).toContainEqual(expect.objectContaining({ kind: 'waiting-age', queue: 'tasks', threshold: 1 }));
    expect(now().queues[0]!.oldestWaitingAgeMs).toBeGreaterThanOrEqual(0);

    // A worker process announces its modules: the tasks run, the alerts go.
    h.worker({ concurrency: 2 });
    await waitFor(() => now().workerProcesses.length === 1, 'the worker process on the live feed');
    expect(now().workerProcesses[0]).toMatchObject({ pid: process.pid, queues: ['tasks'], concurrency: 2 });
    expect(now().workerProcesses[0]!.modules).toContain('record');
    await waitFor(() => now().queues[0]!.counts.completed === 2 && !now().alerts.length, 'the tasks done, no alerts');

    // Five failures of one module: the failure-rate alert.
    await c.add([1, 2, 3, 4, 5].map((n) => ({ module: 'fail', params: [n] })));
    await waitFor(
      () => now().alerts.some((a) => a.kind === 'failure-rate' && a.module === 'fail' && a.value === 1),
      'the failure-rate alert',
    );

    // A 2016-style runner and a feeder appear, and leave when they disconnect.
    const runner = await connect(h, '1.7.4', base);
    runner.emit('task:request', 'runner-one');
    await waitFor(() => now().runners.some((r) => r.name === 'runner-one'), 'the runner on the live feed');
    expect(now().runners[0]).toMatchObject({
      name: 'runner-one',
      address: '127.0.0.1',
      version: 'socket.io-client 1.x/2.x',
      slots: 1,
      held: [],
      queues: ['tasks'],
    });
    expect(now().runners[0]!.lastSeen).toBeGreaterThan(0);
    const feeder = await connect(h, '4.8.1', base);
    await feeder.ask('task:add', { module: 'record', params: ['from a feeder'] });
    await waitFor(() => now().feeders.some((f) => f.added === 1), 'the feeder on the live feed');
    expect(now().feeders[0]).toMatchObject({ version: 'socket.io-client 3+', address: '127.0.0.1' });
    runner.close();
    feeder.close();
    await waitFor(() => !now().runners.length && !now().feeders.length, 'the runner and the feeder gone');

    // The same body over HTTP.
    const overview = await api(base)('/api/overview');
    expect(overview.body).toMatchObject({
      queues: [{ name: 'tasks' }],
      runners: [],
      workerProcesses: [{ pid: process.pid }],
    });
    // Per minute: the three completed (two, and the feeder's) and the five failed.
    await waitFor(async () => (await c.queue().getCompletedCount()) === 3, 'the feeder’s task done');
    const metrics = await api(base)('/api/metrics?hours=1');
    expect(metrics.body).toMatchObject({ queue: 'tasks', stepMs: 60000 });
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    expect(metrics.body.completed).toHaveLength(61);
    expect(sum(metrics.body.completed)).toBe(3);
    expect(sum(metrics.body.failed)).toBe(5);
    expect(metrics.body.start).toBeLessThanOrEqual(Date.now() - 3_600_000);
  });

  it('flags tasks waiting for a dependency that has not completed, until it does', async () => {
    const { base } = await startOn(h);
    const live = await statusClient(h, base);
    const now = () => live.last()!;
    h.worker({ concurrency: 2 });
    const c = h.client();
    // Params that are only a part of a task's name another task, which nobody has added.
    const partial = { module: 'record', params: [{ ticker: 'AAPL' }] };
    await c.add({ module: 'record', params: [{ ticker: 'AAPL', day: 1 }] });
    const [dependent] = await c.add({ module: 'record', params: ['after AAPL'], dependencies: [partial] });
    const flagged = () => now()?.alerts.find((a) => a.kind === 'dependency-wait');
    await waitFor(() => flagged() !== undefined, 'the dependency-wait alert');
    expect(flagged()).toMatchObject({ queue: 'tasks', module: 'record', threshold: 1 });
    expect(flagged()!.message).toMatch(
      /^1 task\(s\) in queue tasks have waited longer than 0 s for record\(\[\{"ticker":"AAPL"\}\]\), which has not completed: it names the task with exactly these params$/,
    );
    // Once that task is added and completes, the dependent runs and the alert goes.
    await c.add(partial);
    await waitFor(async () => (await c.queue().getJobState(dependent!.id)) === 'completed', 'the dependent to run');
    await waitFor(() => !now().alerts.some((a) => a.kind === 'dependency-wait'), 'the alert gone');
  });
});

describe('actions and task detail', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });

  it('retry (one, a module’s failures), cancel, remove, pause, resume; dependencies; bull-board', async () => {
    const { base } = await startOn(h);
    const call = api(base);
    const post = (path: string) => call(path, { method: 'POST' });
    const c = h.client();
    const queue = c.queue();

    // Pause: nothing runs, even with a worker; the dependencies are shown while they wait.
    expect((await post('/api/queues/tasks/pause')).body).toEqual({ name: 'tasks', paused: true });
    expect(await queue.isPaused()).toBe(true);
    const worker = h.worker({ concurrency: 2 });
    const dep = { module: 'record', params: [{ n: 'a' }] };
    const [a] = await c.add(dep);
    const [b] = await c.add({ module: 'record', params: [{ n: 'b' }], dependencies: [dep] });
    const [first, second] = await c.add([
      { module: 'record', params: [{ n: 'c' }] },
      { module: 'record', params: [{ n: 'd' }], dependencies: [{ module: 'record', params: [{ n: 'c' }] }] },
    ]);
    const detail = async (id: string) => (await call(`/api/tasks/${id}`)).body;
    expect(await detail(b!.id)).toMatchObject({
      jobId: b!.id,
      status: 'waiting-children',
      logs: [],
      dependencies: [{ module: 'record', params: [{ n: 'a' }], status: 'pending' }],
      dependents: [],
    });
    expect((await detail(a!.id)).dependents).toEqual([
      { id: b!.id, queue: 'tasks', module: 'record', status: 'waiting-children' },
    ]);
    expect((await detail(second!.id)).dependencies).toEqual([
      {
        id: first!.id,
        queue: 'tasks',
        module: 'record',
        params: [{ n: 'c' }],
        status: expect.stringMatching(/^(waiting|prioritized)$/),
      },
    ]);
    expect((await detail(first!.id)).dependents).toEqual([
      { id: second!.id, queue: 'tasks', module: 'record', status: 'waiting-children' },
    ]);

    // bull-board shows the queue and its waiting tasks (and the gates queue, read-only).
    const page = await call('/queues', { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    expect(page.text).toMatch(/<title>Taskmaster<\/title>/);
    // Its scripts are served from @bull-board/ui (relative to <base href>, under /queues/).
    const script = /src="(static\/js\/main\.[^"]+\.js)"/.exec(page.text)![1];
    const served = await fetch(`${base}/queues/${script}`);
    expect(served.status).toBe(200);
    expect(served.headers.get('content-type')).toMatch(/javascript/);
    expect((await served.text()).length).toBeGreaterThan(1000);
    const board = await call('/queues/api/queues?activeQueue=tasks&status=prioritized&page=1');
    expect(board.status).toBe(200);
    const shown = board.body.queues as { name: string; readOnlyMode: boolean; jobs: { id: string }[] }[];
    expect(shown.find((q) => q.name === '_gates')).toMatchObject({ readOnlyMode: true });
    const tasks = shown.find((q) => q.name === 'tasks')!;
    expect(tasks.readOnlyMode).toBe(false);
    expect(tasks.jobs.map((j) => j.id).sort()).toEqual([a!.id, first!.id].sort());

    // Resume: everything runs; the dependency shows which run completed it.
    expect((await post('/api/queues/tasks/resume')).body).toEqual({ name: 'tasks', paused: false });
    await waitFor(async () => (await queue.getCompletedCount()) === 4, 'the four tasks done');
    expect((await detail(b!.id)).dependencies).toEqual([
      { id: a!.id, module: 'record', params: [{ n: 'a' }], status: 'completed' },
    ]);
    expect(await detail(b!.id)).toMatchObject({ status: 'completed', result: { params: { n: 'b' } } });

    // Remove: a finished task leaves; a live one is refused.
    expect((await post(`/api/tasks/${b!.id}/remove`)).body).toEqual({
      removed: b!.id,
      queue: 'tasks',
      from: ['redis'],
    });
    expect((await call(`/api/tasks/${b!.id}`)).status).toBe(404);
    const [blocked] = await c.add({
      module: 'record',
      params: ['blocked'],
      dependencies: [{ module: 'record', params: ['never'] }],
    });
    expect(await post(`/api/tasks/${blocked!.id}/remove`)).toMatchObject({ status: 409, body: { code: 'CONFLICT' } });
    // Cancel: a blocked task is removed; cancelling it again finds nothing.
    expect((await post(`/api/tasks/${blocked!.id}/cancel`)).body).toMatchObject({ id: blocked!.id, state: 'removed' });
    expect((await post(`/api/tasks/${blocked!.id}/cancel`)).status).toBe(404);
    expect(await post(`/api/tasks/${a!.id}/cancel`)).toMatchObject({ status: 409, body: { code: 'CONFLICT' } });

    // Retry one failed task, then every failed task of the module.
    const failed = await c.add([1, 2].map((n) => ({ module: 'fail', params: [n] })));
    await waitFor(async () => (await queue.getFailedCount()) === 2, 'two failures');
    const one = await post(`/api/tasks/${failed[0]!.id}/retry`);
    expect(one).toMatchObject({ status: 201, body: { retried: `tasks:${failed[0]!.id}`, task: { duplicate: false } } });
    await waitFor(async () => (await queue.getFailedCount()) === 3, 'the retried one failed again');
    const all = await post('/api/modules/fail/retry-failed');
    expect(all).toMatchObject({ status: 201, body: { queue: 'tasks', module: 'fail', retried: 3, skipped: [] } });
    // Two of the three failed jobs are one task (fail [1] and its retry): when the first one's
    // new run has not failed yet as the second is retried, the second is its duplicate.
    const fresh = (all.body.tasks as { duplicate: boolean }[]).filter((t) => !t.duplicate).length;
    expect(fresh).toBeGreaterThanOrEqual(2);
    const total = 3 + fresh;
    await waitFor(async () => (await queue.getFailedCount()) === total, 'the retried ones failed again');
    const search = await call('/api/tasks?module=fail&status=failed&pageSize=4');
    expect(search.body).toMatchObject({ page: 1, pageSize: 4, hasMore: true });
    expect(search.body.tasks).toHaveLength(4);
    const next = await call('/api/tasks?module=fail&status=failed&pageSize=4&page=2');
    expect(next.body).toMatchObject({ page: 2, hasMore: false });
    expect(next.body.tasks).toHaveLength(total - 4);
    const byError = await call(`/api/tasks?error=${encodeURIComponent('fail fixture: 2')}`);
    // The failure of params [2] and its retry; the four of params [1] do not match.
    expect(byError.body.tasks.map((t: { params: unknown[] }) => t.params)).toEqual([[2], [2]]);
    await worker.close();
  });
});

describe('search over the archive', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1', TASKMASTER_KEEP_COMPLETED: '0', TASKMASTER_KEEP_FAILED: '0' });
  let mongo: Awaited<ReturnType<typeof testMongo>>;
  beforeEach(async () => {
    mongo = await testMongo();
  });
  afterEach(async () => {
    await mongo.close();
  });

  it('finds archived tasks by params and error text; their detail, re-queue, per-minute counts', async () => {
    const { base } = await startOn(h, { mongoUrl: mongo.url });
    const call = api(base);
    const c = h.client();
    h.worker({ concurrency: 2 });
    const [needle] = await c.add({ module: 'record', params: [{ ticker: 'NEEDLE-7', deep: { note: 'Haystack' } }] });
    await c.add({ module: 'record', params: [{ ticker: 'OTHER' }] });
    const [broken] = await c.add({ module: 'fail', params: ['broken-one'] });
    // Archived, and gone from Redis (keep 0).
    await waitFor(
      async () =>
        (await call('/api/archive')).body.pending === 0 &&
        (await c.queue().getFailedCount()) + (await c.queue().getCompletedCount()) === 0 &&
        (await call(`/api/tasks/${needle!.id}`)).body.source === 'archive',
      'all archived and trimmed from Redis',
    );

    const byText = await call(`/api/tasks?text=${encodeURIComponent('needle-7')}`);
    expect(byText.status).toBe(200);
    expect(byText.body.tasks).toEqual([
      expect.objectContaining({ jobId: needle!.id, source: 'archive', status: 'completed' }),
    ]);
    const nested = await call(`/api/tasks?text=haystack&module=record&status=completed`);
    expect(nested.body.tasks.map((t: { jobId: string }) => t.jobId)).toEqual([needle!.id]);
    expect((await call('/api/tasks?text=absent-everywhere')).body.tasks).toEqual([]);
    const byError = await call(`/api/tasks?error=${encodeURIComponent('FAIL FIXTURE: "broken')}`);
    expect(byError.body.tasks).toEqual([
      expect.objectContaining({ jobId: broken!.id, source: 'archive', status: 'failed' }),
    ]);
    expect((await call(`/api/tasks?id=${needle!.id}&text=needle`)).body.tasks).toHaveLength(1);
    expect((await call(`/api/tasks?id=${needle!.id}&text=other`)).body.tasks).toHaveLength(0);

    const detail = await call(`/api/tasks/${broken!.id}`);
    expect(detail.body).toMatchObject({
      source: 'archive',
      status: 'failed',
      logs: [],
      dependencies: [],
      dependents: [],
    });
    expect(detail.body.error.message).toMatch(/fail fixture/);
    expect(detail.body.error.stack).toMatch(/fail\.js/);

    // Counted per minute from the archive, since Redis keeps none of them.
    const metrics = await call('/api/metrics?hours=1');
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    expect(sum(metrics.body.completed)).toBe(2);
    expect(sum(metrics.body.failed)).toBe(1);

    // Re-queued from the archive; removed from it.
    const retried = await call(`/api/tasks/${needle!.id}/retry`, { method: 'POST' });
    expect(retried).toMatchObject({ status: 201, body: { retried: `tasks:${needle!.id}` } });
    const removed = await call(`/api/tasks/${broken!.id}/remove`, { method: 'POST' });
    expect(removed.body).toEqual({ removed: broken!.id, queue: 'tasks', from: ['archive'] });
    expect((await call(`/api/tasks/${broken!.id}`)).status).toBe(404);
  });
});
