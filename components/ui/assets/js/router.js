// The app's views by URL, drawn in the browser with the History API. Links are real
// <a href="/ui/…"> (open in a new tab works); a plain click on one is handled here instead.
// Each view is a module loaded the first time it is needed.

import { auth, ApiError } from '/ui/assets/js/api.js';
import { h, replace, errorBox, isAbort } from '/ui/assets/js/dom.js';

const V = '/ui/assets/js/views/';

// [pattern, module, needs a token]; ':name' is one segment, '*rest' the rest of the path.
const ROUTES = [
  ['/ui/sign-in', 'signin.js', false],
  ['/ui/projects', 'projects.js', true],
  ['/ui/projects/:id', 'board.js', true],
  ['/ui/tasks/:id', 'run.js', true],
  ['/ui/workspaces', 'workspace.js', true],
  ['/ui/workspaces/:id', 'workspace.js', true],
  ['/ui/workspaces/:id/*path', 'workspace.js', true],
  ['/ui/playground', 'playground.js', true],
  ['/ui/node', 'node.js', true],
];

function match(pathname) {
  const parts = pathname.replace(/\/+$/, '').split('/').filter(Boolean);
  for (const [pattern, module, secure] of ROUTES) {
    const want = pattern.split('/').filter(Boolean);
    const params = {};
    let ok = true;
    for (let i = 0; i < want.length; i += 1) {
      const w = want[i];
      if (w.startsWith('*')) {
        if (i >= parts.length) { ok = false; break; }
        params[w.slice(1)] = parts.slice(i).map(decodeURIComponent).join('/');
        return { module, secure, params };
      }
      if (i >= parts.length) { ok = false; break; }
      if (w.startsWith(':')) params[w.slice(1)] = decodeURIComponent(parts[i]);
      else if (w !== parts[i]) { ok = false; break; }
    }
    if (ok && parts.length === want.length) return { module, secure, params };
  }
  return null;
}

let current = null; // {controller, cleanup}
let renderSeq = 0;

/** Go to a URL of the app (pushState), or replace the current entry. */
export function navigate(url, { replace: replaceEntry = false } = {}) {
  const target = new URL(url, location.origin);
  if (replaceEntry) history.replaceState(null, '', target.pathname + target.search + target.hash);
  else history.pushState(null, '', target.pathname + target.search + target.hash);
  render();
}

function markNav(pathname) {
  for (const a of document.querySelectorAll('.site-nav a[data-nav]')) {
    const here = pathname.startsWith(`/ui/${a.dataset.nav}`)
      || (a.dataset.nav === 'projects' && pathname.startsWith('/ui/tasks/'));
    if (here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** Draw the view for the current URL. */
export async function render() {
  const seq = ++renderSeq;
  const main = document.getElementById('view');
  if (current) {
    current.controller.abort();
    try { current.cleanup?.(); } catch { /* a view's cleanup must not stop the next one */ }
    current = null;
  }
  let { pathname } = location;
  if (pathname === '/' || pathname === '/ui' || pathname === '/ui/') {
    pathname = auth.token ? '/ui/projects' : '/ui/sign-in';
    history.replaceState(null, '', pathname);
  }
  markNav(pathname);
  const route = match(pathname);
  const controller = new AbortController();
  current = { controller, cleanup: null };
  if (!route) {
    document.title = 'Not found · gantry';
    replace(main, h('h1', { tabindex: '-1' }, 'Not found'),
      h('p', null, 'There is no view at ', h('code', null, pathname), '. ',
        h('a', { href: '/ui/projects' }, 'Go to the projects'), '.'));
    focusView(main);
    return;
  }
  if (route.secure && !auth.token) {
    const next = pathname + location.search;
    history.replaceState(null, '', `/ui/sign-in?next=${encodeURIComponent(next)}`);
    return render();
  }
  main.setAttribute('aria-busy', 'true');
  try {
    const view = await import(V + route.module);
    if (seq !== renderSeq) return;
    replace(main);
    const cleanup = await view.default({
      main,
      params: route.params,
      query: new URLSearchParams(location.search),
      signal: controller.signal,
      setTitle: (t) => { document.title = `${t} · gantry`; },
    });
    if (seq !== renderSeq) { cleanup?.(); return; }
    current.cleanup = cleanup || null;
  } catch (err) {
    if (isAbort(err) || seq !== renderSeq) return;
    if (err instanceof ApiError && err.code === 'session_expired') return; // app.js moves to sign-in
    console.error(err);
    replace(main, h('h1', { tabindex: '-1' }, 'This view could not be shown'), errorBox(err));
  } finally {
    if (seq === renderSeq) main.removeAttribute('aria-busy');
  }
  if (seq === renderSeq) focusView(main);
}

// Move focus to the new view's heading, so keyboard and screen-reader users start there; the
// very first render leaves focus where the browser put it.
let firstRender = true;
function focusView(main) {
  if (firstRender) { firstRender = false; return; }
  const heading = main.querySelector('h1');
  if (heading) {
    if (!heading.hasAttribute('tabindex')) heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: false });
  } else {
    main.focus();
  }
}

/** Handle clicks on same-origin /ui/ links, and the back and forward buttons. */
export function start() {
  document.addEventListener('click', (event) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const a = event.target.closest('a[href]');
    if (!a || a.target || a.hasAttribute('download')) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith('/ui')) return;
    if (url.pathname.startsWith('/ui/assets/')) return;
    event.preventDefault();
    if (url.pathname === location.pathname && url.search === location.search) {
      if (url.hash) location.hash = url.hash;
      return;
    }
    navigate(url.pathname + url.search + url.hash);
  });
  window.addEventListener('popstate', () => render());
  render();
}
