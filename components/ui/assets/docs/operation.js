// The body of one operation, built when it is first opened: description, parameters,
// request body, responses (schemas and examples) and the "Try it" form.

import { h, add, lazyDetails, firstLine } from './dom.js';
import { markdown, inlineMarkdown } from './markdown.js';
import { deref, paramRow, schemaTree, examplesOf, examplesBlock } from './schema.js';
import { tryForm } from './try.js';

const IN_ORDER = { path: 0, query: 1, header: 2, cookie: 3 };

/** The operation's parameters with the path item's merged in (the operation's win). */
export function parametersOf(item, op) {
  const byKey = new Map();
  for (const p0 of [...(item.parameters || []), ...(op.parameters || [])]) {
    const p = deref(p0);
    if (p.name && p.in) byKey.set(`${p.in}:${p.name}`, p);
  }
  return [...byKey.values()].sort((a, b) => (IN_ORDER[a.in] ?? 9) - (IN_ORDER[b.in] ?? 9));
}

/** The schemes an operation accepts: its own `security`, else the document's. */
export function securityOf(doc, op) {
  const req = op.security ?? doc.security ?? [];
  return req.map((alt) => Object.keys(alt || {}));
}

function section(title, ...kids) {
  return h('section', { class: 'op-sec' }, h('h4', null, title), kids);
}

function media(content, mode) {
  return Object.entries(content || {}).map(([type, m0]) => {
    const m = deref(m0);
    return h(
      'div',
      { class: 'media' },
      h('p', { class: 'media-type' }, h('code', null, type)),
      m.schema ? schemaTree(m.schema) : h('p', { class: 'muted' }, 'No schema given.'),
      examplesBlock(examplesOf(m, type, mode), type),
    );
  });
}

const codeClass = (code) => `status s${String(code)[0]}`;

function responses(op) {
  const entries = Object.entries(op.responses || {});
  if (!entries.length) return h('p', { class: 'muted' }, 'No responses documented.');
  return entries.map(([code, r0]) => {
    const r = deref(r0);
    const line = firstLine(r.description);
    return lazyDetails(
      'resp',
      [h('span', { class: codeClass(code) }, code), ' ', add(h('span', { class: 'resp-sum' }), inlineMarkdown(line, false))],
      () => {
        const out = [];
        if (r.description && r.description.trim() !== line.trim()) out.push(markdown(r.description, 5));
        const headers = Object.entries(r.headers || {});
        if (headers.length) {
          out.push(
            h('p', { class: 'sub' }, 'Headers'),
            h('div', { class: 'schema' }, h('ul', { class: 's-props s-root' }, headers.map(([n, hd]) => paramRow({ ...deref(hd), name: n })))),
          );
        }
        const body = media(r.content, 'response');
        out.push(body.length ? body : h('p', { class: 'muted' }, 'No body.'));
        return out;
      },
      /^2/.test(code),
    );
  });
}

function securityText(doc, op) {
  const alts = securityOf(doc, op);
  if (!alts.length || alts.every((a) => !a.length)) return 'none';
  return alts.map((a) => a.join(' + ') || 'none (optional)').join(' or ');
}

/** Everything under an operation's heading. `o` = {method, path, item, op, id}. */
export function operationBody(o, doc) {
  const { op } = o;
  const params = parametersOf(o.item, op);
  const out = [];
  if (op.deprecated) out.push(h('p', { class: 'warn' }, 'Deprecated: this operation may go away.'));
  const desc = op.description || o.item.description;
  if (desc) out.push(markdown(desc, 3));
  out.push(
    h(
      'p',
      { class: 'op-meta' },
      op.operationId && [h('span', null, 'operationId ', h('code', null, op.operationId)), ' · '],
      h('span', null, 'auth: ', securityText(doc, op)),
      ' · ',
      h('a', { href: `#${o.id}` }, 'link to this operation'),
    ),
  );
  if (params.length) {
    out.push(section('Parameters', h('div', { class: 'schema params' }, h('ul', { class: 's-props s-root' }, params.map((p) => paramRow(p, p.in))))));
  }
  const rb = op.requestBody && deref(op.requestBody);
  if (rb) {
    out.push(
      section(
        'Request body',
        h('p', { class: 'sub' }, rb.required ? 'Required.' : 'Optional.'),
        rb.description && markdown(rb.description, 4),
        media(rb.content, 'request'),
      ),
    );
  }
  out.push(section('Responses', responses(op)));
  const alts = securityOf(doc, op);
  const needsAuth = alts.length > 0 && alts.every((a) => a.length > 0);
  out.push(section('Try it', tryForm({ ...o, params, requestBody: rb, doc, needsAuth })));
  return out;
}
