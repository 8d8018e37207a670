// The live part of the page: what the server sends on `overview` (and GET /api/overview).
import { ago, byId, duration, h, keepFocus, table } from './dom.js';

/**
 * The columns of the queue table, in the order a task goes through them. Waiting counts BullMQ's
 * `waiting` and `prioritized` together (every legacy task has a priority, so it is `prioritized`
 * in BullMQ's terms); its tooltip tells them apart.
 */
export const STATES = [
  ['waiting', 'waiting', (c) => (c.waiting ?? 0) + (c.prioritized ?? 0)],
  ['delayed', 'delayed'],
  ['waiting-children', 'blocked on dependencies'],
  ['active', 'active'],
  ['completed', 'completed'],
  ['failed', 'failed'],
];

function countCell(counts, [state, , of]) {
  const n = of ? of(counts) : (counts[state] ?? 0);
  const title = of ? `${counts.waiting ?? 0} without priority, ${counts.prioritized ?? 0} with one` : undefined;
  return h('span', { 'data-count': state, title }, String(n));
}

const taskLink = (queue, id) => h('a', { href: `#task/${encodeURIComponent(queue)}/${encodeURIComponent(id)}` }, id);

function queuesTable(queues, actions) {
  const rows = queues.map((q) => ({
    attrs: { 'data-queue': q.name },
    cells: [
      h('strong', {}, q.name),
      q.paused
        ? h('span', { class: 'badge status-paused', 'data-paused': 'true' }, 'paused')
        : h('span', { class: 'badge status-running', 'data-paused': 'false' }, 'running'),
      ...STATES.map((s) => countCell(q.counts ?? {}, s)),
      q.oldestWaitingAgeMs === undefined || q.oldestWaitingAgeMs === null ? '–' : duration(q.oldestWaitingAgeMs),
      h(
        'button',
        {
          type: 'button',
          class: 'small',
          onclick: () => actions.setPaused(q.name, !q.paused),
          'data-key': `pause:${q.name}`,
          'aria-label': `${q.paused ? 'Resume' : 'Pause'} queue ${q.name}`,
        },
        q.paused ? 'Resume' : 'Pause',
      ),
    ],
  }));
  const headers = ['queue', 'state', ...STATES.map(([, label]) => label), 'oldest waiting', 'action'];
  return table('Tasks per queue, by state', headers, rows, 'No queues yet.');
}

function alertsList(alerts) {
  if (!alerts.length) return h('p', { class: 'empty' }, 'No alerts.');
  return h(
    'ul',
    { class: 'alerts' },
    alerts.map((a) =>
      h(
        'li',
        { class: `alert alert-${a.kind}`, 'data-alert': a.kind },
        h('strong', {}, `${a.kind.replace(/-/g, ' ')}: `),
        a.message,
      ),
    ),
  );
}

function archiveText(archive) {
  if (!archive?.enabled)
    return h('p', {}, 'No archive: finished tasks stay in Redis only (set MONGO_URL to keep their history).');
  const parts = [
    h(
      'p',
      { 'data-archive-pending': String(archive.pending ?? 0) },
      `${archive.pending ?? 0} finished tasks waiting to be archived`,
      archive.oldestAgeMs === undefined ? '.' : `; the oldest finished ${duration(archive.oldestAgeMs)} ago.`,
    ),
  ];
  if (archive.setAside)
    parts.push(
      h('p', { class: 'warn' }, `${archive.setAside} set aside: MongoDB refused them (see the master's log).`),
    );
  if (archive.lastError) parts.push(h('p', { class: 'warn' }, `Last error: ${archive.lastError}`));
  return parts;
}

const count = (v) => (Array.isArray(v) ? v.length : (v ?? 0));
const list = (v) => (Array.isArray(v) && v.length ? v.join(', ') : '–');

function heldCell(runner) {
  const held = runner.held;
  if (!Array.isArray(held)) return String(held ?? 0);
  const links = held.slice(0, 5).map((id) => [taskLink(runner.queue ?? runner.queues?.[0] ?? 'tasks', id), ' ']);
  return h('span', {}, `${held.length} `, links);
}

/** A table of `items` as `spec` says: a column per `[header, cell of an item]`, rows marked `data-<name>`. */
function listTable(spec, items) {
  const rows = items.map((item) => ({
    attrs: { [`data-${spec.name}`]: spec.key(item) },
    cells: spec.columns.map(([, cell]) => cell(item)),
  }));
  const headers = spec.columns.map(([header]) => header);
  return table(spec.caption, headers, rows, spec.empty);
}

const connected = [
  ['name', (c) => c.name ?? '(unnamed)'],
  ['address', (c) => c.address ?? '–'],
  ['client', (c) => c.version ?? '–'],
];
const seen = [
  ['connected', (c) => ago(c.since)],
  ['last seen', (c) => ago(c.lastSeen)],
];
const byName = (c) => c.name ?? c.address;

/** The lists of the overview: drawn in #<name>-table and counted in #<name>-count. */
const LISTS = {
  runners: {
    name: 'runner',
    caption: 'Connected remote runners',
    key: byName,
    columns: [...connected, ['slots', (r) => String(r.slots ?? 1)], ['tasks held', heldCell], ...seen],
    empty: 'No remote runner is connected.',
  },
  feeders: {
    name: 'feeder',
    caption: 'Connected feeders',
    key: byName,
    columns: [...connected, ['tasks added', (f) => String(f.added ?? 0)], ...seen],
    empty: 'No feeder is connected.',
  },
  workerProcesses: {
    name: 'worker',
    caption: 'Worker processes',
    key: (w) => w.id,
    columns: [
      ['host', (w) => w.host ?? '–'],
      ['pid', (w) => String(w.pid ?? '–')],
      ['queues', (w) => list(w.queues)],
      ['modules', (w) => list(w.modules)],
      ['running', (w) => `${count(w.running)} / ${w.concurrency ?? 1}`],
      ['started', (w) => ago(w.since)],
      ['last seen', (w) => ago(w.lastSeen)],
    ],
    empty: 'No worker process is running.',
  },
};

/** Replaces what `id` shows; the keyboard stays on the button or link it was on (see keepFocus). */
function put(id, ...content) {
  const el = byId(id);
  keepFocus(el, () => el.replaceChildren(...content.flat()));
}

/** Draws everything the overview holds; `actions` are the page's handlers for its buttons. */
export function renderOverview(data, actions) {
  byId('auth-banner').hidden = Boolean(data.auth?.required);
  byId('logout').hidden = !data.auth?.required;
  put('alert-list', alertsList(data.alerts ?? []));
  byId('alerts').classList.toggle('has-alerts', Boolean(data.alerts?.length));
  put('queue-table', queuesTable(data.queues ?? [], actions));
  put('archive-lag', archiveText(data.archive));
  for (const [field, spec] of Object.entries(LISTS)) {
    const items = data[field] ?? [];
    put(`${spec.name}-table`, listTable(spec, items));
    byId(`${spec.name}-count`).textContent = String(items.length);
  }
}
