// A project's board (/ui/projects/{id}): its tasks in columns by status, each a card with
// its title, priority and tags and the actions its state allows; a dialog to make or edit a
// task. It stays live over the WebSocket (project_updates in a working session of the
// project), resuming after drops; while the socket is down it refreshes every 15 s instead.
//
// API: GET /api/projects/{id}; GET /api/projects/{id}/tasks (all pages); GET /api/tasks/{id};
// POST /api/tasks/, PUT /api/tasks/{id}; POST …/execute, …/cancel, …/retry;
// POST /api/sessions/ and the WebSocket /ws/{session_id}.

import { get, allPages } from '/ui/assets/js/api.js';
import { h, errorBox, announce, statusLabel, replace } from '/ui/assets/js/dom.js';
import { LiveSocket } from '/ui/assets/js/ws.js';
import { STATUSES, taskActions, statusBadge } from '/ui/assets/js/views/shared.js';
import { openTaskDialog } from '/ui/assets/js/views/taskdialog.js';
import { navigate } from '/ui/assets/js/router.js';

const ALWAYS_SHOWN = new Set(['pending', 'queued', 'running', 'completed', 'failed', 'cancelled']);

function byPriority(a, b) {
  return (b.priority ?? 0) - (a.priority ?? 0) || String(b.updated_at).localeCompare(String(a.updated_at));
}

