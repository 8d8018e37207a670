// One task: its fields, logs, result or error, dependency graph and the actions that apply.
import { api, enc } from './api.js';
import { act, confirmButton, notify, retryAllFailedButton, taskActions } from './actions.js';
import { asking, badge, byId, duration, h, json, keepFocus, time } from './dom.js';
import { dependencyGraph } from './graph.js';

const LIVE = ['waiting', 'prioritized', 'delayed', 'waiting-children', 'active'];
const FINISHED = ['completed', 'failed', 'cancelled'];

export const taskId = (t) => String(t.id ?? t.jobId ?? t._id);

function field(name, value) {
  return [h('dt', {}, name), h('dd', {}, value ?? '–')];
}

function progressText(p) {
  if (p === undefined || p === null || p === 0) return '–';
  if (typeof p === 'number') return h('progress', { max: 100, value: p, 'aria-label': `progress ${p} %` }, `${p} %`);
  return json(p);
}

function outcome(t) {
  if (t.error) {
    return h(
      'div',
      { class: 'outcome error' },
      h('h3', {}, 'Error'),
      h('p', { 'data-error': '' }, t.error.message ?? String(t.error)),
      t.error.stack ? h('pre', { class: 'stack' }, t.error.stack) : null,
    );
  }
  if (t.status === 'completed')
    return h('div', { class: 'outcome' }, h('h3', {}, 'Result'), h('pre', {}, json(t.result)));
  return null;
}

function logs(t) {
  const lines = Array.isArray(t.logs) ? t.logs : (t.logs?.logs ?? []);
  if (!lines.length) return null;
  return h('div', {}, h('h3', {}, `Logs (${lines.length})`), h('pre', { class: 'logs' }, lines.join('\n')));
}

export class TaskDetail {
  constructor({ onChange, onOpen }) {
    this.section = byId('detail');
    this.body = byId('detail-body');
    this.onChange = onChange;
    this.onOpen = onOpen;
    this.current = undefined;
  }

  /** Shows a task (`queue`, `id`); `focus` moves the keyboard there (when the user opened it). */
  async open(queue, id, { focus = false } = {}) {
    this.current = { queue, id };
    this.section.hidden = false;
    byId('detail-title').textContent = `Task ${id}`;
    let task;
    try {
      task = await api(`/api/tasks/${enc(id)}`, { query: { queue } });
    } catch (err) {
      if (this.current?.id !== id) return;
      this.body.replaceChildren(h('p', { class: 'warn' }, `Cannot show task ${id}: ${err.message}`));
      return;
    }
    if (this.current?.id !== id || this.current?.queue !== queue) return;
    this.render({ ...task, id: taskId(task), queue: task.queue ?? queue });
    if (focus) byId('detail-title').focus();
  }

  /** Reads the shown task again (after an action, or when the overview changed). */
  refresh() {
    if (this.current && !this.section.hidden) return this.open(this.current.queue, this.current.id);
  }

  /** As refresh, unless a question of the task's actions waits for an answer. */
  follow() {
    if (!asking(this.body)) return this.refresh();
  }

  close() {
    this.current = undefined;
    this.section.hidden = true;
  }

  actions(t) {
    const out = [];
    const done = async (text) => {
      notify(text);
      await this.onChange();
    };
    if (FINISHED.includes(t.status)) {
      const label = t.source === 'archive' ? 'Re-queue from archive' : 'Retry';
      const b = h(
        'button',
        {
          type: 'button',
          onclick: () =>
            act(b, async () => {
              const res = await taskActions.retry(t.queue, t.id);
              const added = res.task?.id ?? res.id;
              await done(`Task ${t.id} queued again as ${added}${res.task?.duplicate ? ' (already queued)' : ''}.`);
              if (added) this.onOpen(t.queue, String(added));
            }),
        },
        label,
      );
      out.push(b);
    }
    if (t.status === 'failed') out.push(retryAllFailedButton(t.queue, t.module, () => this.onChange()));
    if (LIVE.includes(t.status)) {
      out.push(
        confirmButton('Cancel', `Cancel task ${t.id}?`, async () => {
          const res = await taskActions.cancel(t.queue, t.id);
          await done(`Task ${t.id}: ${res.state ?? res.result ?? 'cancel requested'}.`);
        }),
      );
    }
    if (FINISHED.includes(t.status)) {
      out.push(
        confirmButton('Remove', `Remove task ${t.id} for good, from Redis and the archive?`, async () => {
          const res = await taskActions.remove(t.queue, t.id);
          await done(`Task ${t.id} removed from ${res.from?.join(' and ') || 'nowhere: it was gone already'}.`);
        }),
      );
    }
    return h('div', { class: 'actions', role: 'group', 'aria-label': 'task actions' }, out);
  }

  render(t) {
    const graphWrap = h('div', { class: 'graph-wrap' });
    const parts = [
      h(
        'p',
        {},
        badge(t.status),
        ' ',
        h('strong', {}, t.module),
        ` in queue ${t.queue}`,
        t.source === 'archive' ? ' (from the archive)' : '',
      ),
      this.actions(t),
      h(
        'dl',
        { class: 'fields' },
        field('id', t.id),
        field('module', t.module),
        field('priority', String(t.priority ?? '–')),
        field('timeout', t.timeout ? duration(t.timeout) : '–'),
        field('attempts', `${t.attempts ?? 0}${t.starts && t.starts !== t.attempts ? ` (${t.starts} starts)` : ''}`),
        field('created', time(t.created)),
        field('started', time(t.started)),
        field('finished', time(t.finished)),
        field('duration', t.duration === undefined ? '–' : duration(t.duration)),
        field('progress', progressText(t.progress)),
        field('ran by', t.ranBy),
        t.retriedAs?.length
          ? field(
              'queued again as',
              t.retriedAs.map((id) => [h('a', { href: `#task/${enc(t.queue)}/${enc(id)}` }, id), ' ']),
            )
          : null,
      ),
      h('h3', {}, 'Params'),
      h('pre', { class: 'params' }, json(t.params)),
      outcome(t),
      logs(t),
      h('h3', {}, 'Dependencies'),
      graphWrap,
    ];
    keepFocus(this.body, () => {
      this.body.replaceChildren(...parts.filter(Boolean));
      const alone = !t.dependencies?.length && !t.dependents?.length;
      if (alone) graphWrap.append(h('p', { class: 'empty' }, 'It waits for no task, and no task waits for it.'));
      else graphWrap.append(dependencyGraph(t, graphWrap.clientWidth || this.body.clientWidth || 700));
    });
  }
}
