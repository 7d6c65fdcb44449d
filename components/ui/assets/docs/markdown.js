// Markdown (marked) with raw HTML escaped, links limited to http(s), mailto and this site,
// no images, headings shifted under the page's own; code highlighted (highlight.js), each
// language's grammar loaded the first time a block needs it.

import { Marked } from '/ui/assets/vendor/marked.esm.js';
import { esc } from './dom.js';

const HL = '/ui/assets/vendor/highlight';
let hljs = null;
let core = null;
/** highlight.js, loaded with the first block to highlight. */
function loadCore() {
  core ??= import(`${HL}/core.min.js`).then((m) => (hljs = m.default));
  return core;
}

// Fence names to the grammars vendored under vendor/highlight/languages/.
const LANGS = {
  bash: 'bash', sh: 'bash', zsh: 'bash', shell: 'shell', console: 'shell', json: 'json',
  jsonc: 'json', ndjson: 'json', jsonl: 'json', js: 'javascript', javascript: 'javascript',
  mjs: 'javascript', ts: 'typescript', typescript: 'typescript', py: 'python',
  python: 'python', rs: 'rust', rust: 'rust', go: 'go', yaml: 'yaml', yml: 'yaml',
  toml: 'ini', ini: 'ini', html: 'xml', xml: 'xml', svg: 'xml', css: 'css', sql: 'sql',
  diff: 'diff', patch: 'diff', dockerfile: 'dockerfile', docker: 'dockerfile',
  md: 'markdown', markdown: 'markdown',
};
const loading = new Map();

function grammar(name) {
  if (!loading.has(name)) {
    // Shell sessions embed bash.
    const needs = name === 'shell' ? [grammar('bash')] : [];
    loading.set(
      name,
      Promise.all([loadCore(), import(`${HL}/languages/${name}.min.js`), ...needs]).then(
        ([, m]) => (hljs.registerLanguage(name, m.default), true),
        () => false,
      ),
    );
  }
  return loading.get(name);
}

/** Puts `text` into `code`, highlighted as `lang` when a grammar for it is vendored. */
export async function highlight(code, text, lang) {
  code.textContent = text;
  const name = LANGS[String(lang || '').toLowerCase()];
  if (!name || text.length > 300000 || !(await grammar(name))) return;
  if (code.textContent !== text) return; // replaced meanwhile
  code.innerHTML = hljs.highlight(text, { language: name, ignoreIllegals: true }).value;
  code.classList.add('hljs');
}

function safeHref(href) {
  try {
    const u = new URL(href, location.href);
    return ['http:', 'https:', 'mailto:'].includes(u.protocol) ? href : null;
  } catch {
    return null;
  }
}

let headingBase = 2;
const marked = new Marked({
  gfm: true,
  renderer: {
    html({ text, block }) {
      return block ? `<p>${esc(text.trim())}</p>\n` : esc(text);
    },
    heading({ tokens, depth }) {
      const d = Math.min(6, depth + headingBase);
      return `<h${d}>${this.parser.parseInline(tokens)}</h${d}>\n`;
    },
    link({ href, title, tokens }) {
      const inner = this.parser.parseInline(tokens);
      const ok = safeHref(href);
      if (ok == null) return inner;
      return `<a href="${esc(ok)}"${title ? ` title="${esc(title)}"` : ''}>${inner}</a>`;
    },
    image({ text }) {
      return esc(text);
    },
    code({ text, lang }) {
      const l = String(lang || '').match(/^\S*/)[0];
      return `<pre class="code"><code${l ? ` data-lang="${esc(l)}"` : ''}>${esc(text)}</code></pre>\n`;
    },
  },
});

/**
 * A <div class="md"> with `text` rendered as markdown. `level` is the heading level the
 * text sits under: its `#` headings become level + 1 and below.
 */
export function markdown(text, level = 2) {
  const el = document.createElement('div');
  el.className = 'md';
  headingBase = level;
  el.innerHTML = marked.parse(String(text ?? ''));
  for (const c of el.querySelectorAll('pre code[data-lang]')) {
    highlight(c, c.textContent, c.dataset.lang);
  }
  return el;
}

/** A <span> with one line of markdown rendered inline (code, emphasis, and links unless
 * `links` is false, for text inside a button or summary). */
export function inlineMarkdown(text, links = true) {
  const el = document.createElement('span');
  el.innerHTML = marked.parseInline(String(text ?? ''));
  if (!links) for (const a of el.querySelectorAll('a')) a.replaceWith(...a.childNodes);
  return el;
}
