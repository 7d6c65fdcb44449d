// Small DOM helpers. Everything the app shows is built with createElement and textContent:
// text from the APIs (task titles, agent output, file contents) never goes through innerHTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Append children: strings become text nodes; null, undefined and false are skipped. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === 'class') el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value' || key === 'checked' || key === 'selected') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

/**
 * h('button', {class: 'btn', onclick, testid: 'x'}, 'Label') — an element with attributes
 * (`testid` sets data-testid, `on…` functions become listeners) and children.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return append(el, children);
}

/** The same for SVG elements (charts). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  return append(el, children);
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A unique id for label/aria wiring. */
let nextId = 0;
export function uid(prefix = 'id') {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A table in a box that scrolls sideways on narrow screens; focusable so keyboards can scroll it. */
export function tableWrap(label, table) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': label }, table);
}

/** A labelled form field: <div class="field"><label>…</label><input>…<p hint></div>. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid('f');
  const parts = [h('label', { for: control.id }, label), control];
  if (hint) {
    const hintId = uid('hint');
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('p', { class: 'hint', id: hintId }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

/** An error the view shows in place: role=alert, with the API's message. */
export function errorBox(err, prefix) {
  const message = err && err.message ? err.message : String(err);
  const code = err && err.code && err.code !== 'network' ? ` (${err.code})` : '';
  return h('div', { class: 'alert alert-error', role: 'alert', testid: 'error-message' },
    prefix ? h('strong', null, prefix, ' ') : null, message + code);
}

export function notice(text, kind = 'info') {
  return h('div', { class: `alert alert-${kind}` }, text);
}

// The page-wide live region (index.html's #announcer): short status messages for everyone,
// read out by screen readers, shown a few seconds as a toast.
let toastTimer;
export function announce(message) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  // A new text node after clearing makes screen readers read a repeated message again.
  requestAnimationFrame(() => {
    region.textContent = message;
    region.classList.add('visible');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => region.classList.remove('visible'), 5000);
  });
}

// Formatting.

export function fmtDate(value) {
  if (value == null || value === '') return '—';
  const d = typeof value === 'number' ? new Date(value) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

export function fmtDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const secs = ms / 1000;
  if (secs < 60) return `${secs.toFixed(secs < 10 ? 1 : 0)} s`;
  const m = Math.floor(secs / 60);
  const rest = Math.round(secs % 60);
  if (m < 60) return `${m} min ${rest} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtBytes(n) {
  if (n == null) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do { v /= 1024; i += 1; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtNumber(n, digits = 0) {
  if (n == null || !Number.isFinite(Number(n))) return '—';
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** Human words for the API's status names (timed_out → timed out). */
export function statusLabel(status) {
  return String(status ?? 'unknown').replace(/_/g, ' ');
}

/** Resolve after ms, or reject with AbortError when the signal aborts first. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new DOMException('aborted', 'AbortError'));
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
    function onAbort() { clearTimeout(t); reject(new DOMException('aborted', 'AbortError')); }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function isAbort(err) {
  return err && (err.name === 'AbortError');
}
