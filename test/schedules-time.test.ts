import { defaultRepeatStrategy } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { nextRuns } from '../src/schedules/cron.ts';

/** The next runs as BullMQ's job scheduler computes them, one after the other, from `from`. */
function bullmqRuns(pattern: string, tz: string, from: string, count: number): string[] {
  const out: string[] = [];
  let millis = Date.parse(from);
  for (let i = 0; i < count; i++) {
    millis = defaultRepeatStrategy(millis, { pattern, tz }) as number;
    out.push(new Date(millis).toISOString());
  }
  return out;
}

/** [what, pattern, zone, from (UTC), expected runs as [local, utc]] */
const CASES: [string, string, string, string, [string, string][]][] = [
  [
    'New York weekday close across the March switch (EST to EDT, Sunday 8 March 2026)',
    '30 16 * * 1-5',
    'America/New_York',
    '2026-03-06T12:00:00Z',
    [
      ['2026-03-06T16:30:00.000-05:00', '2026-03-06T21:30:00.000Z'],
      ['2026-03-09T16:30:00.000-04:00', '2026-03-09T20:30:00.000Z'],
      ['2026-03-10T16:30:00.000-04:00', '2026-03-10T20:30:00.000Z'],
    ],
  ],
  [
    'New York weekday close across the November switch (EDT to EST, Sunday 1 November 2026)',
    '30 16 * * 1-5',
    'America/New_York',
    '2026-10-30T12:00:00Z',
    [
      ['2026-10-30T16:30:00.000-04:00', '2026-10-30T20:30:00.000Z'],
      ['2026-11-02T16:30:00.000-05:00', '2026-11-02T21:30:00.000Z'],
      ['2026-11-03T16:30:00.000-05:00', '2026-11-03T21:30:00.000Z'],
    ],
  ],
  [
    // 02:30 does not exist on 8 March in New York: that day's run is at 03:30 EDT.
    'New York 02:30 on the day it does not exist',
    '30 2 * * *',
    'America/New_York',
    '2026-03-07T12:00:00Z',
    [
      ['2026-03-08T03:30:00.000-04:00', '2026-03-08T07:30:00.000Z'],
      ['2026-03-09T02:30:00.000-04:00', '2026-03-09T06:30:00.000Z'],
      ['2026-03-10T02:30:00.000-04:00', '2026-03-10T06:30:00.000Z'],
    ],
  ],
  [
    // 01:30 happens twice on 1 November in New York: it runs once, at the first (EDT).
    'New York 01:30 on the day it happens twice',
    '30 1 * * *',
    'America/New_York',
    '2026-10-31T12:00:00Z',
    [
      ['2026-11-01T01:30:00.000-04:00', '2026-11-01T05:30:00.000Z'],
      ['2026-11-02T01:30:00.000-05:00', '2026-11-02T06:30:00.000Z'],
      ['2026-11-03T01:30:00.000-05:00', '2026-11-03T06:30:00.000Z'],
    ],
  ],
  [
    // An hourly pattern runs every real hour: both 01:00s of the repeated hour.
    'New York hourly through the repeated hour',
    '0 * * * *',
    'America/New_York',
    '2026-11-01T04:30:00Z',
    [
      ['2026-11-01T01:00:00.000-04:00', '2026-11-01T05:00:00.000Z'],
      ['2026-11-01T01:00:00.000-05:00', '2026-11-01T06:00:00.000Z'],
      ['2026-11-01T02:00:00.000-05:00', '2026-11-01T07:00:00.000Z'],
    ],
  ],
  [
    // Sydney moves forward on Sunday 4 October 2026 (02:00 AEST becomes 03:00 AEDT).
    'Sydney 02:30 on the day it does not exist',
    '30 2 * * *',
    'Australia/Sydney',
    '2026-10-03T00:00:00Z',
    [
      ['2026-10-04T03:30:00.000+11:00', '2026-10-03T16:30:00.000Z'],
      ['2026-10-05T02:30:00.000+11:00', '2026-10-04T15:30:00.000Z'],
      ['2026-10-06T02:30:00.000+11:00', '2026-10-05T15:30:00.000Z'],
    ],
  ],
  [
    // Sydney moves back on Sunday 5 April 2026 (03:00 AEDT becomes 02:00 AEST): 02:30 runs once.
    'Sydney 02:30 on the day it happens twice',
    '30 2 * * *',
    'Australia/Sydney',
    '2026-04-04T00:00:00Z',
    [
      ['2026-04-05T02:30:00.000+11:00', '2026-04-04T15:30:00.000Z'],
      ['2026-04-06T02:30:00.000+10:00', '2026-04-05T16:30:00.000Z'],
      ['2026-04-07T02:30:00.000+10:00', '2026-04-06T16:30:00.000Z'],
    ],
  ],
  [
    'Sydney market open across the April switch',
    '0 10 * * 1-5',
    'Australia/Sydney',
    '2026-04-02T12:00:00Z',
    [
      ['2026-04-03T10:00:00.000+11:00', '2026-04-02T23:00:00.000Z'],
      ['2026-04-06T10:00:00.000+10:00', '2026-04-06T00:00:00.000Z'],
      ['2026-04-07T10:00:00.000+10:00', '2026-04-07T00:00:00.000Z'],
    ],
  ],
  [
    'a 6-field pattern (seconds first)',
    '*/2 * * * * *',
    'UTC',
    '2026-12-04T10:00:00.500Z',
    [
      ['2026-12-04T10:00:02.000+00:00', '2026-12-04T10:00:02.000Z'],
      ['2026-12-04T10:00:04.000+00:00', '2026-12-04T10:00:04.000Z'],
      ['2026-12-04T10:00:06.000+00:00', '2026-12-04T10:00:06.000Z'],
    ],
  ],
];

describe('next runs across daylight-saving changes', () => {
  it.each(CASES)('%s', (_what, pattern, tz, from, expected) => {
    const runs = nextRuns(pattern, tz, new Date(from), expected.length);
    expect(runs.map((r) => [r.local, r.utc])).toEqual(expected);
    // The times listed are the times BullMQ's job scheduler fires at.
    expect(bullmqRuns(pattern, tz, from, expected.length)).toEqual(expected.map(([, utc]) => utc));
  });
});
