import type { Queue } from 'bullmq';
import type { ScheduleConfig } from '../config/config-file.ts';
import type { IdentityStore } from '../tasks/identity-store.ts';
import { localIso, nextRuns, type RunTime } from './cron.ts';
import type { FiringProgress, FiringRecords } from './firing-records.ts';

/** One schedule as `taskmaster schedules` and `GET /api/schedules` show it. */
export interface ScheduleStatus {
  name: string;
  cron: string;
  tz: string;
  module: string;
  tickers: number;
  tickersFile?: string;
  /** The summary task's module, when there is one. */
  summary?: string;
  /** Whether a master has made it a job scheduler in Redis (false: only in this config file so far). */
  registered: boolean;
  /** The pending firing, when its time has passed: it fires as soon as a master runs. */
  overdue?: RunTime;
  /** The next three runs after now. */
  next: RunTime[];
  last?: FiringProgress;
}

export interface ScheduleSources {
  /** The internal schedules queue (see schedules.ts). */
  queue: Queue<ScheduleConfig>;
  records: FiringRecords;
  store: IdentityStore;
  /** Schedules of the config file in use, shown too when no master registered them yet. */
  configured?: readonly ScheduleConfig[];
}

/** Schedules as registered in Redis (what fires), and those of the config file not registered yet, by name. */
export async function findSchedules(src: Pick<ScheduleSources, 'queue' | 'configured'>) {
  const found = new Map<string, { schedule: ScheduleConfig; registered: boolean; next?: number }>();
  for (const s of await src.queue.getJobSchedulers(0, -1)) {
    const data = s.template?.data;
    if (data) found.set(s.key, { schedule: data, registered: true, next: s.next });
  }
  for (const s of src.configured ?? []) if (!found.has(s.name)) found.set(s.name, { schedule: s, registered: false });
  return found;
}

/** Every schedule with its next runs and its last firing, by name. */
export async function scheduleStatus(src: ScheduleSources, now = new Date()): Promise<ScheduleStatus[]> {
  const found = await findSchedules(src);
  const out: ScheduleStatus[] = [];
  for (const name of [...found.keys()].sort()) {
    const { schedule: s, registered, next } = found.get(name)!;
    const status: ScheduleStatus = {
      name,
      cron: s.cron,
      tz: s.tz,
      module: s.module,
      tickers: s.tickers.length,
      registered,
      next: nextRuns(s.cron, s.tz, now, 3),
    };
    if (s.tickersFile) status.tickersFile = s.tickersFile;
    if (s.summary) status.summary = s.summary.module;
    if (next !== undefined && next <= now.getTime()) {
      status.overdue = { utc: new Date(next).toISOString(), local: localIso(next, s.tz) };
    }
    const last = await src.records.last(name, src.store);
    if (last) status.last = last;
    out.push(status);
  }
  return out;
}

/** The text `taskmaster schedules` prints. */
export function formatSchedules(list: readonly ScheduleStatus[]): string {
  if (!list.length) return 'no schedules (add them to the config file named by TASKMASTER_CONFIG, then start a master)';
  return list.map(formatOne).join('\n\n');
}

function formatOne(s: ScheduleStatus): string {
  const tickers = `${s.tickers} ticker${s.tickers === 1 ? '' : 's'}`;
  const what = `${s.module} for ${tickers}${s.summary ? `, then ${s.summary}` : ''}`;
  const lines = [
    `${s.name}: "${s.cron}" in ${s.tz}: ${what}${s.registered ? '' : ' (not registered yet: start a master)'}`,
  ];
  if (s.overdue) lines.push(`  overdue:     ${s.overdue.local}  (${s.overdue.utc}): fires once a master runs`);
  s.next.forEach((r, i) => lines.push(`  ${i ? ' '.repeat(10) : 'next runs:'}  ${r.local}  (${r.utc})`));
  const l = s.last;
  if (!l) lines.push('  last firing: none yet');
  else if (l.error) lines.push(`  last firing: ${l.scheduledAt}${l.manual ? ' (by hand)' : ''} failed: ${l.error}`);
  else {
    const summary = l.summary ? `; summary ${l.summary}` : '';
    lines.push(
      `  last firing: ${l.scheduledAt}${l.manual ? ' (by hand)' : ''}, at ${l.firedAt}: ` +
        `${l.added} of ${l.tasks} task(s) added, ${l.done} done, ${l.failed} failed${summary}`,
    );
  }
  return lines.join('\n');
}
