// gantry's web UI: the header (who is signed in, theme, sign out), the token's lifetime, and
// the router that draws each view. Views are modules under js/views/, loaded when first used.

import { auth, get, post } from '/ui/assets/js/api.js';
import { start, navigate } from '/ui/assets/js/router.js';
import { initTheme } from '/ui/assets/js/theme.js';
import { announce } from '/ui/assets/js/dom.js';

const FLASH_KEY = 'gantry.flash'; // a message for the sign-in view after a redirect

function drawHeader() {
  const signedIn = Boolean(auth.token);
  document.getElementById('site-nav').hidden = !signedIn;
  document.getElementById('signout').hidden = !signedIn;
  const who = document.getElementById('who');
  const user = auth.user;
  who.hidden = !signedIn;
  who.textContent = signedIn
    ? (user?.username ? `${user.username}${auth.kind === 'key' ? ' (API key)' : ''}` : (auth.kind === 'key' ? 'API key' : ''))
    : '';
}

async function signOut() {
  // A JWT is revoked on the server; an API key is only forgotten by this tab.
  if (auth.kind === 'jwt') {
    try { await post('/api/auth/logout', {}, { expire: false }); } catch { /* forgotten anyway */ }
  }
  auth.clear();
  sessionStorage.setItem(FLASH_KEY, JSON.stringify({ kind: 'info', text: 'You are signed out.' }));
  navigate('/ui/sign-in');
  announce('Signed out');
}

// Any 401 from the server (api.js, ws.js) ends the session: back to sign-in, saying why, and
// back to this view after signing in again.
function expired() {
  if (!auth.token) return;
  auth.clear();
  sessionStorage.setItem(FLASH_KEY, JSON.stringify({ kind: 'error', text: 'Your session expired; sign in again.' }));
  const here = location.pathname + location.search;
  navigate(`/ui/sign-in${here.startsWith('/ui/sign-in') ? '' : `?next=${encodeURIComponent(here)}`}`, { replace: true });
  announce('Your session expired; sign in again.');
}

// A password sign-in's token lasts `expires_in` (an hour by default): refresh it two minutes
// before it ends, so an open tab keeps working. The refresh revokes the old token.
let refreshTimer;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!auth.token || auth.kind !== 'jwt' || !auth.expiresAt) return;
  const wait = Math.max(5_000, auth.expiresAt - Date.now() - 120_000);
  refreshTimer = setTimeout(async () => {
    try {
      const data = await post('/api/auth/refresh', {});
      auth.set(data.access_token, 'jwt', { expiresIn: data.expires_in, user: auth.user });
    } catch { /* a 401 has already sent the user to sign-in */ }
  }, Math.min(wait, 2 ** 31 - 1));
}

// Who is signed in (also checks that a token kept from before a reload still works).
async function loadUser() {
  if (!auth.token) return;
  try {
    const profile = await get('/api/users/profile');
    auth.setUser({ username: profile.username, id: profile.id, permissions: profile.permissions, service: profile.service });
  } catch { /* a 401 signs out; anything else leaves the header as it is */ }
}

initTheme();
drawHeader();
window.addEventListener('gantry:auth', () => { drawHeader(); scheduleRefresh(); });
window.addEventListener('gantry:expired', expired);
document.getElementById('signout').addEventListener('click', signOut);
scheduleRefresh();
start();
if (auth.token && !auth.user) loadUser();
