// The one way the app calls gantry: the bearer token from sessionStorage on every request,
// the Web UI API's envelope unwrapped, and every surface's error shape turned into an ApiError
// with a status, a code and the server's own message.

const TOKEN_KEY = 'gantry.token'; // shared with /docs, which reads the same key
const KIND_KEY = 'gantry.token.kind'; // 'jwt' (signed in with a password) or 'key' (an API key)
const EXPIRES_KEY = 'gantry.token.expires'; // ms since the epoch, for JWTs
const USER_KEY = 'gantry.user'; // {username, …} for the header
const REFUSED_KEY = 'gantry.refused'; // surfaces that refused a valid JWT (see request401)

export const auth = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get kind() {
    const kind = sessionStorage.getItem(KIND_KEY);
    if (kind) return kind;
    const t = this.token;
    return t && /^[\w-]+\.[\w-]+\.[\w-]+$/.test(t) ? 'jwt' : 'key';
  },
  get expiresAt() { return Number(sessionStorage.getItem(EXPIRES_KEY)) || null; },
  get user() {
    try { return JSON.parse(sessionStorage.getItem(USER_KEY) || 'null'); } catch { return null; }
  },
  set(token, kind, { expiresIn, user } = {}) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(KIND_KEY, kind);
    if (expiresIn) sessionStorage.setItem(EXPIRES_KEY, String(Date.now() + expiresIn * 1000));
    else sessionStorage.removeItem(EXPIRES_KEY);
    if (user) sessionStorage.setItem(USER_KEY, JSON.stringify(user));
    sessionStorage.removeItem(REFUSED_KEY);
    window.dispatchEvent(new CustomEvent('gantry:auth'));
  },
  setUser(user) {
    sessionStorage.setItem(USER_KEY, JSON.stringify(user));
    window.dispatchEvent(new CustomEvent('gantry:auth'));
  },
  clear() {
    for (const key of [TOKEN_KEY, KIND_KEY, EXPIRES_KEY, USER_KEY, REFUSED_KEY]) sessionStorage.removeItem(key);
    // Per-project working sessions belong to the user who signed in.
    for (const key of Object.keys(sessionStorage)) {
      if (key.startsWith('gantry.session.')) sessionStorage.removeItem(key);
    }
    window.dispatchEvent(new CustomEvent('gantry:auth'));
  },
};

export class ApiError extends Error {
  constructor({ status = 0, code = 'error', message = 'Something went wrong.', details = null, path = '' }) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.path = path;
  }
}

/** Which API surface a path belongs to: they differ in auth and error shapes. */
export function surfaceOf(path) {
  if (path.startsWith('/api/v1/') || path === '/api/v1') return '/api/v1';
  if (path.startsWith('/v1/')) return '/v1';
  if (path.startsWith('/api/')) return '/api';
  if (path.startsWith('/health')) return '/health';
  if (path.startsWith('/metrics')) return '/metrics';
  return path;
}

function refusedSurfaces() {
  try { return JSON.parse(sessionStorage.getItem(REFUSED_KEY) || '[]'); } catch { return []; }
}

function markRefused(surface) {
  const list = refusedSurfaces();
  if (!list.includes(surface)) list.push(surface);
  sessionStorage.setItem(REFUSED_KEY, JSON.stringify(list));
}

function notAcceptedError(surface, path) {
  return new ApiError({
    status: 401,
    code: 'token_not_accepted',
    path,
    message: `This part of gantry (${surface}) did not accept your sign-in token; it takes API keys. `
      + 'Sign out and sign in with an API key to use it.',
  });
}

// Surfaces whose plugin takes API keys only (the system plugin: /health, /metrics). A user's
// JWT is never sent there: each refusal would count as a wrong API key against the caller's
// address, and ten of those lock every key out of the node for a while.
const KEYS_ONLY = ['/health', '/metrics'];

/** Whether a signed-in (JWT) user's token is known to be refused on this path's surface. */
export function isRefused(path) {
  if (auth.kind !== 'jwt') return false;
  const surface = surfaceOf(path);
  return KEYS_ONLY.includes(surface) || refusedSurfaces().includes(surface);
}

/** Turn any of gantry's error bodies into an ApiError. */
async function toError(res, path) {
  let body = null;
  let text = '';
  try {
    text = await res.text();
    body = text ? JSON.parse(text) : null;
  } catch { /* not JSON */ }
  let code = `http_${res.status}`;
  let message = '';
  let details = null;
  if (body && typeof body === 'object') {
    const e = body.error;
    if (e && typeof e === 'object') { // {"error": {code, message, details}} (Web UI, core, CLK)
      code = e.code || code;
      message = e.message || '';
      details = e.details || null;
    } else if (typeof e === 'string') { // {"error": "code", "message": "…"} (clinvk, system)
      code = e;
      message = body.message || '';
    }
  } else if (text && text.length < 300) {
    message = text;
  }
  if (!message) message = `${res.status} ${res.statusText || 'error'}`;
  if (res.status === 429) {
    const after = res.headers.get('retry-after');
    if (after) message += ` Try again in ${after} s.`;
  }
  if (res.status === 503 && !body) message = 'gantry is busy or a backend is unavailable (503). Try again shortly.';
  return new ApiError({ status: res.status, code, message, details, path });
}

