// Schedules (cron patterns in a time zone) with their next runs and last firing.
import { api } from './api.js';
import { byId, h, table, time } from './dom.js';

const list = (v) => (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]);

export async function loadSchedules() {
  const el = byId('schedule-table');
  let res;
  try {
    res = await api('/api/schedules');
  } catch (err) {
    el.replaceChildren(h('p', { class: 'warn' }, `Cannot read the schedules: ${err.message}`));
    return;
  }
  const schedules = Array.isArray(res) ? res : (res?.schedules ?? []);
  const rows = schedules.map((s) => {
    const next = list(s.nextRuns ?? s.next);
    const last = s.lastFiring ?? s.last;
    return {
      attrs: { 'data-schedule': s.name },
      cells: [
        h('strong', {}, s.name),
        h('code', {}, s.cron ?? s.pattern ?? '–'),
        s.tz ?? 'UTC',
        s.module ?? '–',
        String(list(s.tickers).length || '–'),
        next.length
          ? h(
              'span',
              {},
              next.slice(0, 3).map((t, i) => [i ? ', ' : '', time(t)]),
            )
          : '–',
        last
          ? h(
              'span',
              {},
              time(last.at ?? last.firedAt ?? last),
              last.tasks !== undefined ? ` (${last.tasks} tasks)` : '',
            )
          : 'never',
      ],
    };
  });
  el.replaceChildren(
    table(
      'Schedules',
      ['name', 'cron', 'time zone', 'module', 'tickers', 'next runs', 'last fired'],
      rows,
      'No schedules configured.',
    ),
  );
}
