import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll } from 'vitest';

/** Debian's chromium (`.ci/run` installs it when missing); playwright-core drives it. */
export const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 375, height: 812 };

export interface BrowserHarness {
  /** A new page in a fresh context (no cookies shared with other pages), closed after the test. */
  page(viewport?: { width: number; height: number }): Promise<Page>;
  /** Saves a full-page screenshot (or of the element `selector` matches) as test-artifacts/<name>.png. */
  screenshot(page: Page, name: string, selector?: string): Promise<string>;
}

/**
 * One headless Chromium per test file; each test's contexts are closed after it. Errors the
 * page throws or logs are collected, and a test fails when its page had one.
 */
export function useBrowser(): BrowserHarness {
  let browser: Browser | undefined;
  const contexts: BrowserContext[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
  });
  afterAll(async () => {
    await browser?.close();
  });
  afterEach(async () => {
    while (contexts.length) await contexts.pop()!.close();
    const errors = pageErrors.splice(0);
    if (errors.length) throw new Error(`the page reported errors:\n${errors.join('\n')}`);
  });

  return {
    async page(viewport = DESKTOP) {
      const context = await browser!.newContext({ viewport });
      contexts.push(context);
      const page = await context.newPage();
      page.on('pageerror', (err) => pageErrors.push(`page error: ${err.message}`));
      return page;
    },
    async screenshot(page, name, selector) {
      mkdirSync(ARTIFACTS, { recursive: true });
      const path = `${ARTIFACTS}${name}.png`;
      if (selector) await page.locator(selector).screenshot({ path });
      else await page.screenshot({ path, fullPage: true });
      return path;
    },
  };
}
