// The Web UI API's WebSocket (/ws/{session_id}): authenticate first (the token never goes in
// the URL), subscribe, and after any drop reconnect with backoff and `resume_from` = the last
// event_id seen, so the server replays what was missed (in order, nothing lost or doubled).

import { auth, post } from '/ui/assets/js/api.js';

const SESSION_PREFIX = 'gantry.session.'; // a project's working session: {id, expires_at}
const CURSOR_PREFIX = 'gantry.ws.'; // the last event_id seen, per working session

/**
 * The user's working session for a project (POST /api/sessions/), reused from sessionStorage
 * while it is active; `fresh` makes a new one (the old one expired or went away).
 */
export async function workingSession(projectId, { fresh = false, signal } = {}) {
  const key = SESSION_PREFIX + projectId;
  if (!fresh) {
    try {
      const kept = JSON.parse(sessionStorage.getItem(key) || 'null');
      // Keep a minute's margin before it expires.
      if (kept && Date.parse(kept.expires_at) - Date.now() > 60_000) return kept.id;
    } catch { /* made again below */ }
  }
  const data = await post('/api/sessions/', { project_id: projectId }, { signal });
  sessionStorage.setItem(key, JSON.stringify({ id: data.session_id, expires_at: data.expires_at }));
  return data.session_id;
}

/**
 * new LiveSocket({projectId, subscriptions, onMessage, onState})
 *  - subscriptions: [{channel, project_id?, task_id?}], sent after each authentication;
 *  - onMessage(msg): every server message (task_update, project_update, error, …);
 *  - onState(state, detail): 'connecting' | 'open' | 'reconnecting' | 'closed' | 'failed'.
 * Call close() to stop for good.
 */
export class LiveSocket {
  constructor({ projectId, subscriptions, onMessage, onState }) {
    this.projectId = projectId;
    this.subscriptions = subscriptions;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.attempt = 0;
    this.stopped = false;
    this.ws = null;
    this.sessionId = null;
    this.timer = null;
    this.pingTimer = null;
    this.lastPong = 0;
    // The first connection follows from now (the view loads its state after it is open);
    // every later one resumes from the last event seen.
    this.everOpen = false;
    this.resuming = false;
    this.connect();
  }

  get cursorKey() { return CURSOR_PREFIX + this.sessionId; }

  get lastEventId() { return Number(sessionStorage.getItem(this.cursorKey)) || 0; }

  async connect({ freshSession = false } = {}) {
    if (this.stopped) return;
    this.onState(this.attempt ? 'reconnecting' : 'connecting');
    try {
      const previous = this.sessionId;
      this.sessionId = await workingSession(this.projectId, { fresh: freshSession });
      // Event ids are the tenant's, not the session's: a new session resumes where the
      // old one stopped.
      if (previous && previous !== this.sessionId) {
        const last = Number(sessionStorage.getItem(CURSOR_PREFIX + previous)) || 0;
        if (last) sessionStorage.setItem(this.cursorKey, String(last));
      }
    } catch (err) {
      if (err.code === 'session_expired') { this.stop('closed'); return; }
      this.retry(err.message);
      return;
    }
    if (this.stopped) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws/${encodeURIComponent(this.sessionId)}`);
    } catch (err) {
      this.retry(err.message);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const hello = { type: 'authenticate', token: auth.token };
      const last = this.lastEventId;
      this.resuming = this.everOpen && last > 0;
      if (this.resuming) hello.resume_from = last;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.closed(event);
    ws.onerror = () => { /* onclose follows with the code */ };
  }

  receive(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (typeof msg.event_id === 'number' && msg.event_id > this.lastEventId) {
      sessionStorage.setItem(this.cursorKey, String(msg.event_id));
    }
    if (msg.type === 'authenticated') {
      this.attempt = 0;
      // Where the server follows from: a drop before any event resumes from here.
      const from = Number(msg.data?.event_id);
      if (!this.resuming && from >= 0) sessionStorage.setItem(this.cursorKey, String(from));
      for (const sub of this.subscriptions) this.send({ type: 'subscribe', ...sub });
      this.startPing();
      const first = !this.everOpen;
      this.everOpen = true;
      this.onState('open', { first, resumed: this.resuming });
    } else if (msg.type === 'pong') {
      this.lastPong = Date.now();
    } else if (msg.type === 'error' && msg.data?.code === 'AUTH_TOKEN_INVALID') {
      window.dispatchEvent(new CustomEvent('gantry:expired', { detail: msg.data }));
      this.stop('closed');
      return;
    } else if (msg.type === 'error' && ['SESSION_EXPIRED', 'SESSION_NOT_FOUND'].includes(msg.data?.code)) {
      return; // the close (4404) that follows starts a new working session
    }
    this.onMessage(msg);
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  // An application-level ping every 25 s: a connection that stays silent past the next one
  // is dead (a laptop's sleep, a dropped NAT entry) and is replaced.
  startPing() {
    clearInterval(this.pingTimer);
    this.lastPong = Date.now();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastPong > 60_000) {
        this.ws?.close(4000, 'no pong');
        return;
      }
      this.send({ type: 'ping', timestamp: Date.now() });
    }, 25_000);
  }

  closed(event) {
    clearInterval(this.pingTimer);
    this.ws = null;
    if (this.stopped) return;
    switch (event.code) {
      case 4401: // not authenticated in time, or the token was refused
        if (!auth.token) { this.stop('closed'); return; }
        this.retry('the server did not accept the connection\'s authentication');
        return;
      case 4404: // the working session expired or is gone: make a new one
        this.retry('the working session ended; starting a new one', { freshSession: true });
        return;
      case 1008: // too many connections for this user, or for its tenant (the reason says)
        this.retry(event.reason || 'too many open connections', { slow: true });
        return;
      default: // 4408 (too slow), 1001 (went away), 1006 (dropped), …: resume
        this.retry(event.reason || `connection closed (${event.code})`);
    }
  }

  retry(reason, { freshSession = false, slow = false } = {}) {
    if (this.stopped) return;
    this.attempt += 1;
    // 1 s, 2 s, 4 s … up to 30 s (60 s when the server asked us to back off), with jitter.
    const cap = slow ? 60_000 : 30_000;
    const delay = Math.min(cap, 1000 * 2 ** Math.min(this.attempt - 1, 6)) * (0.75 + Math.random() * 0.5);
    this.onState('reconnecting', { reason, delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect({ freshSession }), delay);
  }

  stop(state = 'closed') {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pingTimer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000, 'bye');
      this.ws = null;
    }
    this.onState(state);
  }

  close() { this.stop('closed'); }
}
