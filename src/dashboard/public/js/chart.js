// Completed and failed tasks per minute, drawn with uPlot (served from node_modules).
import { api } from './api.js';
import { byId } from './dom.js';

const HEIGHT = 220;

export class ThroughputChart {
  constructor() {
    this.plot = undefined;
    this.el = byId('chart');
    new ResizeObserver(() => this.plot?.setSize(this.size())).observe(this.el);
  }

  size() {
    return { width: Math.max(240, this.el.clientWidth), height: HEIGHT };
  }

  /** Fetches the queue's metrics and draws them; `hours` back from now. */
  async load(queue, hours) {
    const m = await api('/api/metrics', { query: { queue, hours } });
    const step = (m.stepMs ?? 60_000) / 1000;
    const start = new Date(m.start).getTime() / 1000;
    const xs = m.completed.map((_, i) => start + i * step);
    const data = [xs, m.completed, m.failed];
    const sum = (a) => a.reduce((x, y) => x + y, 0);
    byId('chart-summary').textContent =
      `Queue ${m.queue}, last ${hours} h: ${sum(m.completed)} completed, ${sum(m.failed)} failed.`;
    this.el.dataset.points = String(xs.length);
    if (this.plot && this.plot.series.length === 3 && this.queue === queue) {
      this.plot.setData(data);
      return;
    }
    this.queue = queue;
    this.plot?.destroy();
    this.plot = new window.uPlot(
      {
        ...this.size(),
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        axes: [{}, { label: 'tasks per minute', size: 60 }],
        series: [
          {},
          { label: 'completed', stroke: '#1a7f37', fill: 'rgba(26,127,55,0.12)', width: 2 },
          { label: 'failed', stroke: '#cf222e', fill: 'rgba(207,34,46,0.12)', width: 2 },
        ],
      },
      data,
      this.el,
    );
  }
}
