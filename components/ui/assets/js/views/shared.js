// What several views share: the node's backends, task statuses, and a task's actions
// (execute, cancel, retry) with the API calls behind them.

import { get, post, isRefused } from '/ui/assets/js/api.js';
import { h, announce, statusLabel } from '/ui/assets/js/dom.js';

/** The Web UI API's task statuses, in board order. */
export const STATUSES = ['pending', 'queued', 'running', 'completed', 'failed', 'cancelled', 'timed_out', 'interrupted'];
export const FINISHED = new Set(['completed', 'failed', 'cancelled', 'timed_out', 'interrupted']);

let namesPromise;
/** The backends tasks may name (GET /api/system/info → backends), fetched once. */
export function backendNames(signal) {
  if (!namesPromise) {
    namesPromise = get('/api/system/info', { signal }).then((d) => d.backends || []);
    namesPromise.catch(() => { namesPromise = null; });
  }
  return namesPromise;
}

/**
 * The backends with availability: GET /api/v1/backends (name, available, version, reason).
 * Falls back to the names alone (availability unknown) when that API refuses the caller.
 */
export async function backendsWithAvailability(signal) {
  if (!isRefused('/api/v1/backends')) {
    try {
      const data = await get('/api/v1/backends', { signal });
      return { backends: data.backends || [], known: true };
    } catch (err) {
      if (err.name === 'AbortError' || err.code === 'session_expired') throw err;
      const names = await backendNames(signal).catch(() => []);
      return { backends: names.map((name) => ({ name, available: null })), known: false, error: err };
    }
  }
  const names = await backendNames(signal);
  return { backends: names.map((name) => ({ name, available: null })), known: false };
}

export function statusBadge(status) {
  return h('span', { class: `status status-${status}`, testid: 'task-status', dataset: { status } }, statusLabel(status));
}

export const canExecute = (t) => !['queued', 'running'].includes(t.status);
export const canCancel = (t) => ['queued', 'running'].includes(t.status);
export const canRetry = (t) => ['failed', 'cancelled', 'timed_out', 'interrupted'].includes(t.status);

/**
 * The buttons a task's state allows. `onChange(partialTask)` gets what the API answered
 * (new status, run id); `onError(err)` shows a failure; `sessionId()` (optional) names the
 * working session an execution is recorded in.
 */
export function taskActions(task, { onChange, onError, sessionId, compact = false }) {
  const label = (verb) => (compact ? `${verb} ${task.title}` : null);
  const act = (button, verb, call) => async () => {
    button.disabled = true;
    try {
      const result = await call();
      announce(`${verb}: ${task.title}`);
      onChange(result);
    } catch (err) {
      if (err.name !== 'AbortError') onError(err, verb);
    } finally {
      button.disabled = false;
    }
  };
  const buttons = [];
  if (canExecute(task)) {
    const b = h('button', { type: 'button', class: 'btn btn-small btn-primary', testid: 'task-execute', 'aria-label': label('Execute') }, 'Execute');
    b.addEventListener('click', act(b, 'Queued', async () => {
      const body = {};
      const sid = sessionId?.();
      if (sid) body.session_id = sid;
      const d = await post(`/api/tasks/${encodeURIComponent(task.id)}/execute`, body);
      return { status: d.status || 'queued', queue: d.queue };
    }));
    buttons.push(b);
  }
  if (canCancel(task)) {
    const b = h('button', { type: 'button', class: 'btn btn-small btn-danger', testid: 'task-cancel', 'aria-label': label('Cancel') }, 'Cancel');
    b.addEventListener('click', act(b, 'Cancelled', async () => {
      const d = await post(`/api/tasks/${encodeURIComponent(task.id)}/cancel`, { reason: 'Cancelled from the web UI' });
      return d.task || { status: d.status };
    }));
    buttons.push(b);
  }
  if (canRetry(task)) {
    const b = h('button', { type: 'button', class: 'btn btn-small', testid: 'task-retry', 'aria-label': label('Retry') }, 'Retry');
    b.addEventListener('click', act(b, 'Retrying', async () => {
      const d = await post(`/api/tasks/${encodeURIComponent(task.id)}/retry`, {});
      return { status: d.status || 'queued', retry_attempt: d.retry_attempt };
    }));
    buttons.push(b);
  }
  return buttons;
}
