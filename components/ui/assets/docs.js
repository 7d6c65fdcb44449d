// gantry's API reference at /docs: reads /openapi.json and draws it — the description,
// the operations by tag (each opened on demand, deep-linkable as #method-path), their
// parameters, schemas and examples, and a "Try it" form per operation.

import { h, add, firstLine } from './docs/dom.js';
import { markdown, inlineMarkdown } from './docs/markdown.js';
import { setDoc, deref } from './docs/schema.js';
import { operationBody } from './docs/operation.js';
import { getToken, setToken, authHeaders } from './docs/token.js';

const METHODS = ['get', 'post', 'put', 'patch', 'delete', 'head', 'options', 'trace'];
const $ = (id) => document.getElementById(id);

const content = $('content');
const filter = $('filter');
const count = $('filter-count');
const toc = $('toc-list');

let ops = [];
let groups = [];
let others = null;
let loaded = false;

// ---- the theme: the system's, unless the web UI's toggle chose one (gantry.theme) ----------

function theme() {
  let t = null;
  try {
    t = localStorage.getItem('gantry.theme');
  } catch {
    // no storage: the system's scheme
  }
  if (t !== 'light' && t !== 'dark') return;
  document.documentElement.dataset.theme = t;
  $('hljs-light').media = t === 'light' ? 'all' : 'not all';
  $('hljs-dark').media = t === 'dark' ? 'all' : 'not all';
}

// ---- the token --------------------------------------------------------------------------

function tokenUi() {
  const input = $('token');
  const state = $('token-state');
  const forget = $('token-forget');
  const signIn = $('token-signin');
  input.value = getToken();
  const show = () => {
    const t = getToken();
    state.textContent = t
      ? 'Set: Try it sends it as Authorization: Bearer. It is kept for this tab only.'
      : 'None: Try it sends requests without a token.';
    forget.hidden = !t;
    signIn.hidden = !!t;
  };
  input.addEventListener('input', () => setToken(input.value));
  forget.addEventListener('click', () => {
    input.value = '';
    setToken('');
    input.focus();
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setToken(input.value);
    if (!loaded) load();
  });
  addEventListener('gantry-token', show);
  show();
}

// ---- loading ------------------------------------------------------------------------------

async function load() {
  content.setAttribute('aria-busy', 'true');
  content.replaceChildren(h('p', { class: 'muted' }, 'Loading the API description…'));
  let doc;
  try {
    // The document is public: asked without credentials first, since a user's token on a
    // route that takes only API keys counts as a failed key against this address.
    let res = await fetch('/openapi.json', { cache: 'no-cache' });
    const headers = authHeaders();
    if ((res.status === 401 || res.status === 403) && headers.Authorization) {
      res = await fetch('/openapi.json', { headers, cache: 'no-cache' });
    }
    if (!res.ok) {
      const auth = res.status === 401 || res.status === 403;
      throw new Error(
        `/openapi.json answered ${res.status} ${res.statusText}.${auth ? ' This server wants a token: paste one at the top of the page (or sign in), then retry.' : ''}`,
      );
    }
    doc = await res.json();
  } catch (err) {
    content.removeAttribute('aria-busy');
    content.replaceChildren(
      h('div', { class: 'warn', role: 'alert' }, h('p', null, `Could not read the API description. ${err.message}`),
        h('button', { type: 'button', onclick: load }, 'Retry')),
    );
    return;
  }
  loaded = true;
  render(doc);
  content.removeAttribute('aria-busy');
  openFromHash();
}

// ---- drawing --------------------------------------------------------------------------------

const slug = (s) => String(s).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'x';

function pathNodes(path) {
  return path.split(/(\{[^}]+\})/).filter(Boolean).map((part) => (part.startsWith('{') ? h('span', { class: 'pp' }, part) : part));
}

