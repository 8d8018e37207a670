// Buttons that change something: each POSTs, says what happened in the notice line, and
// lets the page refresh what it shows.
import { ApiError, enc, post } from './api.js';
import { byId, h } from './dom.js';

/** Says `text` in the page's live notice line (read out by screen readers). */
export function notify(text, kind = 'info') {
  const el = byId('notice');
  el.className = `notice notice-${kind}`;
  el.textContent = text;
  el.hidden = false;
}

const reason = (err) =>
  err instanceof ApiError
    ? `${err.message}${err.status === 401 ? ' (log in first)' : ''}`
    : String(err?.message ?? err);

/** Runs `fn`, with `button` disabled meanwhile; a failure goes to the notice line. */
export async function act(button, fn) {
  if (button) button.disabled = true;
  try {
    await fn();
  } catch (err) {
    notify(`Failed: ${reason(err)}`, 'error');
  } finally {
    if (button) button.disabled = false;
  }
}

/**
 * A button whose action is asked for again before it runs (cancel, remove, retry all): the
 * first press shows the question with a confirm and a keep button, focus on the confirm.
 */
export function confirmButton(label, question, run) {
  const wrap = h('span', { class: 'confirm' });
  const first = h('button', { type: 'button', onclick: () => ask() }, label);
  const ask = () => {
    const yes = h(
      'button',
      { type: 'button', class: 'danger', onclick: () => act(yes, run) },
      `Yes, ${label.toLowerCase()}`,
    );
    const no = h(
      'button',
      {
        type: 'button',
        onclick: () => {
          wrap.replaceChildren(first);
          first.focus();
        },
      },
      'Keep',
    );
    wrap.replaceChildren(h('span', { class: 'question' }, question, ' '), yes, ' ', no);
    yes.focus();
  };
  wrap.append(first);
  return wrap;
}

export const taskActions = {
  retry: (queue, id) => post(`/api/tasks/${enc(id)}/retry`, { queue }),
  cancel: (queue, id) => post(`/api/tasks/${enc(id)}/cancel`, { queue }),
  remove: (queue, id) => post(`/api/tasks/${enc(id)}/remove`, { queue }),
  retryFailed: (queue, module) => post(`/api/modules/${enc(module)}/retry-failed`, { queue }),
  setPaused: (queue, paused) => post(`/api/queues/${enc(queue)}/${paused ? 'pause' : 'resume'}`),
};

/** A button that queues every failed task of `module` again, asking first; `after` runs once it did. */
export function retryAllFailedButton(queue, module, after) {
  return confirmButton(`Retry all failed of ${module}`, `Queue every failed ${module} task again?`, async () => {
    const res = await taskActions.retryFailed(queue || undefined, module);
    const skipped = res.skipped?.length ? ` (${res.skipped.length} could not be: ${res.skipped[0].reason})` : '';
    notify(`Queued again: ${res.retried ?? 0} failed ${module} tasks${skipped}.`);
    await after();
  });
}
