import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.ts';
import { ConfigError } from '../src/errors.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'taskmaster-schedules-config-'));
  mkdirSync(join(dir, 'conf'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const BASE = {
  name: 'close',
  cron: '30 16 * * 1-5',
  tz: 'America/New_York',
  module: 'tickerAnalysis',
  tickers: ['AAPL', 'MSFT'],
};

function load(schedules: unknown[]) {
  writeFileSync(join(dir, 'conf/tm.json'), JSON.stringify({ schedules }));
  return loadConfig({ TASKMASTER_CONFIG: 'conf/tm.json' }, dir);
}

function refusal(schedule: Record<string, unknown>): string {
  try {
    load([{ ...BASE, ...schedule }]);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('the config was accepted');
}

describe('schedules in the config file', () => {
  it('resolves a schedule: canonical zone, default zone UTC, tickers from a file relative to the config file', () => {
    writeFileSync(join(dir, 'conf/tickers.txt'), '# US large caps\nAAPL\n\n  MSFT   # software\nBRK.B\n^GSPC\n');
    const c = load([
      {
        ...BASE,
        tz: 'america/new_york',
        tickers: undefined,
        tickersFile: 'tickers.txt',
        summary: { module: 'tickerSummary' },
      },
      { name: 'utc', cron: '*/2 * * * * *', module: 'm', tickers: ['EURUSD=X'] },
    ]);
    expect(c.schedules[0]).toEqual({
      name: 'close',
      cron: '30 16 * * 1-5',
      tz: 'America/New_York',
      module: 'tickerAnalysis',
      params: [],
      tickers: ['AAPL', 'MSFT', 'BRK.B', '^GSPC'],
      tickersFile: join(dir, 'conf/tickers.txt'),
      summary: { module: 'tickerSummary', params: [] },
    });
    expect(c.schedules[1]).toMatchObject({ tz: 'UTC', cron: '*/2 * * * * *', tickers: ['EURUSD=X'] });
  });

  /** [what, schedule fields, field named, fragment of the message] */
  const REFUSED: [string, Record<string, unknown>, string, RegExp][] = [
    [
      'a cron pattern of 4 fields',
      { cron: '30 16 * *' },
      'cron',
      /must have 5 fields .* or 6 \(seconds first\).*got "30 16 \* \*"/,
    ],
    ['a cron pattern of 7 fields', { cron: '0 30 16 * * 1-5 2026' }, 'cron', /must have 5 fields/],
    ['a cron alias', { cron: '@daily' }, 'cron', /must have 5 fields/],
    [
      'a minute out of range',
      { cron: '61 16 * * 1-5' },
      'cron',
      /"61 16 \* \* 1-5" is not a valid cron pattern.*expected range 0-59/,
    ],
    ['a day that never comes', { cron: '0 0 30 2 *' }, 'cron', /is not a valid cron pattern/],
    [
      'an unknown time zone',
      { tz: 'Mars/Olympus_Mons' },
      'tz',
      /must be an IANA time zone such as "America\/New_York".*got "Mars\/Olympus_Mons"/,
    ],
    ['a UTC offset as a zone', { tz: '+05:00x' }, 'tz', /must be an IANA time zone/],
    [
      'a module that leaves the tasks folder',
      { module: '../secret' },
      'module',
      /"\.\.\/secret" is not allowed: letters, digits/,
    ],
    ['an absolute module path', { module: '/etc/passwd' }, 'module', /is not allowed/],
    ['a bad summary module', { summary: { module: 'a/../../b' } }, 'summary.module', /is not allowed/],
    [
      'a ticker with a space',
      { tickers: ['AAPL', 'BRK B'] },
      'tickers',
      /tickers\[1\]: "BRK B" is not a ticker: 1 to 32 letters, digits/,
    ],
    ['a ticker too long', { tickers: ['A'.repeat(33)] }, 'tickers', /is not a ticker/],
    [
      'a ticker listed twice',
      { tickers: ['AAPL', 'MSFT', 'AAPL'] },
      'tickers',
      /tickers\[2\]: "AAPL" is listed twice \(also tickers\[0\]\)/,
    ],
    ['no tickers', { tickers: [] }, 'tickers', /lists no ticker/],
    ['neither tickers nor a file', { tickers: undefined }, 'tickers', /give either "tickers".* or "tickersFile"/],
    ['both tickers and a file', { tickersFile: 'tickers.txt' }, 'tickers', /not both or neither/],
    [
      'a missing tickers file',
      { tickers: undefined, tickersFile: 'missing.txt' },
      'tickersFile',
      /cannot read .*conf\/missing\.txt: ENOENT/,
    ],
    [
      'an unknown placeholder',
      { params: [{ ticker: '{{tickr}}' }] },
      'params',
      /params\[0\]\.ticker: the placeholder \{\{tickr\}\} is unknown; allowed: \{\{ticker\}\}/,
    ],
    ['{{tickers}} inside a longer string', { params: ['all: {{tickers}}'] }, 'params', /\{\{tickers\}\} stands alone/],
    [
      '{{ticker}} in the summary',
      { summary: { module: 's', params: ['{{ticker}}'] } },
      'summary.params[0]',
      /\{\{ticker\}\} is unknown/,
    ],
    ['a zero timeout', { timeout: 0 }, 'timeout', />=1/],
    ['a priority out of range', { priority: 2_000_000 }, 'priority', /1000000/],
    ['an unknown field', { tickerFile: 'x' }, '', /Unrecognized key: "tickerFile"/],
  ];

  it.each(REFUSED)('refuses %s, naming the schedule and the field', (_what, fields, field, fragment) => {
    const message = refusal(fields);
    const prefix = 'TASKMASTER_CONFIG: conf/tm.json: schedules.0';
    expect(message.startsWith(field ? `${prefix}.${field}: schedule "close": ` : `${prefix}: `)).toBe(true);
    expect(message).toMatch(fragment);
  });

  it('refuses a bad line of a tickers file, naming the line', () => {
    writeFileSync(join(dir, 'conf/tickers.txt'), 'AAPL\n# comment\nMSFT\nNOT A TICKER\n');
    const message = refusal({ tickers: undefined, tickersFile: 'tickers.txt' });
    expect(message).toContain('schedules.0.tickersFile: schedule "close": ');
    expect(message).toMatch(/conf\/tickers\.txt: line 4: "NOT A TICKER" is not a ticker/);
  });

  it('refuses an empty tickers file and a ticker listed twice in one, naming the lines', () => {
    writeFileSync(join(dir, 'conf/empty.txt'), '# nothing yet\n\n');
    expect(refusal({ tickers: undefined, tickersFile: 'empty.txt' })).toMatch(
      /tickersFile: schedule "close": .*empty\.txt: lists no ticker/,
    );
    writeFileSync(join(dir, 'conf/twice.txt'), 'AAPL\nMSFT\nAAPL # again\n');
    expect(refusal({ tickers: undefined, tickersFile: 'twice.txt' })).toMatch(
      /line 3: "AAPL" is listed twice \(also line 1\)/,
    );
  });

  it('refuses two schedules of one name', () => {
    expect(() => load([BASE, { ...BASE, cron: '0 9 * * 1-5' }])).toThrow(
      /schedules\.1\.name: is also the name of schedules\[0\]; names must be unique/,
    );
  });
});
