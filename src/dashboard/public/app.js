// The status page: live overview over Socket.IO (`/status`), the rest from the JSON API.
import { api, onUnauthorized } from './js/api.js';
import { act, notify, taskActions } from './js/actions.js';
import { ThroughputChart } from './js/chart.js';
import { TaskDetail } from './js/detail.js';
import { byId, h } from './js/dom.js';
import { renderOverview } from './js/overview.js';
import { loadSchedules } from './js/schedules.js';
import { TaskSearch } from './js/search.js';

/** What an overview change reads again (chart, results, open task) is read at most this often. */
const FOLLOW_MS = 3000;
/** How often the overview is read while the live feed is down. */
const POLL_MS = 5000;

const chart = new ThroughputChart();
let queueNames = [];

onUnauthorized(() => {
  byId('login-banner').hidden = false;
});

/** `fn` run at most once per `ms`; a call meanwhile runs once the time is up, so the last state is shown. */
function throttled(ms, fn) {
  let last = 0;
  let timer;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = undefined;
      last = Date.now();
      fn();
    }, wait);
  };
}

const refreshChart = () => {
  const queue = byId('chart-queue').value;
  if (!queue) return;
  chart.load(queue, Number(byId('chart-hours').value)).catch((err) => {
    byId('chart-summary').textContent = `Cannot read the metrics: ${err.message}`;
  });
};

const actions = {
  setPaused: (queue, paused) =>
    act(null, async () => {
      await taskActions.setPaused(queue, paused);
      notify(`Queue ${queue} ${paused ? 'paused' : 'resumed'}.`);
      await refreshOverview();
    }),
};

/** Keeps the queue pickers (chart, search) in step with the queues the overview lists. */
function updateQueuePickers(queues) {
  const names = queues.map((q) => q.name);
  if (names.join('\n') === queueNames.join('\n')) return;
  queueNames = names;
  for (const id of ['chart-queue', 'search-queue']) {
    const select = byId(id);
    const kept = select.value;
    const options = names.map((n) => h('option', { value: n }, n));
    select.replaceChildren(...(id === 'search-queue' ? [h('option', { value: '' }, 'default')] : []), ...options);
    if (names.includes(kept)) select.value = kept;
  }
  refreshChart();
}

function showOverview(data) {
  renderOverview(data, actions);
  updateQueuePickers(data.queues ?? []);
  byId('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function refreshOverview() {
  showOverview(await api('/api/overview'));
}

const detail = new TaskDetail({
  onChange: () => afterChange(),
  onOpen: (queue, id) => {
    location.hash = `task/${encodeURIComponent(queue)}/${encodeURIComponent(id)}`;
  },
});
const search = new TaskSearch({ onChange: () => afterChange() });

/** After an action: what it may have changed is read again. */
async function afterChange() {
  await Promise.allSettled([refreshOverview(), search.run(), detail.refresh()]);
}

function route(focus) {
  const m = /^#task\/([^/]*)\/(.+)$/.exec(location.hash);
  if (m) void detail.open(decodeURIComponent(m[1]), decodeURIComponent(m[2]), { focus });
  else detail.close();
}

function connectLive() {
  const live = byId('live');
  const say = (text, state) => {
    live.textContent = text;
    live.dataset.state = state;
  };
  // Until the live feed is up, and while it is down (a proxy without websockets, a master
  // restarting), the overview is read every few seconds instead: the page never stands still.
  let polling;
  const poll = () => {
    polling ??= setInterval(() => refreshOverview().catch(() => undefined), POLL_MS);
  };
  // The HttpOnly auth cookie goes with the handshake (same origin); no token in the page.
  const socket = window.io('/status', { transports: ['websocket', 'polling'] });
  poll();
  socket.on('connect', () => {
    say('live', 'live');
    clearInterval(polling);
    polling = undefined;
  });
  socket.on('disconnect', () => {
    say('reconnecting…', 'down');
    poll();
  });
  socket.on('connect_error', (err) => {
    say(`not connected: ${err.message}`, 'down');
    if (/auth|token|401|unauthori/i.test(err.message)) byId('login-banner').hidden = false;
    else poll();
  });
  // The chart, the results and the open task move on with the tasks: read again, a few at a time.
  const follow = throttled(FOLLOW_MS, () => {
    refreshChart();
    void search.follow();
    void detail.follow();
  });
  socket.on('overview', (data) => {
    showOverview(data);
    follow();
  });
}

byId('chart-form').addEventListener('change', () => refreshChart());
byId('chart-form').addEventListener('submit', (e) => e.preventDefault());
byId('detail-close').addEventListener('click', () => {
  history.pushState(null, '', location.pathname + location.search);
  detail.close();
  byId('search-h').focus();
});
window.addEventListener('hashchange', () => route(true));
setInterval(() => refreshChart(), 60_000);
setInterval(() => void loadSchedules(), 30_000);

connectLive();
refreshOverview().catch((err) => notify(`Cannot read the overview: ${err.message}`, 'error'));
void loadSchedules();
void search.run();
route(false);
