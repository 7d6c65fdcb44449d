// The token requests are sent with: the one the web UI keeps in sessionStorage after
// sign-in, or one pasted on this page (kept under the same key, for this tab only).

const KEY = 'gantry.token';
// What the web UI keeps about the token it stored; stale once another token replaces it.
const ABOUT = ['gantry.token.kind', 'gantry.token.expires', 'gantry.user', 'gantry.refused'];

export function getToken() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

/** Stores (or, when empty, forgets) the token and tells the page. */
export function setToken(value) {
  const t = String(value || '').trim().replace(/^bearer\s+/i, '');
  try {
    if (t !== getToken()) for (const k of ABOUT) sessionStorage.removeItem(k);
    if (t) sessionStorage.setItem(KEY, t);
    else sessionStorage.removeItem(KEY);
  } catch {
    // storage refused (private mode): requests go without a token
  }
  dispatchEvent(new CustomEvent('gantry-token'));
}

export function authHeaders() {
  const t = getToken();
  return t ? { Authorization: `Bearer ${t}` } : {};
}
