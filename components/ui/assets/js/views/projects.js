// Projects (/ui/projects): the tenant's projects (GET /api/projects/) and a form to make one
// (POST /api/projects/, which also makes its workspace). Each links to its board.

import { get, post, ApiError } from '/ui/assets/js/api.js';
import { h, field, errorBox, announce, fmtDate, fmtNumber, replace } from '/ui/assets/js/dom.js';
import { navigate } from '/ui/assets/js/router.js';
import { backendNames } from '/ui/assets/js/views/shared.js';

function projectItem(p) {
  const s = p.statistics || {};
  return h('li', { class: 'project card', testid: 'project-item', dataset: { projectId: p.id } },
    h('h3', null, h('a', { href: `/ui/projects/${encodeURIComponent(p.id)}`, testid: 'project-link' }, p.name)),
    p.description ? h('p', { class: 'muted' }, p.description) : null,
    h('dl', { class: 'stats' },
      h('div', null, h('dt', null, 'Tasks'), h('dd', null, fmtNumber(s.total_tasks))),
      h('div', null, h('dt', null, 'Running'), h('dd', null, fmtNumber(s.running_tasks))),
      h('div', null, h('dt', null, 'Queued'), h('dd', null, fmtNumber(s.queued_tasks))),
      h('div', null, h('dt', null, 'Completed'), h('dd', null, fmtNumber(s.completed_tasks))),
      h('div', null, h('dt', null, 'Failed'), h('dd', null, fmtNumber(s.failed_tasks)))),
    h('p', { class: 'meta' },
      p.settings?.backend ? `Backend ${p.settings.backend} · ` : '',
      `Made ${fmtDate(p.created_at)} · `,
      p.workspace_id ? h('a', { href: `/ui/workspaces/${encodeURIComponent(p.workspace_id)}` }, 'Workspace files') : null));
}

export default async function projects({ main, signal, setTitle }) {
  setTitle('Projects');
  const list = h('ul', { class: 'project-list', testid: 'project-list', 'aria-label': 'Projects' });
  const listStatus = h('div', { class: 'list-status' });
  const more = h('button', { type: 'button', class: 'btn', hidden: true, testid: 'projects-more' }, 'Show more');

  // The form.
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '200', testid: 'project-name' });
  const description = h('textarea', { name: 'description', rows: '2', testid: 'project-description' });
  const backend = h('select', { name: 'backend', testid: 'project-backend' },
    h('option', { value: '' }, 'The node\'s default (claude)'));
  const create = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'project-create' }, 'Create project');
  const formMessages = h('div', { class: 'messages' });
  const form = h('form', { class: 'card form', 'aria-labelledby': 'new-project-title', testid: 'project-form' },
    h('h2', { id: 'new-project-title' }, 'New project'),
    formMessages,
    field('Name', name),
    field('Description', description),
    field('Backend for its tasks', backend, 'Each task may name its own; this is the project\'s default.'),
    h('div', { class: 'actions' }, create));

  backendNames(signal).then((names) => {
    for (const n of names) backend.append(h('option', { value: n }, n));
  }).catch(() => { /* the default stays */ });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    create.disabled = true;
    formMessages.replaceChildren();
    try {
      const body = { name: name.value.trim() };
      if (description.value.trim()) body.description = description.value.trim();
      if (backend.value) body.settings = { backend: backend.value };
      const p = await post('/api/projects/', body, { signal });
      announce(`Project ${p.name} created`);
      navigate(`/ui/projects/${encodeURIComponent(p.id)}`);
    } catch (err) {
      if (err.name === 'AbortError') return;
      formMessages.replaceChildren(errorBox(err));
      if (err instanceof ApiError && err.details?.field === 'name') name.setAttribute('aria-invalid', 'true');
      create.disabled = false;
    }
  });

  let page = 1;
  async function load() {
    listStatus.replaceChildren(h('p', { class: 'loading' }, 'Loading projects…'));
    try {
      const data = await get(`/api/projects/?page=${page}&page_size=50&sort=updated_at&order=desc`, { signal });
      listStatus.replaceChildren();
      for (const p of data.items) list.append(projectItem(p));
      if (page === 1 && data.items.length === 0) {
        listStatus.replaceChildren(h('p', { class: 'empty', testid: 'projects-empty' }, 'No projects yet. Make the first one with the form.'));
      }
      more.hidden = !data.has_next;
    } catch (err) {
      if (err.name === 'AbortError') return;
      replace(listStatus, errorBox(err, 'The projects could not be loaded.'));
    }
  }
  more.addEventListener('click', () => { page += 1; load(); });

  main.append(
    h('h1', null, 'Projects'),
    h('div', { class: 'split' },
      h('section', { 'aria-labelledby': 'project-list-title', class: 'split-main' },
        h('h2', { id: 'project-list-title', class: 'visually-hidden' }, 'All projects'),
        listStatus, list, more),
      h('aside', { class: 'split-side' }, form)));
  await load();
}
