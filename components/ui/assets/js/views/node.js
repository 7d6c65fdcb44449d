// The node (/ui/node): health, backends, queues, and live charts of requests per second,
// active runs and tasks per minute. Every figure is read from the APIs every 5 s; rates are
// computed from counters across two reads. Where a figure is not available to the caller
// (node-wide metrics are for operators) the view says so and what it shows instead.
//
// API: GET /health, GET /api/health/detailed, GET /api/queues/status, GET /metrics
// (operators), GET /api/v1/backends (GET /v1/backends?refresh=true to probe again).

import { get, request, isRefused, ApiError } from '/ui/assets/js/api.js';
import { h, errorBox, fmtNumber, isAbort, replace, statusLabel, announce, tableWrap } from '/ui/assets/js/dom.js';
import { LineChart } from '/ui/assets/js/charts.js';
import { backendsWithAvailability } from '/ui/assets/js/views/shared.js';

const POLL_MS = 5000;

/** Prometheus text → {name: [{labels, value}]}. */
function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (!Number.isFinite(value)) continue;
    (out[m[1]] ||= []).push({ labels: m[2] || '', value });
  }
  return out;
}
const sum = (metrics, name) => (metrics[name] ? metrics[name].reduce((a, s) => a + s.value, 0) : null);

/** A backend's version line, cut to a sensible length (it is whatever `--version` printed). */
export function short(text, max = 80) {
  const line = String(text).split('\n')[0];
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

function dl(pairs) {
  return h('dl', { class: 'stats' }, pairs.filter(Boolean).map(([k, v]) => h('div', null, h('dt', null, k), h('dd', null, v))));
}

export default async function node({ main, signal, setTitle }) {
  setTitle('The node');
  const healthEl = h('section', { class: 'card', testid: 'node-health', 'aria-labelledby': 'node-health-title' },
    h('h2', { id: 'node-health-title' }, 'Health'), h('p', { class: 'loading' }, 'Reading…'));
  const backendsEl = h('section', { class: 'card', testid: 'node-backends', 'aria-labelledby': 'node-backends-title' },
    h('h2', { id: 'node-backends-title' }, 'Backends'), h('p', { class: 'loading' }, 'Reading…'));
  const queuesEl = h('section', { class: 'card', testid: 'node-queues', 'aria-labelledby': 'node-queues-title' },
    h('h2', { id: 'node-queues-title' }, 'Queues'), h('p', { class: 'loading' }, 'Reading…'));
  const trafficEl = h('section', { class: 'card', testid: 'node-traffic', 'aria-labelledby': 'node-traffic-title' },
    h('h2', { id: 'node-traffic-title' }, 'Last minute'), h('p', { class: 'loading' }, 'Reading…'));
  const rps = new LineChart({ title: 'Requests per second', unit: 'req/s', digits: 2, testid: 'chart-requests' });
  const active = new LineChart({ title: 'Active runs', digits: 0, testid: 'chart-active-runs' });
  const tpm = new LineChart({ title: 'Tasks per minute', unit: 'per min', digits: 1, testid: 'chart-tasks' });
  const updated = h('p', { class: 'meta', testid: 'node-updated', role: 'status' });

  main.append(h('h1', null, 'The node'), updated,
    h('div', { class: 'grid-2' }, healthEl, trafficEl),
    h('section', { class: 'charts', 'aria-labelledby': 'charts-title' },
      h('h2', { id: 'charts-title' }, 'Live'),
      h('div', { class: 'chart-grid-wrap' }, rps.el, active.el, tpm.el)),
    h('div', { class: 'grid-2' }, backendsEl, queuesEl));

  // What the caller may read: /metrics answers operators only; a signed-in user's token is
  // refused on /health and /metrics by nodes that take only API keys there.
  let metricsAllowed = true;
  let metricsWhy = '';
  let prev = null; // {t, requests, runs}

  async function readHealth() {
    if (!isRefused('/health')) {
      try { return { data: await get('/health', { signal }), full: true }; } catch (err) {
        if (isAbort(err) || err.code === 'session_expired') throw err;
        if (err.code !== 'token_not_accepted') return { error: err };
      }
    }
    // Without credentials /health says the status alone.
    try { return { data: await get('/health', { signal, anonymous: true }), full: false }; } catch (err) {
      if (isAbort(err)) throw err;
      return { error: err };
    }
  }

  async function readMetrics() {
    if (isRefused('/metrics')) {
      metricsWhy = 'Node-wide metrics (/metrics) take an operator\'s API key, not a signed-in user\'s token';
      return null;
    }
    if (!metricsAllowed) return null;
    try {
      const res = await request('/metrics', { raw: true, signal, headers: { Accept: 'text/plain' } });
      return parseMetrics(await res.text());
    } catch (err) {
      if (isAbort(err) || err.code === 'session_expired') throw err;
      metricsAllowed = false;
      metricsWhy = err.status === 403
        ? 'Node-wide metrics (/metrics) are for operators'
        : err.code === 'token_not_accepted' ? 'Node-wide metrics need an operator\'s API key' : `Node-wide metrics could not be read (${err.message})`;
      return null;
    }
  }

  function drawHealth(result) {
    if (result.error) {
      replace(healthEl, h('h2', { id: 'node-health-title' }, 'Health'), errorBox(result.error, 'Health could not be read.'));
      return;
    }
    const d = result.data;
    const status = d.status || 'unknown';
    replace(healthEl, h('h2', { id: 'node-health-title' }, 'Health'),
      h('p', { class: `health health-${status}`, testid: 'node-status' }, statusLabel(status)),
      dl([
        d.version && ['Version', d.version],
        d.uptime && ['Up for', d.uptime],
        d.sandbox && ['Task isolation', d.sandbox],
        d.session_store && ['Session store', `${d.session_store.available ? 'available' : 'unavailable'}, ${fmtNumber(d.session_store.session_count)} sessions`],
        d.active_instances != null && ['Component instances', fmtNumber(d.active_instances)],
        d.plugins && ['Plugins', fmtNumber(d.plugins.length)],
      ]),
      result.full ? null : h('p', { class: 'alert alert-info' }, 'Only the status is shown: /health gives the node\'s figures to callers with an API key.'));
  }

  function drawTraffic(detail) {
    if (detail.error) {
      replace(trafficEl, h('h2', { id: 'node-traffic-title' }, 'Last minute'), errorBox(detail.error));
      return;
    }
    const m = detail.data.metrics || {};
    const c = detail.data.checks || {};
    replace(trafficEl, h('h2', { id: 'node-traffic-title' }, 'Last minute'),
      dl([
        ['Requests', fmtNumber(m.requests_per_minute)],
        ['Mean response time', m.average_response_time != null ? `${fmtNumber(m.average_response_time, 1)} ms` : '—'],
        ['5xx rate', m.error_rate != null ? `${fmtNumber(m.error_rate * 100, 1)} %` : '—'],
        ['4xx rate', m.client_error_rate != null ? `${fmtNumber(m.client_error_rate * 100, 1)} %` : '—'],
        c.database && ['Store query', `${fmtNumber(c.database.response_time, 2)} ms (${c.database.status})`],
        c.websocket && ['WebSocket connections', `${fmtNumber(c.websocket.active_connections)} (${statusLabel(c.websocket.status)})`],
      ]),
      h('p', { class: 'meta' }, `Overall: ${statusLabel(detail.data.status)} · from /api/health/detailed`));
  }

  function drawQueues(q) {
    if (q.error) {
      replace(queuesEl, h('h2', { id: 'node-queues-title' }, 'Queues'), errorBox(q.error));
      return;
    }
    const d = q.data;
    const rows = Object.entries(d.queues || {}).map(([name, x]) => h('tr', null,
      h('th', { scope: 'row' }, name.replace('_priority', '')),
      h('td', { class: 'num' }, fmtNumber(x.size)), h('td', { class: 'num' }, fmtNumber(x.processing)),
      h('td', { class: 'num' }, fmtNumber(x.completed_today)), h('td', null, x.paused ? 'paused' : 'running')));
    const perf = d.performance || {};
    replace(queuesEl, h('h2', { id: 'node-queues-title' }, 'Queues'),
      h('p', { class: 'meta' }, 'Your tenant\'s queues.'),
      tableWrap('Queue table', h('table', { class: 'listing', testid: 'node-queue-table' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Queue'), h('th', { scope: 'col', class: 'num' }, 'Waiting'),
          h('th', { scope: 'col', class: 'num' }, 'Running'), h('th', { scope: 'col', class: 'num' }, 'Done today'), h('th', { scope: 'col' }, 'State'))),
        h('tbody', null, rows))),
      dl([
        d.workers && ['Run slots', `${fmtNumber(d.workers.active)} busy of ${fmtNumber(d.workers.total)}`],
        ['Tasks per minute', fmtNumber(perf.tasks_per_minute, 1)],
        ['Mean run time', perf.average_processing_time || '—'],
        ['Success rate', perf.success_rate != null ? `${fmtNumber(perf.success_rate * 100, 1)} %` : '—'],
      ]));
  }

  async function drawBackends({ refresh = false } = {}) {
    let list;
    try {
      if (refresh) {
        // Probe every backend again (GET /v1/backends?refresh=true), then read them.
        await get('/v1/backends?refresh=true', { signal }).catch((err) => { if (isAbort(err)) throw err; });
      }
      list = await backendsWithAvailability(signal);
    } catch (err) {
      if (isAbort(err)) return;
      list = { backends: [], error: err };
    }
    const recheck = h('button', { type: 'button', class: 'btn btn-small', testid: 'node-backends-refresh' }, 'Check again');
    recheck.addEventListener('click', async () => {
      recheck.disabled = true;
      await drawBackends({ refresh: true });
      announce('Backends checked again');
    });
    const items = list.backends.map((b) => h('li', { class: 'backend', testid: 'node-backend', dataset: { backend: b.name, available: String(b.available) } },
      h('strong', null, b.name), ' ',
      b.available == null ? h('span', { class: 'status status-unknown' }, 'availability not known')
        : h('span', { class: `status ${b.available ? 'status-completed' : 'status-failed'}` }, b.available ? 'available' : 'down'),
      b.version ? h('span', { class: 'muted', title: b.version.length > 80 ? b.version : null }, ` ${short(b.version)}`) : null,
      b.reason ? h('p', { class: 'reason' }, b.reason) : null));
    replace(backendsEl, h('div', { class: 'section-head' }, h('h2', { id: 'node-backends-title' }, 'Backends'), recheck),
      list.error ? errorBox(list.error, 'Availability could not be read:') : null,
      items.length ? h('ul', { class: 'plain-list' }, items) : h('p', null, 'No backends listed.'));
  }

  async function poll() {
    const t = Date.now();
    const [health, detail, queues, metrics] = await Promise.all([
      readHealth(),
      get('/api/health/detailed', { signal }).then((data) => ({ data }), (error) => { if (isAbort(error) || error.code === 'session_expired') throw error; return { error }; }),
      get('/api/queues/status', { signal }).then((data) => ({ data }), (error) => { if (isAbort(error) || error.code === 'session_expired') throw error; return { error }; }),
      readMetrics(),
    ]);
    drawHealth(health);
    drawTraffic(detail);
    drawQueues(queues);

    if (metrics) {
      // Node-wide: rates from the counters' growth since the last read.
      const requests = sum(metrics, 'gantry_http_requests_total');
      // A counter with no series yet (no run has finished since the start) is zero.
      const runs = sum(metrics, 'gantry_runs_total') ?? 0;
      const activeRuns = sum(metrics, 'gantry_active_runs');
      if (prev && requests != null && requests >= prev.requests) rps.push(t, (requests - prev.requests) / ((t - prev.t) / 1000));
      if (prev && runs != null && runs >= prev.runs) tpm.push(t, (runs - prev.runs) / ((t - prev.t) / 60_000));
      if (activeRuns != null) active.push(t, activeRuns);
      prev = { t, requests, runs };
      rps.setNote('Node-wide, from /metrics (gantry_http_requests_total, between two reads 5 s apart).');
      active.setNote('Node-wide, from /metrics (gantry_active_runs).');
      tpm.setNote('Node-wide runs finished per minute, from /metrics (gantry_runs_total).');
    } else {
      // What the caller may read instead, each said as what it is.
      const m = detail.data?.metrics;
      if (m && m.requests_per_minute != null) rps.push(t, m.requests_per_minute / 60);
      rps.setNote(`${metricsWhy || 'Node-wide metrics are not available'}; shown: the node's requests in the last minute ÷ 60, from /api/health/detailed.`);
      const q = queues.data;
      if (q?.workers) active.push(t, q.workers.active);
      active.setNote(q?.workers ? 'Your tenant\'s running tasks (busy run slots), from /api/queues/status.' : 'Not available to you.');
      if (q?.performance?.tasks_per_minute != null) tpm.push(t, q.performance.tasks_per_minute);
      tpm.setNote(q?.performance ? 'Your tenant\'s tasks per minute, from /api/queues/status.' : 'Not available to you.');
    }
    updated.textContent = `Updated ${new Date(t).toLocaleTimeString()} · every ${POLL_MS / 1000} s`;
  }

  let timer = null;
  let stopped = false;
  async function loop() {
    try {
      await poll();
    } catch (err) {
      if (isAbort(err) || (err instanceof ApiError && err.code === 'session_expired')) return;
      updated.textContent = `Could not update: ${err.message}`;
    }
    if (!stopped && !signal.aborted) timer = setTimeout(loop, POLL_MS);
  }

  drawBackends();
  await loop();
  return () => { stopped = true; clearTimeout(timer); };
}
