// Workspaces (/ui/workspaces, /ui/workspaces/{id}[/{path}]): the tenant's workspaces, a
// workspace's files as directories, one text file highlighted by its extension, and a
// download of any file.
//
// API: GET /v1/workspaces, GET /v1/workspaces/{id}, GET /v1/workspaces/{id}/files (every
// file, with size and time), GET /v1/workspaces/{id}/files/{path} (the bytes; a Range keeps
// a large file's preview small); GET /api/projects/ names the project each workspace is for.

import { get, request } from '/ui/assets/js/api.js';
import { h, errorBox, fmtBytes, fmtDate, isAbort, announce, tableWrap } from '/ui/assets/js/dom.js';
import { grammarForPath, highlightElement } from '/ui/assets/js/highlight.js';

const PREVIEW_BYTES = 1024 * 1024; // the most of a file shown in the page
const HIGHLIGHT_BYTES = 256 * 1024; // larger text is shown plain (highlighting would stall)

const enc = (path) => path.split('/').map(encodeURIComponent).join('/');
const viewUrl = (id, path = '') => `/ui/workspaces/${encodeURIComponent(id)}${path ? `/${enc(path)}` : ''}`;
const fileUrl = (id, path) => `/v1/workspaces/${encodeURIComponent(id)}/files/${enc(path)}`;

/** The entries of one directory (prefix '' or 'a/b/') from the flat file list. */
function listDir(files, prefix) {
  const dirs = new Map();
  const plain = [];
  for (const f of files) {
    if (!f.path.startsWith(prefix)) continue;
    const rest = f.path.slice(prefix.length);
    const slash = rest.indexOf('/');
    if (slash < 0) { plain.push({ ...f, name: rest }); continue; }
    const name = rest.slice(0, slash);
    const d = dirs.get(name) || { name, path: prefix + name, size: 0, count: 0, modified: 0 };
    d.size += f.size || 0;
    d.count += 1;
    d.modified = Math.max(d.modified, f.modified || 0);
    dirs.set(name, d);
  }
  const byName = (a, b) => a.name.localeCompare(b.name);
  return { dirs: [...dirs.values()].sort(byName), files: plain.sort(byName) };
}

async function projectsByWorkspace(signal) {
  const map = new Map();
  try {
    const data = await get('/api/projects/?page_size=100', { signal });
    for (const p of data.items || []) if (p.workspace_id) map.set(p.workspace_id, p);
  } catch (err) {
    if (isAbort(err)) throw err;
  }
  return map;
}

async function download(id, path, button) {
  button.disabled = true;
  try {
    const res = await request(fileUrl(id, path), { raw: true });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: path.split('/').pop(), hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    announce(`Downloading ${path}`);
    return null;
  } catch (err) {
    return err;
  } finally {
    button.disabled = false;
  }
}

function downloadButton(id, path, where) {
  const b = h('button', { type: 'button', class: 'btn btn-small', testid: 'file-download', 'aria-label': `Download ${path}` }, 'Download');
  b.addEventListener('click', async () => {
    const err = await download(id, path, b);
    if (err) where.replaceChildren(errorBox(err, `${path} could not be downloaded.`));
  });
  return b;
}

async function listWorkspaces({ main, signal, setTitle }) {
  setTitle('Workspaces');
  const messages = h('div', { class: 'messages' });
  const list = h('ul', { class: 'plain-list', testid: 'workspace-list', 'aria-label': 'Workspaces' });
  main.append(h('h1', null, 'Workspaces'),
    h('p', { class: 'muted' }, 'Each project works in a workspace of its own; runs write their files there.'),
    messages, list);
  const [projects, data] = await Promise.all([
    projectsByWorkspace(signal),
    get('/v1/workspaces', { signal }).catch((err) => { if (isAbort(err)) throw err; return { error: err }; }),
  ]);
  if (data.error) {
    messages.append(errorBox(data.error, 'The workspaces could not be listed.'));
    // The projects still name their workspaces.
    for (const [wid, p] of projects) {
      list.append(h('li', null, h('a', { href: viewUrl(wid), testid: 'workspace-link' }, p.name), h('span', { class: 'muted' }, ` · project workspace ${wid}`)));
    }
    return;
  }
  const items = (data.workspaces || []).sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  if (!items.length) list.append(h('li', { class: 'empty' }, 'No workspaces yet. A new project makes one.'));
  for (const w of items) {
    const p = projects.get(w.id);
    list.append(h('li', null,
      h('a', { href: viewUrl(w.id), testid: 'workspace-link' }, w.name || w.id),
      h('span', { class: 'muted' }, p ? ` · project ${p.name}` : '', ` · made ${fmtDate(w.created_at)}`)));
  }
}

