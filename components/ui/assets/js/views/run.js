// A task and its run (/ui/tasks/{id}): the board task's details (GET /api/tasks/{id}) and
// the live output of its run, read from the run's log (GET /v1/tasks/{run_id}/events as
// NDJSON, following it live). Agent messages are a conversation (markdown, sanitised), tool
// calls and results are <details>, tokens and duration are shown as they come.
//
// Nothing is lost or shown twice: every event carries its `seq`; the view keeps the last one
// it drew (in sessionStorage, per run) and reads on from the next (`from_seq`) after a
// dropped connection, with backoff, and after a reload of the page. Each event's element has
// data-seq.

import { get, request, ndjson, ApiError } from '/ui/assets/js/api.js';
import { h, errorBox, fmtDate, fmtDuration, fmtNumber, sleep, isAbort, statusLabel, replace } from '/ui/assets/js/dom.js';
import { renderMarkdown } from '/ui/assets/js/markdown.js';
import { taskActions, statusBadge, FINISHED } from '/ui/assets/js/views/shared.js';
import { openTaskDialog } from '/ui/assets/js/views/taskdialog.js';

const FINAL_STATES = new Set(['done', 'failed', 'cancelled', 'timed_out', 'interrupted']);
const cursorKey = (runId) => `gantry.run.${runId}.seq`;

