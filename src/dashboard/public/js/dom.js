// Small DOM helpers: elements are built with textContent, never innerHTML, so nothing a task
// carries (params, errors, logs) can become markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'text') el.textContent = String(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** An HTML element: `h('a', { href: '#x', class: 'y' }, 'text', otherNode)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, as `h` builds HTML ones. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

/**
 * A table with a header row. A row is an array of cells (text or nodes), or `{ attrs, cells }`
 * to give the row attributes (tests and styles find rows by them).
 */
export function table(caption, headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      caption ? h('caption', { class: 'visually-hidden' }, caption) : null,
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          headers.map((t) => h('th', { scope: 'col' }, t)),
        ),
      ),
      h(
        'tbody',
        {},
        rows.map((row) => {
          const { attrs, cells } = Array.isArray(row) ? { attrs: {}, cells: row } : row;
          return h(
            'tr',
            attrs,
            cells.map((c, i) => h('td', { 'data-label': headers[i] }, c)),
          );
        }),
      ),
    ),
  );
}

/** A status as a coloured badge (colours in style.css, by status). */
export function badge(status) {
  return h('span', { class: `badge status-${status}` }, status);
}

/** "3 s", "4 min", "2 h 5 min", "3 d": a duration for people. */
export function duration(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return '–';
  const sec = Math.round(ms / 1000);
  if (sec < 60) return `${sec} s`;
  const min = Math.floor(sec / 60);
  if (min < 60) return `${min} min`;
  const hours = Math.floor(min / 60);
  if (hours < 48) return `${hours} h ${min % 60} min`;
  return `${Math.floor(hours / 24)} d`;
}

/** A time as local date and time, with the full ISO form as its tooltip. */
export function time(value) {
  if (value === undefined || value === null || value === '') return '–';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return h('time', { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

/** "5 min ago" from a time. */
export function ago(value) {
  if (value === undefined || value === null) return '–';
  return `${duration(Date.now() - new Date(value).getTime())} ago`;
}

/** JSON shown as text, pretty when it is short enough to read that way. */
export function json(value) {
  if (value === undefined) return '–';
  const text = JSON.stringify(value, null, 2);
  return text === undefined ? String(value) : text;
}

/**
 * Runs `render` (which redraws part of `container`) keeping the keyboard where it was: the
 * element that had focus is looked for again by its `data-key`, or else its tag, text and link.
 */
export function keepFocus(container, render) {
  const active = document.activeElement;
  const was = active && container.contains(active) ? active : undefined;
  const key = (el) => el.dataset.key ?? `${el.tagName}|${el.getAttribute('href') ?? ''}|${el.textContent}`;
  const wanted = was && key(was);
  render();
  if (!wanted || container.contains(was)) return;
  const again = [...container.querySelectorAll(was.tagName)].find((el) => key(el) === wanted);
  // preventScroll: a redraw must not move the page under the reader.
  again?.focus({ preventScroll: true });
}

/** Whether `container` holds a question waiting for an answer (see confirmButton). */
export function asking(container) {
  return Boolean(container.querySelector('.confirm .question'));
}
