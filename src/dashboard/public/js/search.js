// Search over live and archived tasks, paged.
import { api, ApiError } from './api.js';
import { retryAllFailedButton } from './actions.js';
import { badge, byId, h, table, time } from './dom.js';
import { taskId } from './detail.js';

const PAGE_SIZE = 20;
const FIELDS = ['id', 'module', 'status', 'since', 'until', 'text', 'error', 'queue'];

const short = (value, max = 60) => {
  const text = value === undefined ? '' : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
};

export class TaskSearch {
  constructor({ onChange }) {
    this.form = byId('search-form');
    this.results = byId('results');
    this.page = 1;
    this.seq = 0;
    this.onChange = onChange;
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.page = 1;
      void this.run();
    });
  }

  query() {
    const data = new FormData(this.form);
    const q = {};
    for (const name of FIELDS) q[name] = String(data.get(name) ?? '').trim();
    return { ...q, page: this.page, pageSize: PAGE_SIZE };
  }

  /** Runs the form's search (again), on the current page. */
  async run() {
    for (const el of this.form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const q = this.query();
    // Only the latest search draws: an earlier one that answers late is dropped.
    const seq = ++this.seq;
    this.results.setAttribute('aria-busy', 'true');
    try {
      const res = await api('/api/tasks', { query: q });
      if (seq === this.seq) this.render(q, res);
    } catch (err) {
      if (seq !== this.seq) return;
      const input = err instanceof ApiError && err.param ? this.form.elements.namedItem(err.param) : null;
      if (input) input.setAttribute('aria-invalid', 'true');
      this.results.replaceChildren(h('p', { class: 'warn', role: 'alert' }, `Search failed: ${err.message}`));
    } finally {
      if (seq === this.seq) this.results.removeAttribute('aria-busy');
    }
  }

  go(page) {
    this.page = page;
    return this.run();
  }

  render(q, res) {
    const tasks = res.tasks ?? [];
    const rows = tasks.map((t) => {
      const id = taskId(t);
      const queue = t.queue ?? q.queue ?? 'tasks';
      return {
        attrs: { 'data-task': id },
        cells: [
          h('a', { href: `#task/${encodeURIComponent(queue)}/${encodeURIComponent(id)}` }, id),
          t.module,
          badge(t.status),
          h('code', {}, short(t.params)),
          time(t.created),
          time(t.finished),
          t.source === 'archive' ? 'archive' : 'Redis',
        ],
      };
    });
    const page = res.page ?? q.page;
    const size = res.pageSize ?? q.pageSize;
    const last = res.total !== undefined ? page * size >= res.total : tasks.length < size;
    const prev = h('button', { type: 'button', disabled: page <= 1, onclick: () => this.go(page - 1) }, '← Previous');
    const next = h('button', { type: 'button', disabled: last, onclick: () => this.go(page + 1) }, 'Next →');
    const found = res.total !== undefined ? `${res.total} tasks found` : `${tasks.length} tasks on this page`;
    const extra = q.module ? retryAllFailedButton(q.queue, q.module, () => this.onChange()) : null;
    this.results.replaceChildren(
      h('div', { class: 'result-bar' }, h('span', { role: 'status' }, `${found} (page ${page}).`), extra),
      table(
        'Tasks found',
        ['id', 'module', 'status', 'params', 'created', 'finished', 'where'],
        rows,
        'No task matches.',
      ),
      h('nav', { class: 'pager', 'aria-label': 'result pages' }, prev, h('span', {}, ` page ${page} `), next),
    );
  }
}
