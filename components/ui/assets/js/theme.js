// Light and dark: the system's preference by default (CSS prefers-color-scheme), or the
// user's choice from the header's toggle, remembered in localStorage (it is not a secret).

const KEY = 'gantry.theme';
const CHOICES = ['auto', 'light', 'dark'];

export function theme() {
  const t = localStorage.getItem(KEY);
  return CHOICES.includes(t) ? t : 'auto';
}

/** The theme in effect: the choice, or the system's. */
export function effectiveTheme() {
  const t = theme();
  if (t !== 'auto') return t;
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function apply() {
  const t = theme();
  if (t === 'auto') document.documentElement.removeAttribute('data-theme');
  else document.documentElement.dataset.theme = t;
  // The code-highlighting style sheets (loaded with the first highlighted block) follow too.
  const light = document.getElementById('hljs-light');
  const dark = document.getElementById('hljs-dark');
  if (light && dark) {
    light.media = t === 'auto' ? '(prefers-color-scheme: light)' : t === 'light' ? 'all' : 'not all';
    dark.media = t === 'auto' ? '(prefers-color-scheme: dark)' : t === 'dark' ? 'all' : 'not all';
  }
  const button = document.getElementById('theme-toggle');
  if (button) {
    button.textContent = `Theme: ${t}`;
    const next = CHOICES[(CHOICES.indexOf(t) + 1) % CHOICES.length];
    button.setAttribute('aria-label', `Theme: ${t}. Switch to ${next}`);
  }
  window.dispatchEvent(new CustomEvent('gantry:theme'));
}

export function initTheme() {
  apply();
  document.getElementById('theme-toggle')?.addEventListener('click', () => {
    const next = CHOICES[(CHOICES.indexOf(theme()) + 1) % CHOICES.length];
    localStorage.setItem(KEY, next);
    apply();
  });
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
    window.dispatchEvent(new CustomEvent('gantry:theme'));
  });
}

/** Add highlight.js's two style sheets once, each for its scheme. */
export function ensureHighlightStyles() {
  if (document.getElementById('hljs-light')) return;
  for (const [id, file] of [['hljs-light', 'github.min.css'], ['hljs-dark', 'github-dark.min.css']]) {
    const link = document.createElement('link');
    link.rel = 'stylesheet';
    link.id = id;
    link.href = `/ui/assets/vendor/highlight/${file}`;
    document.head.append(link);
  }
  apply();
}
