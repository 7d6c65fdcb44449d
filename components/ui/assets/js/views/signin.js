// Sign in (/ui/sign-in): a user's name and password (POST /api/auth/login → a JWT), or an
// API key, checked with GET /api/users/profile before it is kept. The token goes to
// sessionStorage (gantry.token), never into a URL or localStorage.

import { auth, post, get, ApiError } from '/ui/assets/js/api.js';
import { h, field, errorBox, announce } from '/ui/assets/js/dom.js';
import { navigate } from '/ui/assets/js/router.js';

const FLASH_KEY = 'gantry.flash';

// Why the user is here ("Your session expired", "You are signed out"). It stays until they
// sign in again: a reload, or a second redirect racing the first (another tab's request
// refused at the same moment), shows it again instead of a bare form.
function readFlash() {
  const raw = sessionStorage.getItem(FLASH_KEY);
  try { return raw ? JSON.parse(raw) : null; } catch { return null; }
}

/** Where to go after signing in: only a view of this app. */
function nextUrl(query) {
  const next = query.get('next') || '';
  return next.startsWith('/ui/') && !next.startsWith('/ui/sign-in') && !next.startsWith('//') ? next : '/ui/projects';
}

export default function signin({ main, query, setTitle }) {
  setTitle('Sign in');
  const flash = readFlash();
  const messages = h('div', { class: 'messages' });
  if (flash) {
    messages.append(flash.kind === 'error'
      ? h('div', { class: 'alert alert-error', role: 'alert', testid: 'error-message' }, flash.text)
      : h('div', { class: 'alert alert-info', role: 'status', testid: 'signin-flash' }, flash.text));
  }

  const showError = (err) => {
    messages.replaceChildren(errorBox(err));
  };
  const done = (how) => {
    sessionStorage.removeItem(FLASH_KEY);
    announce(`Signed in${how}`);
    navigate(nextUrl(query), { replace: true });
  };

  // One form: a user name and password (a JWT from POST /api/auth/login), or an API key.
  const username = h('input', { type: 'text', name: 'username', autocomplete: 'username', testid: 'signin-username', autocapitalize: 'none', spellcheck: 'false' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', testid: 'signin-password' });
  const apikey = h('input', { type: 'password', name: 'apikey', autocomplete: 'off', testid: 'signin-apikey', spellcheck: 'false' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'signin-submit' }, 'Sign in');
  const form = h('form', { class: 'card form', 'aria-labelledby': 'signin-title', testid: 'signin-form' },
    h('fieldset', null, h('legend', null, 'With your user name'),
      h('div', { class: 'form' }, field('User name', username), field('Password', password))),
    h('p', { class: 'or', 'aria-hidden': 'true' }, 'or'),
    h('fieldset', null, h('legend', null, 'With an API key'),
      field('API key', apikey, 'A tenant\'s key, as configured on the node. It is kept only in this browser tab.')),
    h('div', { class: 'actions' }, submit));

  async function withPassword() {
    const data = await post('/api/auth/login', { username: username.value.trim(), password: password.value }, { anonymous: true });
    auth.set(data.access_token, 'jwt', { expiresIn: data.expires_in, user: data.user });
    password.value = '';
    done(` as ${data.user?.username || username.value}`);
  }

  async function withKey(key) {
    try {
      // Check the key before keeping it: on /api an API key acts as its tenant's service user.
      const profile = await get('/api/users/profile', { headers: { Authorization: `Bearer ${key}` }, anonymous: true });
      auth.set(key, 'key', { user: { username: profile.username, id: profile.id, service: profile.service } });
      apikey.value = '';
      done(' with an API key');
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        throw new ApiError({ status: 401, code: err.code, message: `That API key was not accepted: ${err.message}` });
      }
      throw err;
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const key = apikey.value.trim();
    if (!key && (!username.value.trim() || !password.value)) {
      const missing = !username.value.trim() ? username : password;
      missing.setAttribute('aria-invalid', 'true');
      showError(new ApiError({ code: 'VALIDATION_ERROR', message: 'Enter your user name and password, or an API key.' }));
      missing.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    try {
      if (key) await withKey(key);
      else await withPassword();
    } catch (err) {
      showError(err instanceof ApiError ? err : new ApiError({ message: String(err) }));
      const again = key ? apikey : password;
      again.select();
      again.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  });

  const signedIn = auth.token
    ? h('p', { class: 'alert alert-info' }, 'You are signed in already. ', h('a', { href: nextUrl(query) }, 'Continue'), ', or sign in again below.')
    : null;

  main.append(h('div', { class: 'signin' },
    h('h1', { id: 'signin-title' }, 'Sign in to gantry'),
    signedIn,
    messages,
    form));
  if (!flash || flash.kind !== 'error') username.focus();
}
