// The dialog that makes or edits a task: title, description, tags, priority (0–100) and the
// backend that runs it (kept in the task's metadata.backend, which the API reads at execute).
// A native <dialog>: modal, Escape closes it, focus returns to what opened it.

import { post, put, ApiError } from '/ui/assets/js/api.js';
import { h, field, errorBox, announce } from '/ui/assets/js/dom.js';
import { backendNames } from '/ui/assets/js/views/shared.js';

/**
 * openTaskDialog({project, task?}) → Promise of the saved task, or null when cancelled.
 */
export function openTaskDialog({ project, task = null }) {
  return new Promise((resolve) => {
    const editing = Boolean(task);
    const opener = document.activeElement;
    const titleId = `task-dialog-title-${Date.now()}`;

    const title = h('input', { type: 'text', name: 'title', required: true, maxlength: '500', testid: 'task-title', value: task?.title || '' });
    const description = h('textarea', { name: 'description', rows: '5', maxlength: '10000', testid: 'task-description', value: task?.description || '' });
    const tags = h('input', { type: 'text', name: 'tags', testid: 'task-tags', value: (task?.tags || []).join(', '), autocomplete: 'off' });
    const priority = h('input', { type: 'number', name: 'priority', min: '0', max: '100', step: '1', inputmode: 'numeric', testid: 'task-priority', value: String(task?.priority ?? 0) });
    const projectBackend = project?.settings?.backend;
    const backend = h('select', { name: 'backend', testid: 'task-backend' },
      h('option', { value: '' }, `The project's default (${projectBackend || 'claude'})`));
    const current = task?.metadata?.backend;
    backendNames().then((names) => {
      const all = current && !names.includes(current) ? [...names, current] : names;
      for (const n of all) backend.append(h('option', { value: n, selected: n === current }, n));
    }).catch(() => {
      if (current) backend.append(h('option', { value: current, selected: true }, current));
    });

    const messages = h('div', { class: 'messages' });
    const save = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'task-save' }, editing ? 'Save changes' : 'Create task');
    const cancel = h('button', { type: 'button', class: 'btn', testid: 'task-dialog-cancel' }, 'Cancel');
    const form = h('form', { class: 'form', novalidate: false },
      h('h2', { id: titleId }, editing ? 'Edit task' : 'New task'),
      messages,
      field('Title', title),
      field('Description', description, 'The agent gets the title and the description as its prompt. Markdown is fine.'),
      field('Tags', tags, 'Separated by commas, e.g. security, backend.'),
      field('Priority', priority, 'From 0 to 100; higher comes first on the board.'),
      field('Backend', backend),
      h('div', { class: 'actions' }, save, cancel));
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId, testid: 'task-dialog' }, form);

    let result = null;
    const close = () => dialog.close();
    cancel.addEventListener('click', close);
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(result);
    });

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
      messages.replaceChildren();
      const body = {
        title: title.value.trim(),
        description: description.value.trim() || null,
        tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean),
        priority: Number.parseInt(priority.value || '0', 10),
      };
      const metadata = { ...(task?.metadata || {}) };
      if (backend.value) metadata.backend = backend.value;
      else delete metadata.backend;
      body.metadata = metadata;
      if (!body.title) {
        title.setAttribute('aria-invalid', 'true');
        messages.replaceChildren(errorBox(new ApiError({ code: 'VALIDATION_ERROR', message: 'A task needs a title.' })));
        title.focus();
        return;
      }
      save.disabled = true;
      try {
        let saved;
        if (editing) {
          saved = await put(`/api/tasks/${encodeURIComponent(task.id)}`, body);
        } else {
          if (body.description === null) delete body.description;
          saved = await post('/api/tasks/', { ...body, project_id: project.id });
        }
        result = saved;
        announce(editing ? `Task ${saved.title} saved` : `Task ${saved.title} created`);
        close();
      } catch (err) {
        messages.replaceChildren(errorBox(err));
        const name = err.details?.field;
        const control = name && form.elements.namedItem(String(name).replace(/^metadata\.?/, '') || 'backend');
        if (control) {
          control.setAttribute('aria-invalid', 'true');
          control.focus();
        }
      } finally {
        save.disabled = false;
      }
    });

    document.body.append(dialog);
    dialog.showModal();
    title.focus();
  });
}
