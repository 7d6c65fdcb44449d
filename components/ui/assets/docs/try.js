// "Try it": a form per operation that calls the real API from the browser with the token
// of this tab (Authorization: Bearer), and shows the answer and the equivalent curl.

import { h, uid, firstLine } from './dom.js';
import { highlight } from './markdown.js';
import { look, typeLabel, deref, examplesOf, exampleText } from './schema.js';
import { getToken, authHeaders } from './token.js';

const SHOWN = 2 * 1024 * 1024; // characters of a body drawn; the rest is counted only
const STREAMING = /ndjson|event-stream|jsonl/;

function basePath(doc) {
  const u = doc.servers?.[0]?.url;
  if (!u) return '';
  try {
    const x = new URL(u.replace(/\{[^}]*\}/g, ''), location.origin);
    return x.origin === location.origin ? x.pathname.replace(/\/$/, '') : '';
  } catch {
    return '';
  }
}

const sq = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

function compact(text) {
  try {
    return JSON.stringify(JSON.parse(text));
  } catch {
    return text;
  }
}

function size(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1048576).toFixed(1)} MB`;
}

function field(p) {
  const id = uid('f');
  const info = look(p.schema || p.content && Object.values(p.content)[0]?.schema || {});
  const { s } = info;
  const t = Array.isArray(s.type) ? s.type.find((x) => x !== 'null') : s.type;
  const choices = Array.isArray(s.enum) ? s.enum.filter((v) => v !== null) : t === 'boolean' ? [true, false] : null;
  let input;
  if (choices) {
    input = h(
      'select',
      { id },
      h('option', { value: '' }, p.required ? 'choose…' : '(not sent)'),
      choices.map((v) => h('option', { value: String(v) }, String(v))),
    );
  } else {
    const ex = p.example ?? (p.examples && Object.values(p.examples).map(deref)[0]?.value);
    input = h('input', {
      id,
      type: 'text',
      autocomplete: 'off',
      spellcheck: 'false',
      inputmode: t === 'integer' ? 'numeric' : t === 'number' ? 'decimal' : null,
      placeholder:
        s.default !== undefined ? `default: ${JSON.stringify(s.default)}` :
        ex !== undefined ? `e.g. ${typeof ex === 'string' ? ex : JSON.stringify(ex)}` :
        t === 'array' ? 'comma-separated' : null,
    });
  }
  if (p.required) input.setAttribute('aria-required', 'true');
  const hint = `${p.in}${p.required ? ', required' : ''} · ${typeLabel(info)}`;
  const wrap = h(
    'div',
    { class: 'field' },
    h('label', { for: id }, h('code', null, p.name), ' ', h('span', { class: 'hint' }, hint)),
    input,
  );
  return { p, input, wrap, array: t === 'array' };
}

/** The form. `ctx` = {method, path, op, params, requestBody, doc, needsAuth}. */
export function tryForm(ctx) {
  const M = ctx.method.toUpperCase();
  // Path parameters in the order of the template (any it names but the document does not
  // declare get a plain text field), then the others.
  const declared = ctx.params.filter((p) => p.in !== 'cookie');
  const inPath = [...ctx.path.matchAll(/\{([^}]+)\}/g)].map(([, name]) =>
    declared.find((p) => p.in === 'path' && p.name === name) || { name, in: 'path', required: true, schema: { type: 'string' } });
  const params = [...inPath, ...declared.filter((p) => p.in !== 'path')];
  const fields = params.map(field);
  const base = basePath(ctx.doc);
  const ok2xx = Object.entries(ctx.op.responses || {}).filter(([c]) => /^2/.test(c));
  const streams = ok2xx.some(([, r]) => Object.keys(deref(r).content || {}).some((t) => STREAMING.test(t)));

  // The body editor.
  let bodyType = null;
  let textarea = null;
  const bodyParts = [];
  const rb = ctx.requestBody;
  if (rb && rb.content && Object.keys(rb.content).length) {
    const types = Object.keys(rb.content);
    bodyType = types.find((t) => /json/.test(t)) || types[0];
    const examples = examplesOf(deref(rb.content[bodyType]), bodyType, 'request');
    const id = uid('body');
    textarea = h('textarea', { id, class: 'body-input', spellcheck: 'false', autocomplete: 'off', autocapitalize: 'off' });
    const fill = (i) => {
      textarea.value = examples[i] ? exampleText(examples[i].value, bodyType) : '';
      textarea.rows = Math.min(18, Math.max(4, textarea.value.split('\n').length + 1));
      update();
    };
    bodyParts.push(
      h('label', { for: id }, 'Request body ', h('span', { class: 'hint' }, `${bodyType}, ${rb.required ? 'required' : 'optional'}`)),
    );
    if (examples.length > 1) {
      const sid = uid('exsel');
      const sel = h('select', { id: sid, onchange: () => fill(sel.selectedIndex) }, examples.map((e) => h('option', null, e.label)));
      bodyParts.push(h('div', { class: 'field inline' }, h('label', { for: sid }, 'Example'), sel));
    }
    bodyParts.push(textarea);
    queueMicrotask(() => fill(0));
  }

  const authNote = h('p', { class: 'try-auth' });
  const showAuth = () => {
    authNote.replaceChildren(
      ...(getToken()
        ? ['Sent with ', h('code', null, 'Authorization: Bearer'), ' and the token set at the top of the page.']
        : [
            'No token set: sent without ',
            h('code', null, 'Authorization'),
            '. ',
            h('button', { type: 'button', class: 'linkish', onclick: () => document.getElementById('token')?.focus() }, 'Paste a token or API key'),
            ' or ',
            h('a', { href: '/ui/sign-in' }, 'sign in'),
            '.',
          ]),
    );
  };

  const send = h('button', { type: 'submit', class: 'primary', 'data-testid': 'docs-try-send' }, 'Send');
  const cancel = h('button', { type: 'button', hidden: true }, 'Cancel');
  const curlId = uid('curl');
  const curlCode = h('code');
  const copy = h('button', { type: 'button', class: 'small' }, 'Copy');
  const status = h('p', { class: 'try-status', role: 'status', 'aria-live': 'polite', 'data-testid': 'docs-try-status' });
  const headerList = h('dl', { class: 'try-hlist' });
  const headerBox = h('details', { class: 'try-headers', hidden: true }, h('summary', null, 'Response headers'), headerList);
  const bodyCode = h('code');
  const bodyPre = h('pre', { class: 'code try-body', 'data-testid': 'docs-try-body', tabindex: '0', 'aria-label': 'Response body', hidden: true }, bodyCode);
  const extra = h('p', { class: 'try-extra', hidden: true });

  const form = h(
    'form',
    { class: 'try', 'data-testid': 'docs-try', novalidate: true },
    fields.length ? h('fieldset', null, h('legend', null, 'Parameters'), fields.map((f) => f.wrap)) : null,
    bodyParts.length ? h('div', { class: 'field' }, bodyParts) : null,
    authNote,
    h('div', { class: 'actions' }, send, cancel),
    h(
      'div',
      { class: 'curl' },
      h('p', { class: 'sub', id: curlId }, 'The same with curl (', h('code', null, '$TOKEN'), ' stands for your token)'),
      h('pre', { class: 'code', tabindex: '0', 'aria-labelledby': curlId }, curlCode),
      copy,
    ),
    h('div', { class: 'result' }, status, headerBox, bodyPre, extra),
  );

  function request() {
    const missing = [];
    const byPath = new Map(fields.filter((f) => f.p.in === 'path').map((f) => [f.p.name, f]));
    const path = ctx.path.replace(/\{([^}]+)\}/g, (m, name) => {
      const f = byPath.get(name);
      const v = f ? f.input.value : '';
      if (!v) {
        if (f) missing.push(f);
        return m;
      }
      return v.split('/').map(encodeURIComponent).join('/');
    });
    const q = new URLSearchParams();
    const headers = {};
    for (const f of fields) {
      const v = f.input.value;
      if (f.p.in === 'path') continue;
      if (v === '') {
        if (f.p.required) missing.push(f);
        continue;
      }
      if (f.p.in === 'query') {
        if (f.array) for (const x of v.split(',').map((y) => y.trim()).filter(Boolean)) q.append(f.p.name, x);
        else q.append(f.p.name, v);
      } else if (f.p.in === 'header') {
        headers[f.p.name] = v;
      }
    }
    let body = null;
    let bodyError = null;
    if (textarea && textarea.value.trim()) {
      body = textarea.value;
      if (/json/.test(bodyType)) {
        try {
          JSON.parse(body);
        } catch (e) {
          bodyError = `The body is not valid JSON: ${e.message}`;
        }
      }
      headers['Content-Type'] = bodyType;
    } else if (textarea && rb.required) {
      bodyError = 'The request body is required.';
    }
    const qs = q.toString();
    return { url: `${base}${path}${qs ? `?${qs}` : ''}`, headers, body, missing, bodyError };
  }

  function curl(req) {
    const flags = `${streams ? ' -N' : ''}${M === 'HEAD' ? ' --head' : M !== 'GET' ? ` -X ${M}` : ''}`;
    const lines = [`curl${flags} ${sq(location.origin + req.url)}`];
    if (getToken() || ctx.needsAuth) lines.push('-H "Authorization: Bearer $TOKEN"');
    for (const [k, v] of Object.entries(req.headers)) lines.push(`-H ${sq(`${k}: ${v}`)}`);
    if (req.body != null) lines.push(`${req.body.startsWith('@') ? '--data-raw' : '-d'} ${sq(compact(req.body))}`);
    return lines.join(' \\\n  ');
  }

  let pending = false;
  function update() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      highlight(curlCode, curl(request()), 'bash');
    });
  }

  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(curlCode.textContent);
      copy.textContent = 'Copied';
    } catch {
      getSelection().selectAllChildren(curlCode);
      copy.textContent = 'Selected: copy it';
    }
    setTimeout(() => (copy.textContent = 'Copy'), 2000);
  });

  let ctrl = null;
  cancel.addEventListener('click', () => ctrl?.abort());

  function showHeaders(res) {
    const rows = [...res.headers.entries()];
    headerList.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
    headerBox.querySelector('summary').textContent = `Response headers (${rows.length})`;
    headerBox.hidden = false;
  }

  async function showBody(res, signal) {
    const ct = (res.headers.get('content-type') || '').toLowerCase();
    bodyPre.hidden = false;
    bodyCode.className = '';
    if (M === 'HEAD' || res.status === 204 || res.status === 304 || !res.body) {
      bodyCode.textContent = '(no body)';
      return 0;
    }
    if (STREAMING.test(ct)) {
      bodyCode.textContent = '';
      status.textContent += ' · streaming…';
      const reader = res.body.getReader();
      signal.addEventListener('abort', () => reader.cancel().catch(() => {}));
      const dec = new TextDecoder();
      let n = 0;
      let shown = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        n += value.length;
        if (shown < SHOWN) {
          const text = dec.decode(value, { stream: true });
          shown += text.length;
          const atEnd = bodyPre.scrollTop + bodyPre.clientHeight >= bodyPre.scrollHeight - 8;
          bodyCode.append(text);
          if (atEnd) bodyPre.scrollTop = bodyPre.scrollHeight;
        }
      }
      bodyCode.append(dec.decode());
      return n;
    }
    if (/json|^text\/|xml|javascript|urlencoded/.test(ct) || !ct) {
      const text = await res.text();
      const n = new TextEncoder().encode(text).length;
      let shown = text;
      if (/json/.test(ct)) {
        try {
          shown = JSON.stringify(JSON.parse(text), null, 2);
        } catch {
          // shown as it came
        }
      }
      if (shown.length > SHOWN) shown = `${shown.slice(0, SHOWN)}\n… (${size(n)} in all; the rest is not shown)`;
      highlight(bodyCode, shown || '(empty body)', /json/.test(ct) ? 'json' : '');
      return n;
    }
    const blob = await res.blob();
    bodyCode.textContent = `${size(blob.size)} of ${ct}.`;
    extra.replaceChildren(h('a', { href: URL.createObjectURL(blob), download: ctx.path.split('/').pop() || 'response' }, 'Download the body'));
    extra.hidden = false;
    return blob.size;
  }

  form.addEventListener('input', update);
  form.addEventListener('change', update);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    ctrl?.abort();
    const req = request();
    for (const f of fields) f.input.removeAttribute('aria-invalid');
    textarea?.removeAttribute('aria-invalid');
    if (req.missing.length || req.bodyError) {
      for (const f of req.missing) f.input.setAttribute('aria-invalid', 'true');
      if (req.bodyError && !req.missing.length) textarea.setAttribute('aria-invalid', 'true');
      status.className = 'try-status bad';
      status.textContent = req.missing.length
        ? `Fill in ${req.missing.map((f) => f.p.name).join(', ')} first.`
        : req.bodyError;
      (req.missing[0]?.input || textarea).focus();
      return;
    }
    const mine = (ctrl = new AbortController());
    cancel.hidden = false;
    extra.hidden = true;
    headerBox.hidden = true;
    bodyPre.hidden = true;
    status.className = 'try-status';
    status.textContent = `Sending ${M} ${req.url}…`;
    const t0 = performance.now();
    try {
      const res = await fetch(req.url, {
        method: M,
        headers: { ...authHeaders(), ...req.headers },
        body: req.body ?? undefined,
        signal: mine.signal,
        cache: 'no-store',
        credentials: 'same-origin',
      });
      const r = ctx.op.responses?.[res.status] ?? ctx.op.responses?.[`${String(res.status)[0]}XX`] ?? ctx.op.responses?.default;
      const meaning = r ? firstLine(deref(r).description).replace(/[`*]/g, '') : '';
      const head = `${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
      status.className = `try-status s${String(res.status)[0]}`;
      status.textContent = `${head} · ${Math.round(performance.now() - t0)} ms`;
      showHeaders(res);
      const n = await showBody(res, mine.signal);
      status.textContent = mine.signal.aborted
        ? `${head} · cancelled after ${size(n)}`
        : `${head} · ${Math.round(performance.now() - t0)} ms · ${size(n)}${meaning ? ` — ${meaning}` : ''}`;
    } catch (err) {
      if (ctrl !== mine) return; // replaced by a newer send
      status.className = 'try-status bad';
      status.textContent = err.name === 'AbortError' ? 'Cancelled.' : `The request failed: ${err.message}`;
    } finally {
      if (ctrl === mine) {
        ctrl = null;
        cancel.hidden = true;
      }
    }
  });

  addEventListener('gantry-token', () => {
    showAuth();
    update();
  });
  showAuth();
  update();
  return form;
}
