// A small line chart in inline SVG: a time series of the figures the node view polls. No
// library; colours come from the style sheet (classes), so light and dark both work.

import { s, h, fmtNumber } from '/ui/assets/js/dom.js';

const W = 600;
const H = 160;
const PAD = { left: 44, right: 12, top: 12, bottom: 22 };

/** A "nice" upper bound for the y axis (1, 2, 5 × 10^n). */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

export class LineChart {
  /** {title, unit, digits, windowMs, testid} */
  constructor({ title, unit = '', digits = 1, windowMs = 5 * 60_000, testid }) {
    this.title = title;
    this.unit = unit;
    this.digits = digits;
    this.windowMs = windowMs;
    this.points = [];
    this.svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', focusable: 'false' });
    this.value = h('span', { class: 'chart-value', testid: testid ? `${testid}-value` : null }, '—');
    this.note = h('p', { class: 'chart-note' });
    this.el = h('figure', { class: 'chart card', testid },
      h('figcaption', null, h('span', { class: 'chart-title' }, title), ' ', this.value),
      this.svg, this.note);
    this.draw();
  }

  /** Say where the figure comes from (or that it is not available). */
  setNote(text) { this.note.textContent = text; }

  push(t, v) {
    if (v == null || !Number.isFinite(v)) return;
    this.points.push({ t, v });
    const cutoff = t - this.windowMs;
    while (this.points.length && this.points[0].t < cutoff) this.points.shift();
    this.draw();
  }

  draw() {
    const pts = this.points;
    const last = pts.at(-1);
    this.value.textContent = last ? `${fmtNumber(last.v, this.digits)}${this.unit ? ` ${this.unit}` : ''}` : '—';
    const max = niceMax(Math.max(0, ...pts.map((p) => p.v)));
    const now = last ? last.t : Date.now();
    const x0 = now - this.windowMs;
    const iw = W - PAD.left - PAD.right;
    const ih = H - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + ((t - x0) / this.windowMs) * iw;
    const y = (v) => PAD.top + ih - (v / max) * ih;
    const children = [
      s('line', { class: 'chart-grid', x1: PAD.left, x2: W - PAD.right, y1: y(max), y2: y(max) }),
      s('line', { class: 'chart-grid', x1: PAD.left, x2: W - PAD.right, y1: y(max / 2), y2: y(max / 2) }),
      s('line', { class: 'chart-axis', x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0) }),
      s('text', { class: 'chart-label', x: PAD.left - 6, y: y(max) + 4, 'text-anchor': 'end' }, fmtNumber(max, 2)),
      s('text', { class: 'chart-label', x: PAD.left - 6, y: y(0) + 4, 'text-anchor': 'end' }, '0'),
      s('text', { class: 'chart-label', x: PAD.left, y: H - 6 }, `${Math.round(this.windowMs / 60_000)} min ago`),
      s('text', { class: 'chart-label', x: W - PAD.right, y: H - 6, 'text-anchor': 'end' }, 'now'),
    ];
    if (pts.length >= 1) {
      const d = pts.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
      const area = `${d} L${x(last.t).toFixed(1)},${y(0)} L${x(pts[0].t).toFixed(1)},${y(0)} Z`;
      children.push(s('path', { class: 'chart-area', d: area }));
      children.push(s('path', { class: 'chart-line', d }));
      children.push(s('circle', { class: 'chart-dot', cx: x(last.t), cy: y(last.v), r: 3.5 }));
    }
    this.svg.replaceChildren(...children);
    const peak = pts.length ? Math.max(...pts.map((p) => p.v)) : null;
    this.svg.setAttribute('aria-label', last
      ? `${this.title}: now ${fmtNumber(last.v, this.digits)} ${this.unit}; highest ${fmtNumber(peak, this.digits)} over the last ${Math.round(this.windowMs / 60_000)} minutes (${pts.length} samples).`
      : `${this.title}: no figures yet.`);
  }
}
