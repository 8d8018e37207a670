// A task's dependencies as a small SVG graph: what it waits for, the task, what waits for it;
// boxes coloured by status, each a link to its detail. Side by side where there is room, one
// above the other at phone width.
import { s } from './dom.js';

const NODE_H = 62;
const GAP = 14;
const TITLE_H = 24;
/** Below this width (px) the three columns would cut every label short: they are stacked instead. */
const STACK_BELOW = 520;

const label = (n) => `${n.module ?? '?'}${n.id ? ` #${n.id}` : ''}: ${n.status ?? 'unknown'}`;

/** Cuts `text` to what fits in `width` px at the graph's font size (about 7 px a character). */
function fit(text, width) {
  const max = Math.max(4, Math.floor((width - 16) / 7));
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function node(n, x, y, w, { current = false, queue }) {
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
  const href = `#task/${encodeURIComponent(n.queue ?? queue)}/${encodeURIComponent(n.id)}`;
  return s('a', { href, 'data-node': n.id, 'aria-label': `open ${label(n)}` }, box);
}

const path = (d, arrow) => s('path', { d, class: 'edge', 'marker-end': arrow ? 'url(#arrow)' : undefined });

/** A curve from the right side of one box to the left side of another. */
const curve = (x1, y1, x2, y2) => {
  const mid = (x1 + x2) / 2;
  return path(`M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}`, true);
};

const title = (x, y, text) => s('text', { x, y, class: 'col-title' }, text);

function svg(task, width, height, children) {
  return s(
    'svg',
    {
      viewBox: `0 0 ${width} ${height}`,
      width,
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
    children,
  );
}

const titles = (deps, dependents) => [
  deps.length ? 'waits for' : 'waits for nothing',
  'this task',
  dependents.length ? 'waited for by' : 'nothing waits for it',
];

/** Three columns: dependencies, the task, dependents; edges as curves between them. */
function columns(task, deps, dependents, width) {
  const gap = 56;
  const w = Math.min(280, Math.floor((width - 2 * gap) / 3));
  const rows = Math.max(deps.length, dependents.length, 1);
  const height = TITLE_H + rows * (NODE_H + GAP);
  const cx = [0, w + gap, 2 * (w + gap)];
  const yOf = (i, n) => TITLE_H + (rows - n) * ((NODE_H + GAP) / 2) + i * (NODE_H + GAP);
  const ty = yOf(0, 1);
  const mid = (y) => y + NODE_H / 2;
  const queue = task.queue;
  return svg(task, 3 * w + 2 * gap, height, [
    titles(deps, dependents).map((t, i) => title(cx[i], 14, t)),
    deps.map((_, i) => curve(cx[0] + w, mid(yOf(i, deps.length)), cx[1], mid(ty))),
    dependents.map((_, i) => curve(cx[1] + w, mid(ty), cx[2], mid(yOf(i, dependents.length)))),
    deps.map((d, i) => node(d, cx[0], yOf(i, deps.length), w, { queue })),
    node(task, cx[1], ty, w, { current: true, queue }),
    dependents.map((d, i) => node(d, cx[2], yOf(i, dependents.length), w, { queue })),
  ]);
}

/**
 * One group above the other (phone width): boxes full width, joined by a rail on the right from
 * each dependency into the task and from the task out to each dependent.
 */
function stacked(task, deps, dependents, width) {
  const w = width - 30;
  const rail = width - 12;
  const queue = task.queue;
  const out = [];
  let y = 0;
  const group = (text, nodes, opts = {}) => {
    out.push(title(0, y + 14, text));
    y += TITLE_H;
    return nodes.map((n) => {
      out.push(node(n, 0, y, w, { ...opts, queue }));
      const mid = y + NODE_H / 2;
      y += NODE_H + GAP;
      return mid;
    });
  };
  const [depsTitle, taskTitle, dependentsTitle] = titles(deps, dependents);
  const depMids = group(depsTitle, deps);
  const [taskMid] = group(taskTitle, [task], { current: true });
  const dependentMids = group(dependentsTitle, dependents);
  for (const m of depMids) out.push(path(`M${w},${m} H${rail} V${taskMid - 8}`, false));
  if (depMids.length) out.push(path(`M${rail},${taskMid - 8} V${taskMid} H${w + 6}`, true));
  for (const m of dependentMids) out.push(path(`M${w},${taskMid} H${rail} V${m} H${w + 6}`, true));
  return svg(task, width, y, out);
}

/**
 * The graph for `task` (with `dependencies` and `dependents`, each `{id, queue, module, status}`)
 * sized to `width` px.
 */
export function dependencyGraph(task, width) {
  const deps = task.dependencies ?? [];
  const dependents = task.dependents ?? [];
  return width < STACK_BELOW ? stacked(task, deps, dependents, width) : columns(task, deps, dependents, width);
}
