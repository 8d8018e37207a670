// A task's dependencies as a small SVG graph: what it waits for on the left, the task in the
// middle, what waits for it on the right; boxes coloured by status, each a link to its detail.
import { s } from './dom.js';

const NODE_H = 62;
const V_GAP = 14;
const TOP = 28;

const label = (n) => `${n.module ?? '?'}${n.id ? ` #${n.id}` : ''}: ${n.status ?? 'unknown'}`;

/** Cuts `text` to what fits in `width` px at the graph's font size (about 7 px a character). */
function fit(text, width) {
  const max = Math.max(4, Math.floor((width - 16) / 7));
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function node(n, x, y, w, current) {
  const status = n.status ?? 'unknown';
  const box = [
    s('title', {}, `${label(n)}${n.params === undefined ? '' : `\nparams: ${JSON.stringify(n.params)}`}`),
    s('rect', { x, y, width: w, height: NODE_H, rx: 6, class: `node status-${status}${current ? ' current' : ''}` }),
    s('text', { x: x + 8, y: y + 18, class: 'node-module' }, fit(n.module ?? '?', w)),
    s('text', { x: x + 8, y: y + 35, class: 'node-meta' }, fit(`${status} · ${n.id ? `#${n.id}` : 'no job yet'}`, w)),
    n.params === undefined
      ? null
      : s('text', { x: x + 8, y: y + 52, class: 'node-params' }, fit(JSON.stringify(n.params), w)),
  ];
  if (current || !n.id) return s('g', { 'data-node': n.id ?? '', 'aria-label': label(n), role: 'group' }, box);
  const href = `#task/${encodeURIComponent(n.queue ?? 'tasks')}/${encodeURIComponent(n.id)}`;
  return s('a', { href, 'data-node': n.id, 'aria-label': `open ${label(n)}` }, box);
}

function edge(x1, y1, x2, y2) {
  const mid = (x1 + x2) / 2;
  return s('path', {
    d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}`,
    class: 'edge',
    'marker-end': 'url(#arrow)',
  });
}

/**
 * The graph for `task` (with `dependencies` and `dependents`, each `{id, queue, module, status}`)
 * sized to `width` px.
 */
export function dependencyGraph(task, width) {
  const deps = task.dependencies ?? [];
  const dependents = task.dependents ?? [];
  const gap = width < 560 ? 22 : 56;
  const w = Math.min(280, Math.max(96, Math.floor((width - 2 * gap) / 3)));
  const rows = Math.max(deps.length, dependents.length, 1);
  const height = TOP + rows * (NODE_H + V_GAP);
  const cx = [0, w + gap, 2 * (w + gap)];
  const yOf = (i, n) => TOP + (rows - n) * ((NODE_H + V_GAP) / 2) + i * (NODE_H + V_GAP);
  const ty = yOf(0, 1);
  const mid = (y) => y + NODE_H / 2;
  const total = 3 * w + 2 * gap;

  return s(
    'svg',
    {
      viewBox: `0 0 ${total} ${height}`,
      width: total,
      height,
      class: 'graph',
      'aria-label': `dependencies of task ${task.id}`,
    },
    s(
      'defs',
      {},
      s(
        'marker',
        { id: 'arrow', viewBox: '0 0 10 10', refX: 1, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
        s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }),
      ),
    ),
    s('text', { x: cx[0], y: 14, class: 'col-title' }, deps.length ? 'waits for' : 'waits for nothing'),
    s('text', { x: cx[1], y: 14, class: 'col-title' }, 'this task'),
    s('text', { x: cx[2], y: 14, class: 'col-title' }, dependents.length ? 'waited for by' : 'nothing waits for it'),
    deps.map((d, i) => edge(cx[0] + w, mid(yOf(i, deps.length)), cx[1], mid(ty))),
    dependents.map((d, i) => edge(cx[1] + w, mid(ty), cx[2], mid(yOf(i, dependents.length)))),
    deps.map((d, i) => node(d, cx[0], yOf(i, deps.length), w, false)),
    node({ ...task, id: task.id }, cx[1], ty, w, true),
    dependents.map((d, i) => node(d, cx[2], yOf(i, dependents.length), w, false)),
  );
}