export default async function board({ main, params, signal, setTitle }) {
  const projectId = params.id;
  const tasks = new Map(); // id → task
  let project = null;
  let socket = null;
  let pollTimer = null;

  const heading = h('h1', null, 'Project');
  const description = h('p', { class: 'muted' });
  const messages = h('div', { class: 'messages', testid: 'board-messages' });
  const live = h('span', { class: 'live live-connecting', testid: 'ws-status', role: 'status' }, 'Connecting…');
  const newTask = h('button', { type: 'button', class: 'btn btn-primary', testid: 'task-create' }, 'New task');
  const wsLink = h('a', { class: 'btn', href: '#', testid: 'board-workspace-link', hidden: true }, 'Workspace files');
  const summary = h('p', { class: 'meta', testid: 'board-summary' });

  const columns = new Map();
  const columnsEl = h('div', { class: 'board', testid: 'board' });
  for (const status of STATUSES) {
    const count = h('span', { class: 'count' }, '0');
    const list = h('ul', { class: 'cards', 'aria-labelledby': `col-${status}` });
    const section = h('section', { class: `column column-${status}`, testid: 'board-column', dataset: { status }, 'aria-labelledby': `col-${status}`, hidden: !ALWAYS_SHOWN.has(status) },
      h('h2', { id: `col-${status}` }, statusLabel(status), ' ', count),
      list);
    columns.set(status, { section, list, count });
    columnsEl.append(section);
  }

  function showError(err, prefix) {
    if (err.code === 'session_expired') return;
    messages.replaceChildren(errorBox(err, prefix));
  }

  function drawCard(task) {
    const actions = taskActions(task, {
      compact: true,
      sessionId: () => socket?.sessionId,
      onChange: (change) => { messages.replaceChildren(); upsert({ ...tasks.get(task.id), ...change }); refreshTask(task.id); },
      onError: (err, verb) => showError(err, `${verb} failed for “${task.title}”:`),
    });
    const edit = h('button', { type: 'button', class: 'btn btn-small btn-quiet', testid: 'task-edit', 'aria-label': `Edit ${task.title}` }, 'Edit');
    edit.addEventListener('click', async () => {
      const saved = await openTaskDialog({ project, task: tasks.get(task.id) });
      if (saved) upsert(saved);
    });
    const backend = task.metadata?.backend || task.backend;
    const running = task.status === 'running' || (task.status === 'queued' && task.progress_percentage > 0);
    const url = `/ui/tasks/${encodeURIComponent(task.id)}`;
    const card = h('li', { class: 'task-card', testid: 'task-card', dataset: { taskId: task.id, status: task.status } },
      h('h3', { class: 'task-title' }, h('a', { href: url, testid: 'task-link' }, task.title)),
      h('div', { class: 'badges' },
        h('span', { class: 'priority', testid: 'task-priority-badge', title: 'Priority (0–100)' }, `Priority ${task.priority ?? 0}`),
        backend ? h('span', { class: 'chip' }, backend) : null,
        task.retry_attempt ? h('span', { class: 'chip' }, `retry ${task.retry_attempt}`) : null),
      task.tags?.length
        ? h('ul', { class: 'tags', 'aria-label': 'Tags', testid: 'task-tags-list' }, task.tags.map((t) => h('li', { class: 'tag' }, t)))
        : null,
      running ? h('progress', { max: '100', value: String(task.progress_percentage ?? 0), 'aria-label': `Progress of ${task.title}` }) : null,
      h('div', { class: 'card-actions' }, actions, edit));
    // A click anywhere on the card but its controls opens the task (the title is the link
    // for keyboards and new tabs).
    card.addEventListener('click', (event) => {
      if (event.target.closest('a, button, input, select, textarea, summary, label')) return;
      if (String(window.getSelection?.() || '')) return; // selecting text, not opening
      navigate(url);
    });
    return card;
  }

  function recount() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const t of tasks.values()) counts[t.status] = (counts[t.status] || 0) + 1;
    for (const [status, col] of columns) {
      col.count.textContent = String(counts[status] || 0);
      col.section.hidden = !ALWAYS_SHOWN.has(status) && !counts[status];
      if (!col.list.children.length) col.list.append(h('li', { class: 'empty-col' }, 'No tasks'));
      else if (col.list.children.length > 1) col.list.querySelector('.empty-col')?.remove();
    }
    summary.textContent = `${tasks.size} task${tasks.size === 1 ? '' : 's'}`;
  }

  /** Put a task's card in its column, in priority order (replacing its old card). */
  function upsert(task) {
    if (!task || task.project_id && task.project_id !== projectId) return;
    const before = tasks.get(task.id);
    tasks.set(task.id, task);
    const hadFocus = document.activeElement?.closest?.('.task-card')?.dataset.taskId === task.id;
    const focusedTestId = hadFocus ? document.activeElement.dataset.testid : null;
    columnsEl.querySelector(`.task-card[data-task-id="${CSS.escape(task.id)}"]`)?.remove();
    const col = columns.get(task.status) || columns.get('pending');
    col.list.querySelector('.empty-col')?.remove();
    const card = drawCard(task);
    const siblings = [...col.list.children];
    const after = siblings.find((li) => byPriority(task, tasks.get(li.dataset.taskId) || {}) < 0);
    col.list.insertBefore(card, after || null);
    recount();
    // Keep keyboard users where they were when a card they are on moves or redraws.
    if (hadFocus) (card.querySelector(`[data-testid="${focusedTestId}"]`) || card.querySelector('a')).focus();
    if (before && before.status !== task.status) announce(`${task.title}: ${statusLabel(task.status)}`);
  }

  function drawAll() {
    for (const col of columns.values()) col.list.replaceChildren();
    const sorted = [...tasks.values()].sort(byPriority);
    for (const t of sorted) (columns.get(t.status) || columns.get('pending')).list.append(drawCard(t));
    recount();
  }

  async function loadProject() {
    project = await get(`/api/projects/${encodeURIComponent(projectId)}`, { signal });
    heading.textContent = project.name;
    setTitle(project.name);
    description.textContent = project.description || '';
    description.hidden = !project.description;
    if (project.workspace_id) {
      wsLink.href = `/ui/workspaces/${encodeURIComponent(project.workspace_id)}`;
      wsLink.hidden = false;
    }
  }

  async function loadTasks() {
    const { items, truncated, total } = await allPages(`/api/projects/${encodeURIComponent(projectId)}/tasks?sort=priority&order=desc`, { signal, max: 1000 });
    tasks.clear();
    for (const t of items) tasks.set(t.id, t);
    drawAll();
    if (truncated) messages.replaceChildren(h('div', { class: 'alert alert-info' }, `Showing ${items.length} of ${total} tasks.`));
  }

  // Live updates carry a task's id, status and progress: those are drawn at once, and the
  // whole task is read again shortly after (coalescing a burst of progress updates).
  const pending = new Map();
  function refreshTask(id, delay = 300) {
    clearTimeout(pending.get(id));
    pending.set(id, setTimeout(async () => {
      pending.delete(id);
      try {
        upsert(await get(`/api/tasks/${encodeURIComponent(id)}`, { signal }));
      } catch (err) {
        if (err.status === 404) { // deleted
          tasks.delete(id);
          columnsEl.querySelector(`.task-card[data-task-id="${CSS.escape(id)}"]`)?.remove();
          recount();
        }
      }
    }, delay));
  }

  function onMessage(msg) {
    const d = msg.data || {};
    switch (msg.type) {
      case 'task_update':
      case 'task_completed': {
        if (d.project_id && d.project_id !== projectId) return;
        const known = tasks.get(d.task_id);
        if (known) {
          const next = { ...known };
          if (d.status) next.status = d.status;
          if (d.progress_percentage != null) next.progress_percentage = d.progress_percentage;
          upsert(next);
        }
        refreshTask(d.task_id, known ? 400 : 0);
        break;
      }
      case 'project_update':
        if (!d.id || d.id === projectId || d.project_id === projectId) loadProject().catch(() => {});
        break;
      case 'notification':
        announce(`${d.title || 'Notice'}: ${d.message || ''}`);
        break;
      case 'error':
        if (d.code === 'RESUME_GAP') loadTasks().catch((e) => showError(e));
        else if (d.code !== 'AUTH_TOKEN_INVALID') messages.replaceChildren(errorBox({ message: `Live updates: ${d.message}`, code: d.code }));
        break;
      default:
    }
  }

  function startPolling() {
    if (pollTimer) return;
    pollTimer = setInterval(() => loadTasks().catch(() => {}), 15_000);
  }
  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  function onState(state, detail = {}) {
    live.className = `live live-${state}`;
    if (state === 'open') {
      live.textContent = 'Live';
      stopPolling();
      // After the first connection and after a resume gap the board is read again, so no
      // change between the first load and the subscription is missed.
      if (detail.first) loadTasks().catch(() => {});
    } else if (state === 'connecting') {
      live.textContent = 'Connecting…';
    } else if (state === 'reconnecting') {
      const secs = detail.delay ? Math.round(detail.delay / 1000) : 0;
      live.textContent = `Reconnecting${secs ? ` in ${secs} s` : '…'}${detail.reason ? ` (${detail.reason})` : ''}`;
      startPolling();
    } else {
      live.textContent = 'Not live';
    }
  }

  newTask.addEventListener('click', async () => {
    const saved = await openTaskDialog({ project });
    if (saved) upsert(saved);
  });

  main.append(
    h('nav', { class: 'breadcrumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/ui/projects' }, 'Projects'), ' / ', h('span', { 'aria-current': 'page' }, 'Board')),
    h('div', { class: 'view-head' }, heading, h('div', { class: 'toolbar' }, newTask, wsLink, live)),
    description, summary, messages, columnsEl);

  try {
    await loadProject();
    await loadTasks();
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    if (err.status === 404) {
      heading.textContent = 'Project not found';
      replace(messages, errorBox(err));
      newTask.disabled = true;
      return undefined;
    }
    showError(err, 'The board could not be loaded.');
  }

  socket = new LiveSocket({
    projectId,
    subscriptions: [{ channel: 'project_updates', project_id: projectId }],
    onMessage,
    onState,
  });

  return () => {
    socket?.close();
    stopPolling();
    for (const t of pending.values()) clearTimeout(t);
  };
}
