// Schedules (cron patterns in a time zone) with their next runs and last firing.
import { api, enc } from './api.js';
import { ago, byId, h, table, time } from './dom.js';

/** A run time in the schedule's own zone (`2026-03-09 16:30 −04:00`), with UTC as its tooltip. */
function runTime(run) {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?(.*)$/.exec(run.local ?? '');
  const text = m ? `${m[1]} ${m[2]} ${m[3] === 'Z' ? 'UTC' : m[3]}` : run.utc;
  return h('time', { datetime: run.utc, title: `${run.utc} (UTC)` }, text);
}

function lastFiring(last, queue = '') {
  if (!last) return 'never';
  if (last.error) return h('span', { class: 'warn' }, time(last.firedAt), `: failed, ${last.error}`);
  const summary = last.summaryId
    ? [', summary ', h('a', { href: `#task/${enc(queue)}/${enc(last.summaryId)}` }, last.summary ?? 'task')]
    : [];
  return h(
    'span',
    { title: `scheduled for ${last.scheduledAt}` },
    `${ago(last.firedAt)}${last.manual ? ' (by hand)' : ''}: ${last.done ?? 0} of ${last.tasks} done`,
    last.failed ? `, ${last.failed} failed` : '',
    summary,
  );
}

export async function loadSchedules() {
  const el = byId('schedule-table');
  let res;
  try {
    res = await api('/api/schedules');
  } catch (err) {
    el.replaceChildren(h('p', { class: 'warn' }, `Cannot read the schedules: ${err.message}`));
    return;
  }
  const rows = (res?.schedules ?? []).map((s) => ({
    attrs: { 'data-schedule': s.name },
    cells: [
      h('strong', {}, s.name),
      h('code', {}, s.cron),
      s.tz,
      s.summary ? `${s.module}, then ${s.summary}` : s.module,
      String(s.tickers ?? 0),
      h(
        'span',
        { class: 'runs' },
        s.registered ? null : h('span', { class: 'run warn' }, 'not registered by a master yet'),
        s.overdue ? h('span', { class: 'run warn' }, 'overdue: ', runTime(s.overdue)) : null,
        (s.next ?? []).map((r) => h('span', { class: 'run' }, runTime(r))),
      ),
      lastFiring(s.last, s.queue),
    ],
  }));
  const headers = ['name', 'cron', 'time zone', 'module', 'tickers', 'next runs (its zone)', 'last firing'];
  el.replaceChildren(table('Schedules', headers, rows, 'No schedules configured.'));
}
