// Syntax highlighting with the vendored highlight.js core; its core and each language's
// grammar are loaded the first time a code block needs them.

import { ensureHighlightStyles } from '/ui/assets/js/theme.js';

const BASE = '/ui/assets/vendor/highlight/';

// Language names and file extensions → the grammar file that knows them.
const GRAMMARS = {
  bash: ['bash', 'sh', 'zsh', 'ksh', 'bashrc', 'profile'],
  shell: ['shell', 'console', 'shellsession'],
  css: ['css'],
  diff: ['diff', 'patch'],
  dockerfile: ['dockerfile', 'docker'],
  go: ['go', 'golang'],
  ini: ['ini', 'toml', 'cfg', 'conf', 'properties', 'editorconfig'],
  javascript: ['javascript', 'js', 'mjs', 'cjs', 'jsx'],
  json: ['json', 'jsonl', 'ndjson', 'jsonc', 'json5', 'lock'],
  markdown: ['markdown', 'md', 'mdx'],
  python: ['python', 'py', 'pyi', 'gyp'],
  rust: ['rust', 'rs'],
  sql: ['sql'],
  typescript: ['typescript', 'ts', 'tsx', 'mts', 'cts'],
  xml: ['xml', 'html', 'htm', 'xhtml', 'svg', 'plist', 'xsd', 'xsl'],
  yaml: ['yaml', 'yml'],
};
const BY_ALIAS = new Map();
for (const [grammar, aliases] of Object.entries(GRAMMARS)) {
  for (const alias of aliases) BY_ALIAS.set(alias, grammar);
}
// Whole file names that say their language.
const BY_NAME = { dockerfile: 'dockerfile', makefile: 'bash', 'cargo.lock': 'ini', '.gitignore': 'bash' };

/** The grammar for a fence's language tag (```rust), or none. */
export function grammarForLang(lang) {
  return BY_ALIAS.get(String(lang || '').toLowerCase()) || null;
}

/** The grammar for a file path, by its name or extension, or none. */
export function grammarForPath(path) {
  const name = String(path).split('/').pop().toLowerCase();
  if (BY_NAME[name]) return BY_NAME[name];
  const dot = name.lastIndexOf('.');
  return dot >= 0 ? BY_ALIAS.get(name.slice(dot + 1)) || null : null;
}

let corePromise;
const loaded = new Map();

async function core() {
  if (!corePromise) {
    ensureHighlightStyles();
    corePromise = import(`${BASE}core.min.js`).then((m) => m.default);
  }
  return corePromise;
}

async function withGrammar(grammar) {
  const hljs = await core();
  if (!loaded.has(grammar)) {
    loaded.set(grammar, import(`${BASE}languages/${grammar}.min.js`).then((m) => {
      hljs.registerLanguage(grammar, m.default);
    }));
  }
  await loaded.get(grammar);
  return hljs;
}

/**
 * Highlight a <code> element's text in place. highlight.js escapes the source it is given,
 * so its HTML output holds no markup from the text itself.
 */
export async function highlightElement(code, grammar) {
  if (!grammar) return;
  try {
    const hljs = await withGrammar(grammar);
    const text = code.textContent;
    const result = hljs.highlight(text, { language: grammar, ignoreIllegals: true });
    if (code.textContent !== text) return; // replaced meanwhile
    code.innerHTML = result.value;
    code.classList.add('hljs');
    code.dataset.language = grammar;
  } catch (err) {
    console.warn('highlighting failed', grammar, err);
  }
}
