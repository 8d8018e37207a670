import { randomBytes } from 'node:crypto';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { startMaster } from '../src/app.ts';
import type { Config } from '../src/config/config.ts';
import { connect } from './fixtures/bridge-clients.ts';
import { DESKTOP, PHONE, useBrowser } from './support/browser.ts';
import { useHarness, waitFor } from './support/harness.ts';
import { testMongo } from './support/mongo.ts';

/** How long a test waits for the page to show a state (the machine may be busy). */
const SHOWN_MS = 30_000;

type Holds = Record<string, (value: unknown) => void>;
const holds = () => ((globalThis as { __tmHolds?: Holds }).__tmHolds ??= {});

/** Counts of one queue as the page shows them, by the `data-count` of each cell. */
async function shownCounts(page: Page, queue: string): Promise<Record<string, number>> {
  return page.$$eval(`[data-queue="${queue}"] [data-count]`, (cells) =>
    Object.fromEntries(cells.map((c) => [c.getAttribute('data-count'), Number(c.textContent)])),
  );
}

/** Waits for an element matching `selector` (Playwright's CSS, with `:text-is()` and `:has()`). */
function shown(page: Page, selector: string) {
  return page.waitForSelector(selector, { timeout: SHOWN_MS });
}

function gone(page: Page, selector: string) {
  return page.waitForSelector(selector, { state: 'detached', timeout: SHOWN_MS });
}