/** "00:01:30" → ms. */
function hmsToMs(text) {
  const m = /^(\d+):(\d{2}):(\d{2})(?:\.(\d+))?$/.exec(String(text || ''));
  if (!m) return null;
  return ((Number(m[1]) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1000;
}

function prettyJson(text) {
  if (typeof text !== 'string') return JSON.stringify(text, null, 2);
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

export default async function run({ main, params, signal, setTitle }) {
  const taskId = params.id;
  let task = null;
  let project = null;
  let runId = null;
  let stream = null; // {controller, runId}
  let pollTimer = null;
  let tickTimer = null;

  // Header and details.
  const crumbs = h('nav', { class: 'breadcrumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/ui/projects' }, 'Projects'));
  const heading = h('h1', null, 'Task');
  const messages = h('div', { class: 'messages' });
  const actions = h('div', { class: 'toolbar', testid: 'run-actions' });
  const details = h('dl', { class: 'details', testid: 'run-details' });
  const tokensEl = h('dd', { testid: 'run-tokens' }, '—');
  const durationEl = h('dd', { testid: 'run-duration' }, '—');
  const stateEl = h('dd', { testid: 'run-status' }, '—');
  const prompt = h('div', { class: 'prompt' });
  const history = h('details', { class: 'history', testid: 'run-history' });

  // The run's output.
  const streamStatus = h('span', { class: 'live', testid: 'run-stream-status', role: 'status' }, '');
  const rawToggle = h('input', { type: 'checkbox', id: 'raw-toggle', testid: 'run-raw-toggle' });
  const output = h('ol', { class: 'run-output', testid: 'run-output', 'aria-label': 'Run output' });
  // A log region around the list: new events are read out politely; the list keeps its
  // list semantics.
  const log = h('div', { role: 'log', 'aria-live': 'polite', 'aria-label': 'Run output, live' }, output);
  const emptyNote = h('p', { class: 'muted', testid: 'run-empty' }, 'This task has not run yet. Execute it to see its output here.');
  rawToggle.addEventListener('change', () => output.classList.toggle('show-raw', rawToggle.checked));

  function showError(err, prefix) {
    if (err.code === 'session_expired') return;
    messages.replaceChildren(errorBox(err, prefix));
  }

  // ---- the task ----

  function drawTask() {
    heading.textContent = task.title;
    setTitle(task.title);
    const backend = task.backend || task.metadata?.backend || project?.settings?.backend || 'claude';
    replace(details,
      h('div', null, h('dt', null, 'Status'), h('dd', null, statusBadge(task.status),
        task.status === 'running' || task.status === 'queued'
          ? h('progress', { max: '100', value: String(task.progress_percentage ?? 0), 'aria-label': 'Progress' }) : null)),
      h('div', null, h('dt', null, 'Priority'), h('dd', null, String(task.priority ?? 0))),
      h('div', null, h('dt', null, 'Backend'), h('dd', null, backend)),
      task.tags?.length ? h('div', null, h('dt', null, 'Tags'), h('dd', null, h('ul', { class: 'tags' }, task.tags.map((t) => h('li', { class: 'tag' }, t))))) : null,
      h('div', null, h('dt', null, 'Created'), h('dd', null, fmtDate(task.created_at))),
      h('div', null, h('dt', null, 'Started'), h('dd', null, fmtDate(task.started_at))),
      h('div', null, h('dt', null, 'Finished'), h('dd', null, fmtDate(task.completed_at))),
      h('div', null, h('dt', null, 'Run state'), stateEl),
      h('div', null, h('dt', null, 'Duration'), durationEl),
      h('div', null, h('dt', null, 'Tokens'), tokensEl),
      task.retry_attempt ? h('div', null, h('dt', null, 'Retry'), h('dd', null, String(task.retry_attempt))) : null,
      task.run_id ? h('div', null, h('dt', null, 'Run id'), h('dd', null, h('code', { testid: 'run-id' }, task.run_id))) : null);
    // The buttons and the prompt are drawn again only when they change, so a poll does not
    // take the focus from a button or redraw highlighted code.
    const actionsKey = `${task.status}|${task.run_id}`;
    if (actions.dataset.key !== actionsKey) {
      const hadFocus = actions.contains(document.activeElement);
      const edit = h('button', { type: 'button', class: 'btn btn-small btn-quiet', testid: 'task-edit' }, 'Edit');
      edit.addEventListener('click', async () => {
        const saved = await openTaskDialog({ project, task });
        if (saved) { task = saved; actions.dataset.key = ''; drawTask(); }
      });
      replace(actions, taskActions(task, {
        onChange: () => { messages.replaceChildren(); refresh(); },
        onError: (err, verb) => showError(err, `${verb} failed:`),
      }), edit);
      actions.dataset.key = actionsKey;
      if (hadFocus) actions.querySelector('button')?.focus();
    }
    const promptKey = `${task.title}\n${task.description || ''}`;
    if (prompt.dataset.key !== promptKey) {
      replace(prompt,
        h('h2', { class: 'visually-hidden' }, 'Prompt'),
        h('div', { class: 'bubble bubble-user' },
          h('p', { class: 'who' }, 'Prompt'),
          h('p', null, h('strong', null, task.title)),
          task.description ? renderMarkdown(task.description) : null));
      prompt.dataset.key = promptKey;
    }
    emptyNote.hidden = Boolean(task.run_id);
    drawHistory();
    const d = hmsToMs(task.actual_duration);
    if (d != null && FINISHED.has(task.status)) durationEl.textContent = fmtDuration(d);
  }

  let pollFailed = false;
  // The task's changes (GET /api/tasks/{id} includes them), newest last; kept open or closed
  // across redraws.
  function drawHistory() {
    const entries = task.history || [];
    const key = String(entries.length);
    if (history.dataset.key === key) return;
    history.dataset.key = key;
    const value = (v) => (v == null ? '—' : typeof v === 'string' ? v : JSON.stringify(v));
    replace(history,
      h('summary', null, `History (${entries.length} change${entries.length === 1 ? '' : 's'})`),
      h('ol', { class: 'history-list' }, entries.map((e) => h('li', null,
        h('time', { datetime: e.timestamp }, fmtDate(e.timestamp)), ' · ',
        statusLabel(e.action),
        e.field ? [' ', h('strong', null, e.field), ': ', value(e.old_value), ' → ', value(e.new_value)] : '',
        e.user_id === 'system' ? h('span', { class: 'muted' }, ' (by the queue)') : null))));
  }

  async function refresh() {
    try {
      task = await get(`/api/tasks/${encodeURIComponent(taskId)}`, { signal });
    } catch (err) {
      if (isAbort(err)) return;
      showError(err, 'The task could not be read.');
      pollFailed = true;
      clearTimeout(pollTimer);
      pollTimer = setTimeout(refresh, 1000);
      return;
    }
    if (pollFailed) { messages.replaceChildren(); pollFailed = false; }
    drawTask();
    if (task.run_id && task.run_id !== runId) follow(task.run_id);
    schedulePoll();
  }

  // The task's status and run id are read again until it has finished: every half second
  // while its run has not started (so its output shows from the start), every 3 s while it
  // runs, every 15 s after (a retry or a new execution brings a new run, whose output
  // replaces the old one's).
  // Fast polls are few (the first 20 of a wait), to keep within the user's request budget.
  let fastPolls = 0;
  let lastStatus = null;
  function schedulePoll() {
    clearTimeout(pollTimer);
    if (signal.aborted || !task) return;
    if (task.status !== lastStatus) { fastPolls = 0; lastStatus = task.status; }
    // Waiting: for the run to start, or for the task to show the end its run's log has shown.
    const waiting = task.status === 'queued' || (task.status === 'running' && (task.run_id !== runId || finishedAt != null));
    const active = !FINISHED.has(task.status) && task.status !== 'pending';
    let delay = active ? 3000 : 15000;
    if (waiting && fastPolls < 20) { fastPolls += 1; delay = 500; }
    pollTimer = setTimeout(refresh, delay);
  }

  // ---- the run's log ----

  let cursor = 0; // the last seq drawn
  let runningAt = null;
  let finishedAt = null;
  const toolNames = new Map();

  function tick() {
    clearInterval(tickTimer);
    const draw = () => {
      if (runningAt == null) return;
      durationEl.textContent = fmtDuration((finishedAt ?? Date.now()) - runningAt) + (finishedAt ? '' : ' so far');
    };
    draw();
    if (finishedAt == null) tickTimer = setInterval(draw, 1000);
  }

  function item(ev, cls, ...children) {
    return h('li', { class: ['event', cls], testid: 'run-event', dataset: { seq: String(ev.seq), kind: ev.kind, type: ev.data?.type || ev.data?.state || '' } }, children);
  }

  function drawEvent(ev) {
    const d = ev.data || {};
    switch (ev.kind) {
      case 'state': {
        if (d.state === 'running') { runningAt = ev.at; tick(); }
        if (FINAL_STATES.has(d.state)) { finishedAt = ev.at; tick(); }
        stateEl.textContent = statusLabel(d.state);
        const extra = [d.exit_code != null ? `exit code ${d.exit_code}` : null, d.error].filter(Boolean).join(' · ');
        return item(ev, `event-state state-${d.state}`,
          h('span', { class: 'state-line' }, `Run ${statusLabel(d.state)}`, extra ? ` — ${extra}` : ''));
      }
      case 'stdout':
      case 'stderr':
        // The process's own lines; the adapter's reading of each follows as an agent event,
        // so they are shown only with "Show raw process output".
        return item(ev, `event-raw-line event-${ev.kind}`,
          h('span', { class: 'stream-name' }, ev.kind), ' ',
          h('code', null, d.line ?? ''), d.partial ? h('span', { class: 'muted' }, ' (continues)') : null);
      case 'agent':
        return drawAgent(ev, d);
      default:
        return item(ev, 'event-other', h('code', null, `${ev.kind}: ${JSON.stringify(d)}`));
    }
  }

  function drawAgent(ev, d) {
    switch (d.type) {
      case 'init':
        return item(ev, 'event-init', h('span', { class: 'muted' }, 'Agent started', d.model ? ` · model ${d.model}` : '', d.session_id ? ` · session ${d.session_id}` : ''));
      case 'message':
        return item(ev, 'event-message', h('div', { class: 'bubble bubble-agent' }, h('p', { class: 'who' }, 'Agent'), renderMarkdown(d.text ?? '')));
      case 'tool_use': {
        if (d.id) toolNames.set(d.id, d.name);
        return item(ev, 'event-tool', h('details', { class: 'tool' },
          h('summary', null, h('span', { class: 'tool-kind' }, 'Tool call'), ' ', h('strong', null, d.name || 'tool')),
          h('pre', { class: 'code-block' }, h('code', null, prettyJson(d.input ?? '')))));
      }
      case 'tool_result': {
        const name = toolNames.get(d.id);
        const out = typeof d.output === 'string' ? d.output : JSON.stringify(d.output, null, 2);
        return item(ev, `event-tool-result${d.is_error ? ' is-error' : ''}`, h('details', { class: 'tool' },
          h('summary', null, h('span', { class: 'tool-kind' }, d.is_error ? 'Tool error' : 'Tool result'), name ? [' of ', h('strong', null, name)] : '',
            out ? h('span', { class: 'muted' }, ` · ${out.split('\n').length} line${out.split('\n').length === 1 ? '' : 's'}`) : ''),
          h('pre', { class: 'code-block' }, h('code', null, out ?? ''))));
      }
      case 'usage': {
        const parts = [`in ${fmtNumber(d.input_tokens)}`, `out ${fmtNumber(d.output_tokens)}`];
        if (d.cached_tokens) parts.push(`cached ${fmtNumber(d.cached_tokens)}`);
        if (d.reasoning_tokens) parts.push(`reasoning ${fmtNumber(d.reasoning_tokens)}`);
        tokensEl.textContent = parts.join(' · ');
        return item(ev, 'event-usage', h('span', { class: 'muted' }, `Tokens: ${parts.join(' · ')}`));
      }
      case 'error':
        return item(ev, 'event-error', h('div', { class: 'alert alert-error' }, h('strong', null, 'Agent error: '), d.message ?? JSON.stringify(d)));
      case 'done':
        return item(ev, 'event-done', h('span', { class: 'muted' }, 'Agent finished', d.exit_code != null ? ` · exit code ${d.exit_code}` : ''));
      case 'raw':
        return item(ev, 'event-raw', h('code', null, d.line ?? JSON.stringify(d)));
      default:
        return item(ev, 'event-other', h('code', null, JSON.stringify(d)));
    }
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
  }

  /** Draw one event unless it was drawn already; remember it as the place to read on from. */
  function accept(ev, key, mine) {
    // A stream that was replaced (a new run) may still hold a read; it draws nothing more.
    if (mine.aborted || typeof ev.seq !== 'number' || ev.seq <= cursor) return false;
    const stick = nearBottom();
    output.append(drawEvent(ev));
    cursor = ev.seq;
    sessionStorage.setItem(key, String(cursor));
    if (stick) window.scrollTo({ top: document.documentElement.scrollHeight });
    return ev.kind === 'state' && FINAL_STATES.has(ev.data?.state);
  }

  async function follow(id) {
    stream?.controller.abort();
    const controller = new AbortController();
    const stop = () => controller.abort();
    signal.addEventListener('abort', stop, { once: true });
    stream = { controller, runId: id };
    runId = id;
    cursor = 0;
    runningAt = null;
    finishedAt = null;
    toolNames.clear();
    output.replaceChildren();
    tokensEl.textContent = '—';
    const key = cursorKey(id);
    const base = `/v1/tasks/${encodeURIComponent(id)}/events?format=ndjson`;
    const mine = controller.signal;

    // After a reload: what was drawn before (up to the kept seq) is read back as a finished
    // range, then the live stream goes on right after it.
    const kept = Number(sessionStorage.getItem(key)) || 0;
    let ended = false;
    if (kept > 0) {
      streamStatus.textContent = 'Reading what was shown before…';
      try {
        const res = await request(`${base}&follow=false&from_seq=1`, { raw: true, signal: mine });
        for await (const ev of ndjson(res)) {
          if (ev.seq > kept) break;
          ended = accept(ev, key, mine) || ended;
        }
      } catch (err) {
        if (mine.aborted) return;
        if (err.code === 'session_expired') return;
        // Otherwise the stream below starts from what was drawn.
      }
    }

    let attempt = 0;
    while (!ended && !mine.aborted) {
      try {
        streamStatus.textContent = attempt ? 'Reconnecting…' : 'Connecting…';
        const res = await request(`${base}&follow=true&from_seq=${cursor + 1}`, { raw: true, signal: mine });
        streamStatus.textContent = 'Following live';
        streamStatus.className = 'live live-open';
        for await (const ev of ndjson(res)) {
          attempt = 0;
          if (accept(ev, key, mine)) ended = true;
        }
        // The answer ends after the final state; ending without it (a proxy's timeout, the
        // server restarting) is read on like a drop.
        if (!ended) throw new ApiError({ code: 'stream_ended', message: 'the stream ended early' });
      } catch (err) {
        if (mine.aborted || isAbort(err)) return;
        if (err.code === 'session_expired') return;
        if (err.code === 'bad_cursor') { // the log no longer has what was kept: start over
          sessionStorage.removeItem(key);
          cursor = 0;
          output.replaceChildren();
          continue;
        }
        const permanent = err instanceof ApiError && err.status >= 400 && err.status < 500 && ![408, 429].includes(err.status);
        if (permanent) {
          streamStatus.textContent = 'Not following';
          streamStatus.className = 'live live-failed';
          showError(err, err.status === 404 ? 'The run\'s log is gone (finished runs are kept for a while only).' : 'The run\'s output could not be read.');
          return;
        }
        attempt += 1;
        const delay = Math.min(30_000, 500 * 2 ** Math.min(attempt, 6)) * (0.75 + Math.random() * 0.5);
        streamStatus.className = 'live live-reconnecting';
        streamStatus.textContent = `Connection lost (${err.message}); reconnecting in ${Math.round(delay / 1000)} s from event ${cursor + 1}`;
        try { await sleep(delay, mine); } catch { return; }
      }
    }
    if (ended) {
      streamStatus.className = 'live live-closed';
      streamStatus.textContent = 'Run finished';
      refresh();
    }
  }

  main.append(
    crumbs,
    h('div', { class: 'view-head' }, heading, actions),
    messages,
    details,
    history,
    h('section', { class: 'run', 'aria-labelledby': 'run-title' },
      h('div', { class: 'section-head' },
        h('h2', { id: 'run-title' }, 'Conversation and output'),
        h('div', { class: 'toolbar' },
          h('label', { class: 'check', for: 'raw-toggle' }, rawToggle, ' Show raw process output'),
          streamStatus)),
      prompt, emptyNote, log));

  try {
    task = await get(`/api/tasks/${encodeURIComponent(taskId)}`, { signal });
  } catch (err) {
    if (isAbort(err)) throw err;
    heading.textContent = err.status === 404 ? 'Task not found' : 'Task';
    showError(err);
    return undefined;
  }
  try {
    project = await get(`/api/projects/${encodeURIComponent(task.project_id)}`, { signal });
    crumbs.append(' / ', h('a', { href: `/ui/projects/${encodeURIComponent(project.id)}` }, project.name), ' / ', h('span', { 'aria-current': 'page' }, 'Task'));
  } catch (err) {
    if (isAbort(err)) throw err;
  }
  drawTask();
  if (task.run_id) follow(task.run_id);
  schedulePoll();

  return () => {
    stream?.controller.abort();
    clearTimeout(pollTimer);
    clearInterval(tickTimer);
  };
}
