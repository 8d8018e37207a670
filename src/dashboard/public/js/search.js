// Search over live and archived tasks, paged.
import { api, ApiError } from './api.js';
import { retryAllFailedButton } from './actions.js';
import { asking, badge, byId, h, keepFocus, table, time } from './dom.js';
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
    this.status = byId('search-status');
    this.seq = 0;
    this.onChange = onChange;
    this.q = this.fromForm(1);
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.q = this.fromForm(1);
      void this.run({ announce: true });
    });
  }

  /** The form's query (as submitted: a search runs what was last submitted, not what is being typed). */
  fromForm(page) {
    const data = new FormData(this.form);
    const q = {};
    for (const name of FIELDS) q[name] = String(data.get(name) ?? '').trim();
    return { ...q, page, pageSize: PAGE_SIZE };
  }

  /** Runs the last submitted search (again); `announce` says the outcome to screen readers. */
  async run({ announce = false } = {}) {
    for (const el of this.form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const q = this.q;
    // Only the latest search draws: an earlier one that answers late is dropped.
    const seq = ++this.seq;
    this.results.setAttribute('aria-busy', 'true');
    try {
      const res = await api('/api/tasks', { query: q });
      if (seq !== this.seq) return;
      const said = this.render(q, res);
      if (announce) this.status.textContent = said;
    } catch (err) {
      if (seq !== this.seq) return;
      const input = err instanceof ApiError && err.param ? this.form.elements.namedItem(err.param) : null;
      if (input) input.setAttribute('aria-invalid', 'true');
      this.results.replaceChildren(h('p', { class: 'warn' }, `Search failed: ${err.message}`));
      this.status.textContent = `Search failed: ${err.message}`;
    } finally {
      if (seq === this.seq) this.results.removeAttribute('aria-busy');
    }
  }

  /** Runs the search again as the tasks change, unless a question of its actions waits for an answer. */
  follow() {
    if (!asking(this.results)) return this.run();
  }

  go(page) {
    this.q = { ...this.q, page };
    return this.run({ announce: true });
  }

  /** Draws the results; returns the one line that sums them up. */
  render(q, res) {
    const tasks = res.tasks ?? [];
    const rows = tasks.map((t) => {
      const id = taskId(t);
      const queue = t.queue ?? q.queue;
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
    const last = res.hasMore !== undefined ? !res.hasMore : tasks.length < size;
    const prev = h('button', { type: 'button', disabled: page <= 1, onclick: () => this.go(page - 1) }, '← Previous');
    const next = h('button', { type: 'button', disabled: last, onclick: () => this.go(page + 1) }, 'Next →');
    const said = `${tasks.length} tasks on page ${page}${last ? '' : ', more on the next'}.`;
    const extra = q.module ? retryAllFailedButton(q.queue, q.module, () => this.onChange()) : null;
    const headers = ['id', 'module', 'status', 'params', 'created', 'finished', 'where'];
    keepFocus(this.results, () =>
      this.results.replaceChildren(
        h('div', { class: 'result-bar' }, h('span', {}, said), extra),
        table('Tasks found', headers, rows, 'No task matches.'),
        h('nav', { class: 'pager', 'aria-label': 'result pages' }, prev, h('span', {}, ` page ${page} `), next),
      ),
    );
    return said;
  }
}