function opHeader(o, index) {
  const bodyId = `op-body-${index}`;
  const M = o.method.toUpperCase();
  o.body = h('div', { class: 'op-body', id: bodyId, hidden: true });
  o.btn = h(
    'button',
    { type: 'button', class: 'op-toggle', 'aria-expanded': 'false', 'aria-controls': bodyId, 'data-testid': 'docs-operation-toggle', onclick: () => setOpen(o, !o.open, true) },
    h('span', { class: `method m-${o.method}` }, M),
    h('code', { class: 'op-path' }, pathNodes(o.path)),
    add(h('span', { class: 'op-sum' }), inlineMarkdown(o.op.summary || firstLine(o.op.description), false)),
    o.op.deprecated && h('span', { class: 's-dep' }, 'deprecated'),
  );
  o.el = h(
    'div',
    { class: `op op-${o.method}${o.op.deprecated ? ' deprecated' : ''}`, id: o.id, 'data-testid': 'docs-operation', 'data-method': o.method, 'data-path': o.path },
    h('h3', { class: 'op-head' }, o.btn),
    o.body,
  );
  return o.el;
}

function setOpen(o, open, byUser = false) {
  o.open = open;
  o.btn.setAttribute('aria-expanded', String(open));
  if (open && !o.built) {
    o.built = true;
    add(o.body, operationBody(o, o.doc));
  }
  o.body.hidden = !open;
  o.el.classList.toggle('open', open);
  if (open && byUser) history.replaceState(null, '', `#${o.id}`);
}

function render(doc) {
  setDoc(doc);
  const info = doc.info || {};
  const title = `${info.title || 'API'}${/\bapi\b/i.test(info.title || '') ? '' : ' API'} reference`;
  document.title = title;
  $('title').replaceChildren(title, info.version ? h('span', { class: 'version' }, info.version) : null);

  // Operations, by tag (the document's order first), or by path prefix when untagged.
  ops = [];
  const pathsWithout = [];
  for (const [path, item0] of Object.entries(doc.paths || {})) {
    const item = deref(item0);
    const methods = METHODS.filter((m) => item[m] && typeof item[m] === 'object');
    if (!methods.length) pathsWithout.push([path, item]);
    for (const method of methods) {
      const op = item[method] || {};
      const tag = op.tags?.[0] || `/${path.split('/')[1] || ''}`;
      const search = [method, path, op.summary, op.description, op.operationId, ...(op.tags || [])].join(' ').toLowerCase();
      ops.push({ method, path, item, op, tag, id: `${method}-${path}`, search, doc });
    }
  }
  const tagInfo = new Map((doc.tags || []).map((t) => [t.name, t]));
  const order = [...tagInfo.keys()];
  for (const o of ops) if (!order.includes(o.tag)) order.push(o.tag);
  groups = order
    .map((name) => ({ name, tag: tagInfo.get(name) || {}, ops: ops.filter((o) => o.tag === name) }))
    .filter((g) => g.ops.length);

  const intro = h(
    'section',
    { id: 'intro', class: 'intro', 'aria-label': 'Introduction' },
    info.description && markdown(info.description, 1),
    h(
      'p',
      { class: 'muted' },
      'The machine-readable document is ',
      h('a', { href: '/openapi.json' }, '/openapi.json'),
      ` (OpenAPI ${doc.openapi || '?'}).`,
      info.license?.name ? ` License: ${info.license.name}.` : '',
    ),
  );

  const schemes = Object.entries(doc.components?.securitySchemes || {});
  const auth = schemes.length
    ? h(
        'section',
        { id: 'authentication', class: 'group', 'aria-labelledby': 'authentication-h' },
        h('h2', { id: 'authentication-h' }, 'Authentication'),
        h('dl', { class: 'schemes' },
          schemes.flatMap(([name, s0]) => {
            const s = deref(s0);
            const what = s.type === 'http' ? `HTTP ${s.scheme || ''}${s.bearerFormat ? ` (${s.bearerFormat})` : ''}` : s.type === 'apiKey' ? `API key in the ${s.in === 'header' ? 'header' : `${s.in} parameter`} ${s.name}` : s.type;
            return [h('dt', null, h('code', null, name), ' ', h('span', { class: 'muted' }, what)), h('dd', null, s.description ? markdown(s.description, 2) : null)];
          })),
        h('p', { class: 'muted' }, 'Try it sends the token set at the top of this page as ', h('code', null, 'Authorization: Bearer'), '.'),
      )
    : null;

  const sections = groups.map((g) => {
    g.id = `tag-${slug(g.name)}`;
    g.el = h(
      'section',
      { class: 'group', id: g.id, 'aria-labelledby': `${g.id}-h` },
      h('h2', { id: `${g.id}-h` }, g.name, h('span', { class: 'count' }, `${g.ops.length}`)),
      g.tag.description && markdown(g.tag.description, 2),
      g.tag.externalDocs?.url && h('p', null, h('a', { href: g.tag.externalDocs.url }, g.tag.externalDocs.description || 'More')),
      g.ops.map((o) => opHeader(o, ops.indexOf(o))),
    );
    return g.el;
  });

  others = pathsWithout.length
    ? h(
        'section',
        { class: 'group', id: 'other-paths', 'aria-labelledby': 'other-paths-h' },
        h('h2', { id: 'other-paths-h' }, 'Other paths'),
        h('p', { class: 'muted' }, 'Served, but with no operations described.'),
        h('dl', { class: 'schemes' },
          pathsWithout.flatMap(([p, item]) => [h('dt', null, h('code', null, p)), h('dd', null, item.description || item.summary ? markdown(item.description || item.summary, 2) : null)])),
      )
    : null;

  content.replaceChildren(intro, auth, ...sections, others);

  toc.replaceChildren(
    h('li', null, h('a', { href: '#intro' }, 'Introduction')),
    auth && h('li', null, h('a', { href: '#authentication' }, 'Authentication')),
    ...groups.map((g) => (g.nav = h('li', null, h('a', { href: `#${g.id}` }, g.name, ' ', h('span', { class: 'count' }, `${g.ops.length}`))))),
    others && h('li', null, h('a', { href: '#other-paths' }, 'Other paths')),
  );
  $('tools').hidden = false;
  toc.parentElement.hidden = false;
  applyFilter();
}