export default async function workspace(ctx) {
  const { main, params, signal, setTitle } = ctx;
  if (!params.id) return listWorkspaces(ctx);
  const id = params.id;
  const path = (params.path || '').replace(/\/+$/, '');
  const messages = h('div', { class: 'messages' });
  const crumbs = h('nav', { class: 'breadcrumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/ui/workspaces' }, 'Workspaces'));
  const heading = h('h1', null, path ? path.split('/').pop() : 'Workspace');
  const body = h('div');
  main.append(crumbs, heading, messages, body);

  let files;
  let info = { id, name: id };
  try {
    const [w, list] = await Promise.all([
      get(`/v1/workspaces/${encodeURIComponent(id)}`, { signal }).catch((err) => { if (isAbort(err)) throw err; return null; }),
      get(`/v1/workspaces/${encodeURIComponent(id)}/files`, { signal }),
    ]);
    if (w) info = w;
    files = list.files || [];
  } catch (err) {
    if (isAbort(err)) throw err;
    messages.append(errorBox(err, err.status === 404 ? 'No such workspace.' : 'The workspace could not be read.'));
    return;
  }

  // Breadcrumbs: the workspace, then each directory down to here.
  crumbs.append(' / ', h('a', { href: viewUrl(id) }, info.name || id));
  const segments = path ? path.split('/') : [];
  segments.forEach((seg, i) => {
    const sub = segments.slice(0, i + 1).join('/');
    crumbs.append(' / ', i === segments.length - 1 ? h('span', { 'aria-current': 'page' }, seg) : h('a', { href: viewUrl(id, sub) }, seg));
  });
  if (!path) heading.textContent = info.name || 'Workspace';
  setTitle(path ? `${path} · ${info.name || 'workspace'}` : (info.name || 'Workspace'));

  const file = files.find((f) => f.path === path);
  if (path && file) return showFile({ id, file, body, messages, signal });

  const prefix = path ? `${path}/` : '';
  const { dirs, files: plain } = listDir(files, prefix);
  if (path && !dirs.length && !plain.length) {
    messages.append(errorBox({ message: `There is no file or directory ${path} in this workspace.`, code: 'not_found' }));
    return undefined;
  }
  const rows = [];
  if (path) {
    const up = segments.slice(0, -1).join('/');
    rows.push(h('tr', null, h('td', null, h('a', { href: viewUrl(id, up), testid: 'ws-up' }, '.. (up)')), h('td'), h('td')));
  }
  for (const d of dirs) {
    rows.push(h('tr', { class: 'dir' },
      h('td', null, h('a', { href: viewUrl(id, d.path), testid: 'ws-file', dataset: { path: d.path, type: 'dir' } }, `${d.name}/`)),
      h('td', { class: 'num' }, `${d.count} file${d.count === 1 ? '' : 's'}, ${fmtBytes(d.size)}`),
      h('td', null, fmtDate(d.modified))));
  }
  for (const f of plain) {
    rows.push(h('tr', null,
      h('td', null, h('a', { href: viewUrl(id, f.path), testid: 'ws-file', dataset: { path: f.path, type: 'file' } }, f.name)),
      h('td', { class: 'num' }, fmtBytes(f.size)),
      h('td', null, fmtDate(f.modified))));
  }
  body.append(
    h('p', { class: 'meta' }, `${files.length} file${files.length === 1 ? '' : 's'} in this workspace`),
    files.length
      ? tableWrap(`Contents of ${path || 'the workspace'}`, h('table', { class: 'listing', testid: 'ws-listing' },
        h('caption', { class: 'visually-hidden' }, `Contents of ${path || 'the workspace'}`),
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col', class: 'num' }, 'Size'), h('th', { scope: 'col' }, 'Modified'))),
        h('tbody', null, rows)))
      : h('p', { class: 'empty', testid: 'ws-empty' }, 'This workspace has no files yet. A run writes its files here.'));
  return undefined;
}

async function showFile({ id, file, body, messages, signal }) {
  body.append(h('p', { class: 'meta' }, `${fmtBytes(file.size)} · modified ${fmtDate(file.modified)} `, downloadButton(id, file.path, messages)));
  const loading = h('p', { class: 'loading' }, 'Reading the file…');
  body.append(loading);
  let res;
  let bytes;
  try {
    res = await request(fileUrl(id, file.path), { raw: true, signal, headers: file.size > PREVIEW_BYTES ? { Range: `bytes=0-${PREVIEW_BYTES - 1}` } : {} });
    bytes = new Uint8Array(await res.arrayBuffer());
  } catch (err) {
    if (isAbort(err)) throw err;
    loading.remove();
    messages.append(errorBox(err, 'The file could not be read.'));
    return undefined;
  }
  loading.remove();
  const partial = res.status === 206 || bytes.length < file.size;
  let text = null;
  // A NUL byte or bytes that are not UTF-8 mean a binary file (a cut in the middle of a
  // character at the end of a partial preview is forgiven).
  if (!bytes.subarray(0, 8000).includes(0)) {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(partial ? bytes.subarray(0, Math.max(0, bytes.length - 4)) : bytes);
    } catch { text = null; }
  }
  if (text == null) {
    body.append(h('p', { class: 'alert alert-info', testid: 'file-binary' }, `This is a binary file (${fmtBytes(file.size)}); download it to open it.`));
    return undefined;
  }
  if (partial) body.append(h('p', { class: 'alert alert-info' }, `Showing the first ${fmtBytes(bytes.length)} of ${fmtBytes(file.size)}; download the file for all of it.`));
  // The view appears with its text in it (highlighting follows when its grammar has loaded).
  const code = h('code', null, text);
  body.append(h('pre', { class: 'code-block file-view', testid: 'file-view', tabindex: '0', 'aria-label': `Contents of ${file.path}` }, code));
  const grammar = grammarForPath(file.path);
  if (grammar && text.length <= HIGHLIGHT_BYTES) highlightElement(code, grammar);
  return undefined;
}