/**
 * The token was refused (401). On the Web UI API (/api/…, where users' tokens are accepted)
 * that means the session is over. Elsewhere (/v1, /api/v1, /health, /metrics) a signed-in
 * user's JWT may simply not be taken: ask /api/users/profile whether the token is still good
 * before signing the user out, and remember the surface so the app does not keep sending a
 * token it refuses (wrong keys count towards the node's per-address throttle).
 */
async function on401(path, err) {
  const surface = surfaceOf(path);
  if (surface !== '/api' && auth.kind === 'jwt') {
    try {
      await request('/api/users/profile', { expire: false });
      markRefused(surface);
      return notAcceptedError(surface, path);
    } catch (probe) {
      if (!(probe instanceof ApiError) || probe.status !== 401) return err;
    }
  }
  window.dispatchEvent(new CustomEvent('gantry:expired', { detail: { code: err.code, message: err.message } }));
  return new ApiError({ status: 401, code: 'session_expired', path, message: 'Your session expired; sign in again.' });
}

/**
 * request(path, {method, body, headers, signal, raw, anonymous, expire})
 *  - body: a plain object is sent as JSON;
 *  - raw: return the Response itself (streams, files) once its status is OK;
 *  - anonymous: send no credentials;
 *  - expire: false to get a 401 as an error instead of ending the session (sign-in checks).
 * Returns the envelope's `data` for the Web UI API, the JSON otherwise, text for text.
 */
export async function request(path, opts = {}) {
  const { method = 'GET', body, headers = {}, signal, raw = false, anonymous = false, expire = true } = opts;
  const token = anonymous ? null : auth.token;
  if (token && isRefused(path)) throw notAcceptedError(surfaceOf(path), path);
  const h = new Headers(headers);
  if (token) h.set('Authorization', `Bearer ${token}`);
  let payload = body;
  if (body !== undefined && body !== null && typeof body === 'object' && !(body instanceof Blob)) {
    h.set('Content-Type', 'application/json');
    payload = JSON.stringify(body);
  }
  if (!h.has('Accept')) h.set('Accept', 'application/json, application/x-ndjson;q=0.9, */*;q=0.5');
  let res;
  try {
    res = await fetch(path, { method, headers: h, body: payload, signal, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError({ status: 0, code: 'network', path, message: 'gantry could not be reached (network error). Check your connection; the view retries where it can.' });
  }
  if (!res.ok) {
    const err = await toError(res, path);
    if (res.status === 401 && token && expire) throw await on401(path, err);
    throw err;
  }
  if (raw) return res;
  if (res.status === 204 || method === 'HEAD') return null;
  const type = res.headers.get('content-type') || '';
  if (!type.includes('json')) return res.text();
  const json = await res.json();
  // The Web UI API's envelope: {"data", "error", "meta"}.
  if (json && typeof json === 'object' && 'data' in json && 'error' in json && 'meta' in json) {
    if (json.error) throw new ApiError({ status: res.status, path, ...json.error });
    return json.data;
  }
  return json;
}

export const get = (path, opts) => request(path, { ...opts, method: 'GET' });
export const post = (path, body, opts) => request(path, { ...opts, method: 'POST', body: body ?? {} });
export const put = (path, body, opts) => request(path, { ...opts, method: 'PUT', body });
export const del = (path, opts) => request(path, { ...opts, method: 'DELETE' });

function parseLine(line) {
  try {
    return JSON.parse(line);
  } catch {
    console.warn('skipped a line that is not JSON:', line.slice(0, 200));
    return undefined;
  }
}

/** Read an NDJSON response line by line (a stream of events), yielding parsed objects. */
export async function* ndjson(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) { finished = true; break; }
      buffer += value;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        const value = line ? parseLine(line) : undefined;
        if (value !== undefined) yield value;
      }
    }
  } finally {
    // Left early (the consumer stopped) or failed: let go of the connection.
    if (!finished) reader.cancel().catch(() => {});
    else reader.releaseLock();
  }
  // The body ended cleanly (a cut-off body rejects the read instead): a last line without a
  // newline is complete.
  const last = buffer.trim() ? parseLine(buffer.trim()) : undefined;
  if (last !== undefined) yield last;
}

/** Read all pages of a Web UI API list (page_size at most 100), up to `max` items. */
export async function allPages(path, { signal, max = 1000 } = {}) {
  const items = [];
  let page = 1;
  let total = 0;
  for (;;) {
    const sep = path.includes('?') ? '&' : '?';
    const data = await get(`${path}${sep}page=${page}&page_size=100`, { signal });
    items.push(...(data.items || []));
    total = data.total ?? items.length;
    if (!data.has_next || items.length >= max) break;
    page += 1;
  }
  return { items, total, truncated: items.length < total };
}
