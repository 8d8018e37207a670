import { createRequire } from 'node:module';
import type * as CronParser from 'cron-parser';

const require = createRequire(import.meta.url);

/** cron-parser (with luxon) is loaded when a schedule is first read, not by every command that reads the config. */
function cronParser(): typeof CronParser.CronExpressionParser {
  return (require('cron-parser') as typeof CronParser).CronExpressionParser;
}

/** The zone a schedule runs in when it names none: the same instant on every master, wherever it runs. */
export const DEFAULT_TZ = 'UTC';

export const CRON_RULE =
  '5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), e.g. "30 16 * * 1-5"';

/**
 * What is wrong with a cron pattern, or undefined. The pattern is read by cron-parser, as BullMQ's
 * job schedulers read it, and must yield a next run: `0 0 30 2 *` (never) is refused too.
 */
export function cronProblem(pattern: string, tz: string): string | undefined {
  const fields = pattern.trim().split(/\s+/);
  // cron-parser also takes 4 fields or an alias such as @daily; a count that is not 5 or 6 is a typo here.
  if (fields.length !== 5 && fields.length !== 6) return `must have ${CRON_RULE}, got ${JSON.stringify(pattern)}`;
  try {
    cronParser().parse(pattern, { tz }).next();
  } catch (err) {
    return `${JSON.stringify(pattern)} is not a valid cron pattern (${CRON_RULE}): ${(err as Error).message}`;
  }
  return undefined;
}

/**
 * A time zone's canonical IANA name (`america/new_york` → `America/New_York`), or a problem
 * when the runtime does not know it.
 */
export function canonicalTz(tz: string): { tz: string } | { problem: string } {
  try {
    const name = new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
    cronParser().parse('0 0 * * *', { tz: name }).next();
    return { tz: name };
  } catch {
    return {
      problem:
        'must be an IANA time zone such as "America/New_York", "Australia/Sydney" or "UTC", ' +
        `got ${JSON.stringify(tz)}`,
    };
  }
}

/** One run time, as an instant and as the wall-clock time in the schedule's zone. */
export interface RunTime {
  /** ISO 8601 in UTC. */
  utc: string;
  /** ISO 8601 with the zone's offset, e.g. 2026-03-09T16:30:00.000-04:00. */
  local: string;
}

/**
 * The next `count` runs of a pattern in a zone after `from`, computed as BullMQ computes the
 * next firing of a job scheduler (cron-parser with the same options).
 */
export function nextRuns(pattern: string, tz: string, from: Date, count: number): RunTime[] {
  const it = cronParser().parse(pattern, { tz, currentDate: from });
  const out: RunTime[] = [];
  for (let i = 0; i < count; i++) {
    const d = it.next();
    out.push({ utc: d.toISOString()!, local: localIso(d.getTime(), tz) });
  }
  return out;
}

/** An instant as ISO 8601 wall-clock time in `tz`, with that zone's offset at that instant. */
export function localIso(ms: number, tz: string): string {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    })
      .formatToParts(new Date(ms))
      .map((p) => [p.type, p.value]),
  );
  const wall = Date.UTC(+parts.year!, +parts.month! - 1, +parts.day!, +parts.hour!, +parts.minute!, +parts.second!);
  const offsetMin = Math.round((wall - Math.floor(ms / 1000) * 1000) / 60_000);
  const sign = offsetMin < 0 ? '-' : '+';
  const abs = Math.abs(offsetMin);
  const offset = `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
  const millis = String(((ms % 1000) + 1000) % 1000).padStart(3, '0');
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:${parts.second}.${millis}${offset}`;
}
