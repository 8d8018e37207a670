import { describe, expect, it } from 'vitest';
import { startMaster } from '../src/app.ts';
import type { Config } from '../src/config/config.ts';
import { useHarness } from './support/harness.ts';

/** What the page loads: the scripts and styles of index.html, and every module they import. */
async function pageFiles(base: string): Promise<Map<string, string>> {
  const seen = new Map<string, string>();
  const html = await (await fetch(`${base}/`)).text();
  const queue = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);
  while (queue.length) {
    const path = queue.shift()!;
    if (seen.has(path)) continue;
    const res = await fetch(`${base}${path}`);
    seen.set(path, `${res.status} ${res.headers.get('content-type')}`);
    if (!path.endsWith('.js') || path.includes('/vendor/')) continue;
    const text = await res.text();
    for (const m of text.matchAll(/ from '(\.[^']+)';/g)) queue.push(new URL(m[1]!, `${base}${path}`).pathname);
  }
  return seen;
}

describe('status page: its files on the master', () => {
  const h = useHarness();

  async function master(extra: Partial<Config> = {}): Promise<string> {
    const m = await startMaster(Object.freeze({ ...h.config, port: 0, host: '127.0.0.1', ...extra }), h.log);
    h.defer(() => m.close());
    return `http://127.0.0.1:${m.port}`;
  }

  it('serves the page and every file it loads, the vendor files from node_modules, with their types', async () => {
    const base = await master();
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const files = await pageFiles(base);
    for (const f of ['/assets/app.js', '/assets/js/graph.js', '/assets/vendor/uPlot.iife.min.js'])
      expect(files.has(f)).toBe(true);
    for (const [path, answer] of files) {
      const type = path.endsWith('.css') ? 'text/css' : 'text/javascript';
      expect(`${path}: ${answer}`).toBe(`${path}: 200 ${type}; charset=utf-8`);
    }
  });

  it('answers 404 for any other path under /assets, without reaching the file system', async () => {
    const base = await master();
    for (const path of [
      '/assets/nope.js',
      '/assets/vendor/uPlot.cjs.js',
      '/assets/%2e%2e/routes.ts',
      '/assets/js/../../routes.ts',
    ]) {
      const res = await fetch(`${base}${path}`);
      expect(`${path}: ${res.status}`).toBe(`${path}: 404`);
      expect(await res.json()).toMatchObject({ code: 'NOT_FOUND' });
    }
  });

  it('with a token, refuses the page and its files without it: 401, the login form for a browser', async () => {
    const token = 'status-page-token';
    const base = await master({ token });
    const browser = await fetch(`${base}/`, { headers: { accept: 'text/html' } });
    expect(browser.status).toBe(401);
    expect(await browser.text()).toContain('name="token"');
    const script = await fetch(`${base}/assets/app.js`);
    expect(script.status).toBe(401);
    const allowed = await fetch(`${base}/assets/app.js`, { headers: { authorization: `Bearer ${token}` } });
    expect(allowed.status).toBe(200);
  });
});
