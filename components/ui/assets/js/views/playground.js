// The prompt playground (/ui/playground): one prompt through several backends side by side,
// each streaming as it runs. /api/v1/compare answers only once every backend has finished,
// so each backend gets its own streaming POST /api/v1/prompt (output_format "stream-json",
// ephemeral), all at once; stopping a run closes its stream, which cancels it on the server.
// The backends and their availability come from GET /api/v1/backends.

import { request, ndjson } from '/ui/assets/js/api.js';
import { h, field, errorBox, fmtDuration, fmtNumber, isAbort, announce, replace } from '/ui/assets/js/dom.js';
import { renderMarkdown } from '/ui/assets/js/markdown.js';
import { backendsWithAvailability } from '/ui/assets/js/views/shared.js';

const CHOICE_KEY = 'gantry.playground.backends'; // the last backends chosen (not a secret)

export default async function playground({ main, signal, setTitle }) {
  setTitle('Prompt playground');
  const runs = new Set(); // AbortControllers of the streams in flight

  const promptEl = h('textarea', { name: 'prompt', rows: '5', required: true, testid: 'playground-prompt', placeholder: 'Explain what this repository does, in three sentences.' });
  const model = h('input', { type: 'text', name: 'model', testid: 'playground-model', autocomplete: 'off' });
  const backendBox = h('fieldset', { class: 'backends', testid: 'playground-backends' }, h('legend', null, 'Backends'), h('p', { class: 'loading' }, 'Loading backends…'));
  const runButton = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'playground-run' }, 'Run');
  const stopButton = h('button', { type: 'button', class: 'btn', testid: 'playground-stop', disabled: true }, 'Stop');
  const formMessages = h('div', { class: 'messages' });
  const results = h('div', { class: 'results', testid: 'playground-results', 'aria-label': 'Results' });
  const form = h('form', { class: 'card form playground-form', 'aria-labelledby': 'pg-title' },
    h('h2', { id: 'pg-title', class: 'visually-hidden' }, 'Prompt'),
    formMessages,
    field('Prompt', promptEl),
    backendBox,
    field('Model (optional)', model, 'Passed to every backend chosen; leave empty for each one\'s default.'),
    h('div', { class: 'actions' }, runButton, stopButton));

  main.append(h('h1', null, 'Prompt playground'),
    h('p', { class: 'muted' }, 'One prompt, several agents, side by side. Each run is ephemeral: it gets a scratch workspace that is removed when it ends.'),
    form, results);

  // The backends.
  let chosen;
  try { chosen = new Set(JSON.parse(localStorage.getItem(CHOICE_KEY) || '[]')); } catch { chosen = new Set(); }
  let listed;
  try {
    listed = await backendsWithAvailability(signal);
  } catch (err) {
    if (isAbort(err)) throw err;
    listed = { backends: [], known: false, error: err };
  }
  const { backends, known, error } = listed;
  const boxes = [];
  replace(backendBox, h('legend', null, 'Backends'));
  if (error) backendBox.append(errorBox(error, 'Availability could not be read.'));
  else if (!known) backendBox.append(h('p', { class: 'alert alert-info' }, 'Whether each backend is available is not known to this sign-in.'));
  for (const b of backends) {
    const available = b.available !== false;
    const id = `pg-backend-${b.name}`;
    const box = h('input', { type: 'checkbox', id, name: 'backend', value: b.name, testid: 'playground-backend-input', disabled: !available, checked: available && chosen.has(b.name) });
    const why = !available ? h('span', { class: 'reason', id: `${id}-why` }, `down: ${b.reason || 'unavailable'}`) : null;
    if (why) box.setAttribute('aria-describedby', why.id);
    boxes.push(box);
    backendBox.append(h('div', { class: ['check', !available && 'is-disabled'], testid: 'playground-backend', dataset: { backend: b.name, available: String(available) } },
      box, ' ', h('label', { for: id }, b.name, b.version ? h('span', { class: 'muted' }, ` ${b.version.split('\n')[0].slice(0, 60)}`) : null),
      why ? [' — ', why] : null));
  }
  if (!backends.length) backendBox.append(h('p', null, 'No backends are configured on this node.'));

  function setRunning(on) {
    runButton.disabled = on;
    stopButton.disabled = !on;
  }

  stopButton.addEventListener('click', () => {
    for (const c of runs) c.abort();
    announce('Stopped');
  });

  // One backend's column: its stream drawn as it comes.
  async function runOne(backend, prompt, column, controller) {
    const status = h('p', { class: 'live live-connecting', testid: 'playground-status', role: 'status' }, 'Starting…');
    const stats = h('p', { class: 'meta', testid: 'playground-stats' });
    const out = h('div', { class: 'pg-output', testid: 'playground-output' });
    column.append(status, out, stats);
    const started = performance.now();
    const body = { backend, prompt, output_format: 'stream-json', ephemeral: true };
    if (model.value.trim()) body.model = model.value.trim();
    const toolNames = new Map();
    let final = null;
    try {
      const res = await request('/api/v1/prompt', { method: 'POST', body, raw: true, signal: controller.signal });
      status.textContent = 'Running…';
      status.className = 'live live-open';
      for await (const line of ndjson(res)) {
        const c = line.content || {};
        switch (line.type) {
          case 'init':
            out.append(h('p', { class: 'muted' }, 'Started', c.model ? ` · model ${c.model}` : ''));
            break;
          case 'message':
            out.append(h('div', { class: 'bubble bubble-agent' }, renderMarkdown(c.text ?? '')));
            break;
          case 'tool_use':
            if (c.id) toolNames.set(c.id, c.name);
            out.append(h('details', { class: 'tool' }, h('summary', null, 'Tool call ', h('strong', null, c.name || 'tool')),
              h('pre', { class: 'code-block' }, h('code', null, typeof c.input === 'string' ? c.input : JSON.stringify(c.input, null, 2)))));
            break;
          case 'tool_result':
            out.append(h('details', { class: ['tool', c.is_error && 'is-error'] },
              h('summary', null, c.is_error ? 'Tool error' : 'Tool result', toolNames.get(c.id) ? [' of ', h('strong', null, toolNames.get(c.id))] : ''),
              h('pre', { class: 'code-block' }, h('code', null, typeof c.output === 'string' ? c.output : JSON.stringify(c.output, null, 2)))));
            break;
          case 'usage':
            stats.textContent = `Tokens: in ${fmtNumber(c.input_tokens)} · out ${fmtNumber(c.output_tokens)}`;
            break;
          case 'error':
            out.append(h('div', { class: 'alert alert-error', role: 'alert', testid: 'error-message' }, c.message || 'error'));
            break;
          case 'raw':
            out.append(h('pre', { class: 'raw' }, c.line ?? JSON.stringify(c)));
            break;
          case 'done':
            final = c;
            break;
          default:
        }
      }
      const ok = final && final.exit_code === 0 && !final.error;
      status.className = `live ${ok ? 'live-closed' : 'live-failed'}`;
      status.textContent = final ? (ok ? 'Done' : `Ended: ${final.state || 'failed'}${final.error ? ` — ${final.error}` : ''}`) : 'The stream ended without a result.';
      if (final) {
        const u = final.token_usage || {};
        stats.textContent = [
          `Duration ${fmtDuration(final.duration_ms ?? (performance.now() - started))}`,
          `exit code ${final.exit_code}`,
          `tokens in ${fmtNumber(u.input_tokens)} · out ${fmtNumber(u.output_tokens)}${u.cached_tokens ? ` · cached ${fmtNumber(u.cached_tokens)}` : ''}`,
          final.model ? `model ${final.model}` : null,
        ].filter(Boolean).join(' · ');
        if (!out.querySelector('.bubble') && final.output) out.append(h('div', { class: 'bubble bubble-agent' }, renderMarkdown(final.output)));
      }
    } catch (err) {
      if (isAbort(err) || controller.signal.aborted) {
        status.className = 'live live-closed';
        status.textContent = 'Stopped';
        return;
      }
      status.className = 'live live-failed';
      status.textContent = 'Failed';
      column.append(errorBox(err, err.code === 'backend_unavailable' ? `${backend} is unavailable:` : `${backend} failed:`));
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    formMessages.replaceChildren();
    const prompt = promptEl.value.trim();
    const picked = boxes.filter((b) => b.checked && !b.disabled).map((b) => b.value);
    if (!prompt) {
      formMessages.append(errorBox({ message: 'Write a prompt first.' }));
      promptEl.focus();
      return;
    }
    if (!picked.length) {
      formMessages.append(errorBox({ message: 'Choose at least one available backend.' }));
      (boxes.find((b) => !b.disabled) || promptEl).focus();
      return;
    }
    localStorage.setItem(CHOICE_KEY, JSON.stringify(picked));
    results.replaceChildren();
    setRunning(true);
    announce(`Running on ${picked.join(', ')}`);
    const all = picked.map((backend) => {
      const column = h('section', { class: 'result card', testid: 'playground-result', dataset: { backend }, 'aria-label': `Result from ${backend}` },
        h('h2', null, backend));
      results.append(column);
      const controller = new AbortController();
      signal.addEventListener('abort', () => controller.abort(), { once: true });
      runs.add(controller);
      return runOne(backend, prompt, column, controller).finally(() => runs.delete(controller));
    });
    await Promise.allSettled(all);
    if (!signal.aborted) {
      setRunning(false);
      announce('All runs ended');
    }
  });

  return () => { for (const c of runs) c.abort(); };
}
