// Small DOM helpers for the API reference: elements are built with createElement and
// text nodes, never from strings, except the markdown renderer's escaped output.

/** h('a', {href, class, text, onclick}, ...children): one element. */
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'value') el.value = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  add(el, kids);
  return el;
}

/** Appends children (nodes, strings, nested arrays; null and false skipped). */
export function add(el, kids) {
  for (const k of [kids].flat(Infinity)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
  return el;
}

/** HTML-escapes text for the few places that build markup as a string. */
export function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

let seq = 0;
/** A fresh id for label/aria wiring. */
export const uid = (p = 'd') => `${p}-${++seq}`;

/** A <details> whose content is built the first time it opens. */
export function lazyDetails(cls, summary, build, open = false) {
  const d = h('details', { class: cls }, h('summary', null, summary));
  let built = false;
  const fill = () => {
    if (built || !d.open) return;
    built = true;
    add(d, build());
  };
  d.addEventListener('toggle', fill);
  if (open) {
    d.open = true;
    fill();
  }
  return d;
}

/**
 * A short line from a description for a one-line summary: its first line when short,
 * else its first sentence, else the start of it. Markdown is kept (drawn inline later).
 */
export function firstLine(text, max = 160) {
  if (!text) return '';
  const line = String(text).trim().split(/\n/)[0].trim();
  if (line.length <= max) return line;
  const m = line.match(/^(.{8,}?\.)\s/);
  if (m && m[1].length <= max) return m[1];
  return `${line.replace(/[`*]/g, '').slice(0, max - 1)}…`;
}