// ---- filter, expand, deep links ---------------------------------------------------------------

function applyFilter() {
  const terms = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const o of ops) {
    const ok = terms.every((t) => o.search.includes(t));
    o.el.hidden = !ok;
    if (ok) shown++;
  }
  for (const g of groups) {
    const n = g.ops.filter((o) => !o.el.hidden).length;
    g.el.hidden = n === 0;
    if (g.nav) {
      g.nav.hidden = n === 0;
      g.nav.querySelector('.count').textContent = terms.length ? `${n}/${g.ops.length}` : `${g.ops.length}`;
    }
  }
  if (others) others.hidden = terms.length > 0;
  count.textContent = terms.length ? `${shown} of ${ops.length} operations match.` : `${ops.length} operations.`;
}

function openFromHash() {
  const raw = location.hash.slice(1);
  if (!raw) return;
  let id = raw;
  try {
    id = decodeURIComponent(raw);
  } catch {
    // kept as it came
  }
  const o =
    ops.find((x) => x.id === id) ||
    ops.find((x) => x.op.operationId === id) ||
    ops.find((x) => x.id === id.replace(/\/$/, '') || x.id === `${id}/`) ||
    ops.find((x) => x.id.toLowerCase() === id.toLowerCase());
  if (o) {
    if (o.el.hidden) {
      filter.value = '';
      applyFilter();
    }
    setOpen(o, true);
    o.el.scrollIntoView({ block: 'start' });
    o.btn.focus({ preventScroll: true });
    return;
  }
  const el = document.getElementById(id);
  if (el) {
    el.scrollIntoView({ block: 'start' });
    if (el.matches('input, textarea, select, button')) el.focus();
  }
}

filter.addEventListener('input', applyFilter);
filter.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && filter.value) {
    filter.value = '';
    applyFilter();
  }
});
addEventListener('keydown', (e) => {
  if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target.closest?.('input, textarea, select, [contenteditable]')) return;
  e.preventDefault();
  filter.focus();
});
$('expand-all').addEventListener('click', () => ops.forEach((o) => !o.el.hidden && setOpen(o, true)));
$('collapse-all').addEventListener('click', () => ops.forEach((o) => setOpen(o, false)));
addEventListener('hashchange', openFromHash);

theme();
tokenUi();
load();