describe('status page in a browser: a real master, workers and Redis', () => {
  const h = useHarness({ TASKMASTER_ATTEMPTS: '1' });
  const browser = useBrowser();

  /** Starts a master on a free port; returns its base URL. */
  async function master(extra: Partial<Config> = {}): Promise<string> {
    const m = await startMaster(Object.freeze({ ...h.config, port: 0, host: '127.0.0.1', ...extra }), h.log);
    h.defer(() => m.close());
    return `http://127.0.0.1:${m.port}`;
  }

  /** Opens the page and waits for its first search results (the newest tasks). */
  async function load(url: string, viewport = DESKTOP): Promise<Page> {
    const page = await browser.page(viewport);
    await page.goto(url);
    await shown(page, '#results .result-bar');
    return page;
  }

  /** Opens the page and waits for its live connection and first overview. */
  async function open(url: string, viewport = DESKTOP): Promise<Page> {
    const page = await load(url, viewport);
    await shown(page, '#live[data-state="live"]');
    await shown(page, `[data-queue="${h.config.queue}"]`);
    return page;
  }

  it('shows counts changing live as tasks are added and run, no reload; desktop and phone screenshots', async () => {
    const url = await master();
    const page = await open(url);
    await page.evaluate(() => ((window as unknown as { notReloaded: boolean }).notReloaded = true));
    expect(await shownCounts(page, 'tasks')).toMatchObject({ waiting: 0, completed: 0 });
    // Without a token the page says that anyone can use it.
    expect(await page.isVisible('#auth-banner')).toBe(true);

    const client = h.client();
    await client.add([1, 2, 3].map((n) => ({ module: 'record', params: [{ n }] })));
    await waitFor(async () => (await shownCounts(page, 'tasks')).waiting === 3, 'three waiting on the page', SHOWN_MS);
    // No worker yet: nothing can run them, and the page says so.
    await shown(page, '#alerts [data-alert="unrunnable-module"]:has-text("record")');
    await browser.screenshot(page, 'status-page-waiting', 'main > .row:first-child');

    h.worker();
    await waitFor(
      async () => (await shownCounts(page, 'tasks')).completed === 3,
      'three completed on the page',
      SHOWN_MS,
    );
    expect((await shownCounts(page, 'tasks')).waiting).toBe(0);
    await gone(page, '#alerts [data-alert="unrunnable-module"]');
    // The worker process is listed with its modules.
    await shown(page, '#worker-table [data-worker]:has-text("record")');
    // The chart and the newest tasks follow too.
    await shown(page, '#chart-summary:has-text("3 completed, 0 failed")');
    await waitFor(async () => (await page.$$('#results [data-task]')).length === 3, 'three tasks listed', SHOWN_MS);
    expect(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);

    await browser.screenshot(page, 'status-page-desktop');
    const phone = await open(url, PHONE);
    await waitFor(async () => (await shownCounts(phone, 'tasks')).completed === 3, 'counts on the phone', SHOWN_MS);
    await browser.screenshot(phone, 'status-page-phone');
    // At phone width nothing is wider than the screen (tables become one card per row).
    expect(await phone.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width);
  });

  it('follows the counts by reading the overview while the live feed cannot connect', async () => {
    const url = await master();
    const page = await browser.page();
    // As behind a proxy that lets neither websockets nor long-polling through.
    await page.routeWebSocket(/\/socket\.io\//, (ws) => ws.close());
    await page.route(/\/socket\.io\//, (route) => route.abort());
    await page.goto(url);
    await shown(page, '[data-queue="tasks"]');
    await h.client().add([1, 2].map((n) => ({ module: 'record', params: [{ polled: n }] })));
    await waitFor(async () => (await shownCounts(page, 'tasks')).waiting === 2, 'two waiting on the page', SHOWN_MS);
    expect(await page.getAttribute('#live', 'data-state')).not.toBe('live');
  });

  it('lists a remote runner while it is connected, and drops it when it disconnects', async () => {
    const url = await master();
    const page = await open(url);
    const name = `page-runner-${randomBytes(3).toString('hex')}`;
    const runner = await connect(h, '2.5.0', url);
    runner.emit('task:request', { name, slots: 2 });
    await shown(page, `[data-runner="${name}"] td[data-label="slots"]:text-is("2")`);
    expect(await page.textContent('#runner-count')).toBe('1');
    runner.close();
    await gone(page, `[data-runner="${name}"]`);
    expect(await page.textContent('#runner-count')).toBe('0');
  });

  it('shows a task with its dependencies drawn, each a link to its own detail', async () => {
    const url = await master();
    const client = h.client();
    const dep = (p: string) => ({ module: 'record', params: [p] });
    const [a, b, c] = await client.add([
      dep('graph-a'),
      dep('graph-b'),
      { module: 'record', params: ['graph-c'], dependencies: [dep('graph-a'), dep('graph-b')] },
    ]);
    const [d] = await client.add({ module: 'record', params: ['graph-d'], dependencies: [dep('graph-c')] });

    const page = await load(url);
    await page.fill('#search-form input[name="text"]', 'graph-c');
    await page.click('#search-form button[type="submit"]');
    await page.click(`#results [data-task="${c!.id}"] a`);

    await shown(page, `#detail svg.graph [data-node="${a!.id}"]`);
    await shown(page, `#detail svg.graph [data-node="${b!.id}"]`);
    await shown(page, `#detail svg.graph [data-node="${d!.id}"]`);
    expect(await page.textContent('#detail-title')).toContain(c!.id);
    // The dependency's box is drawn left of the task, the dependent's right of it.
    const x = async (id: string) => (await page.locator(`#detail svg.graph [data-node="${id}"] rect`).boundingBox())!.x;
    expect(await x(a!.id)).toBeLessThan(await x(c!.id));
    expect(await x(d!.id)).toBeGreaterThan(await x(c!.id));
    await browser.screenshot(page, 'status-page-task-detail', '#detail');
    const phone = await load(`${url}/#task/tasks/${c!.id}`, PHONE);
    await shown(phone, `#detail svg.graph [data-node="${d!.id}"]`);
    await browser.screenshot(phone, 'status-page-task-detail-phone', '#detail');

    // Keyboard: the dependency's box is a link; Enter on it opens its detail.
    await page.focus(`#detail svg.graph a[data-node="${a!.id}"]`);
    await page.keyboard.press('Enter');
    await shown(page, `#detail-title:has-text("Task ${a!.id}")`);
    await shown(page, `#detail svg.graph [data-node="${c!.id}"]`);
  });

  it('finds an archived task by its params text, and queues it again from the archive', async () => {
    const mongo = await testMongo();
    h.defer(() => mongo.close());
    const url = await master({ mongoUrl: mongo.url, keep: { completed: 0, failed: 0 } });
    const client = h.client();
    h.worker();
    const marker = `ZZ-${randomBytes(4).toString('hex')}`;
    const [task] = await client.add({ module: 'record', params: [{ ticker: marker }] });
    // Archived, and gone from Redis: only the archive can answer now.
    await waitFor(
      async () => (await client.queue().getJob(task!.id)) === undefined,
      'the task to leave Redis',
      SHOWN_MS,
    );

    const page = await load(url);
    await page.fill('#search-form input[name="text"]', marker);
    await page.click('#search-form button[type="submit"]');
    const row = await shown(page, `#results:not([aria-busy]) [data-task="${task!.id}"]`);
    expect(await row.textContent()).toContain('archive');
    expect(await page.$$eval('#results [data-task]', (rows) => rows.length)).toBe(1);

    await (await row.$('a'))!.click();
    await shown(page, '#detail:has-text("from the archive")');
    await page.click('#detail button:has-text("Re-queue from archive")');
    const notice = await shown(page, '#notice:has-text("queued again as")');
    const newId = /queued again as (\S+?)\./.exec((await notice.textContent())!)![1]!;
    expect(newId).not.toBe(task!.id);
    // The new task ran with the archived one's params (read where it is now: Redis or the archive).
    let again: { status?: string; params?: unknown } = {};
    await waitFor(
      async () => (again = await (await fetch(`${url}/api/tasks/${newId}`)).json()).status === 'completed',
      'the re-queued task to run',
      SHOWN_MS,
    );
    expect(again.params).toEqual([{ ticker: marker }]);
  });

  it('retries a failed task from the page; the retry runs and completes', async () => {
    const url = await master();
    const client = h.client();
    h.worker();
    const name = `retry-${randomBytes(3).toString('hex')}`;
    const [task] = await client.add({ module: 'hold', params: [{ name }] });
    await waitFor(() => Boolean(holds()[name]), 'the task to run');
    holds()[name]!(new Error('first run fails'));
    await waitFor(async () => (await client.queue().getJobState(task!.id)) === 'failed', 'the task to fail');

    const page = await open(url);
    await page.goto(`${url}/#task/tasks/${task!.id}`);
    await shown(page, '#detail .badge:text-is("failed")');
    await shown(page, '#detail:has-text("first run fails")');
    await browser.screenshot(page, 'status-page-failed-task', '#detail');
    await page.click('#detail button:text-is("Retry")');
    await waitFor(() => Boolean(holds()[name]), 'the retry to run', SHOWN_MS);
    holds()[name]!('second run');
    // The page follows the retry to its own detail, which shows it completed.
    await shown(page, '#detail .badge:text-is("completed")');
    expect(await page.textContent('#detail')).toContain('second run');
  });

  it('cancels a waiting task and then removes it from the archive, each after asking', async () => {
    const mongo = await testMongo();
    h.defer(() => mongo.close());
    const url = await master({ mongoUrl: mongo.url });
    const client = h.client();
    const [task] = await client.add({ module: 'record', params: ['to-cancel'] });
    const page = await load(`${url}/#task/tasks/${task!.id}`);
    await page.click('#detail button:text-is("Cancel")');
    // Nothing happens before the answer; "Keep" takes the question back.
    await page.click('#detail button:text-is("Keep")');
    expect(await client.queue().getJobState(task!.id)).not.toBe('unknown');
    await page.click('#detail button:text-is("Cancel")');
    await page.click('#detail button:text-is("Yes, cancel")');
    await shown(page, `#notice:has-text("Task ${task!.id}: removed")`);
    // Archived as cancelled; the open detail follows it there.
    await shown(page, '#detail .badge:text-is("cancelled")');
    await shown(page, '#detail:has-text("from the archive")');

    await page.click('#detail button:text-is("Remove")');
    await page.click('#detail button:text-is("Yes, remove")');
    await shown(page, `#notice:has-text("Task ${task!.id} removed from archive")`);
    expect(await client.queue().getJobState(task!.id)).toBe('unknown');
    await shown(page, `#detail:has-text("no task with id ${task!.id}")`);
  });

  it('pauses and resumes a queue from the page', async () => {
    const url = await master();
    const queue = h.client().queue();
    const page = await open(url);
    await page.click('[data-queue="tasks"] button:text-is("Pause")');
    await shown(page, '[data-queue="tasks"] [data-paused="true"]');
    expect(await queue.isPaused()).toBe(true);
    // By keyboard too: the buttons are real buttons.
    await page.focus('[data-queue="tasks"] button:text-is("Resume")');
    await page.keyboard.press('Enter');
    await shown(page, '[data-queue="tasks"] [data-paused="false"]');
    expect(await queue.isPaused()).toBe(false);
  });

  it('lists a schedule with its next runs in its own time zone', async () => {
    const close = {
      name: 'close',
      cron: '30 16 * * 1-5',
      tz: 'America/New_York',
      module: 'record',
      params: [],
      tickers: ['AAPL', 'MSFT'],
      summary: { module: 'record', params: ['summary'] },
    };
    const url = await master({ schedules: [close] });
    const page = await load(url);
    const row = await shown(page, '[data-schedule="close"] .runs time');
    // Weekdays at 16:30 New York time, whatever the zone of the machine running the test.
    expect(await row.textContent()).toMatch(/^\d{4}-\d{2}-\d{2} 16:30 -0[45]:00$/);
    expect(await page.$$eval('[data-schedule="close"] .runs time', (t) => t.length)).toBe(3);
    expect(await page.textContent('[data-schedule="close"]')).toContain('never');
    await browser.screenshot(page, 'status-page-schedules', '#schedules');
  });

  it('mounts bull-board at /queues, listing the tasks', async () => {
    const url = await master();
    const [task] = await h.client().add({ module: 'record', params: ['bull-board'] });
    const page = await browser.page();
    await page.goto(`${url}/queues/queue/tasks?status=prioritized`);
    await shown(page, `text=${task!.id}`);
    await browser.screenshot(page, 'bull-board');
  });

  describe('with a token', () => {
    const token = `secret-${randomBytes(8).toString('hex')}`;
    it('refuses the page and an action without it, and allows both after logging in', async () => {
      const url = await master({ token });
      const page = await browser.page();
      const res = await page.goto(url);
      expect(res!.status()).toBe(401);
      await shown(page, 'input[name="token"]');
      expect(await page.$('#queue-table')).toBeNull();
      const refused = await page.evaluate(
        async (u) => (await fetch(`${u}/api/queues/tasks/pause`, { method: 'POST' })).status,
        url,
      );
      expect(refused).toBe(401);
      expect(await h.client().queue().isPaused()).toBe(false);

      await page.fill('input[name="token"]', token);
      await Promise.all([page.waitForNavigation(), page.press('input[name="token"]', 'Enter')]);
      await shown(page, '#live[data-state="live"]');
      await shown(page, '[data-queue="tasks"]');
      expect(await page.isHidden('#auth-banner')).toBe(true);
      await page.click('[data-queue="tasks"] button:text-is("Pause")');
      await shown(page, '[data-queue="tasks"] [data-paused="true"]');
      expect(await h.client().queue().isPaused()).toBe(true);

      // Logging out drops the cookie: the page asks for the token again.
      await Promise.all([page.waitForNavigation(), page.click('#logout button')]);
      await shown(page, 'input[name="token"]');
      await page.goto(url);
      await shown(page, 'input[name="token"]');
    });
  });
});
