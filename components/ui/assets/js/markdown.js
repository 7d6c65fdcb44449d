// Agent messages as markdown, safely. Agent output is untrusted (a model can be made to print
// anything), so:
//  1. marked renders raw HTML in the source as escaped text, links only with safe schemes,
//     images as plain text (the page may not load images from elsewhere anyway);
//  2. its output is parsed into an inert <template> and walked: any element or attribute not
//     on a short list is dropped, so a bug in step 1 still cannot inject script or styles;
//  3. code blocks are highlighted afterwards by highlight.js, which escapes what it is given.

import { Marked } from '/ui/assets/vendor/marked.esm.js';
import { grammarForLang, highlightElement } from '/ui/assets/js/highlight.js';

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

function safeHref(href) {
  try {
    const url = new URL(href, location.origin);
    if (['http:', 'https:', 'mailto:'].includes(url.protocol)) return url.href;
  } catch { /* not a URL */ }
  return null;
}

const marked = new Marked({ gfm: true, breaks: false, async: false });
marked.use({
  renderer: {
    // Block and inline HTML alike: shown as the text it is.
    html({ text, block }) { return block ? `<p>${escapeHtml(text)}</p>\n` : escapeHtml(text); },
    link({ href, title, tokens }) {
      const text = this.parser.parseInline(tokens);
      const url = safeHref(href);
      if (!url) return text;
      const t = title ? ` title="${escapeHtml(title)}"` : '';
      return `<a href="${escapeHtml(url)}"${t} rel="noopener noreferrer nofollow" target="_blank">${text}</a>`;
    },
    image({ href, text }) {
      return escapeHtml(`[image: ${text || href}]`);
    },
    code({ text, lang }) {
      const tag = String(lang || '').trim().split(/\s+/)[0];
      return `<pre class="code-block"><code data-lang="${escapeHtml(tag)}">${escapeHtml(text)}</code></pre>\n`;
    },
  },
});

// What may survive from marked's output, and with which attributes.
const ALLOWED = new Set(['P', 'BR', 'HR', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'UL', 'OL', 'LI',
  'BLOCKQUOTE', 'PRE', 'CODE', 'EM', 'STRONG', 'DEL', 'A', 'TABLE', 'THEAD', 'TBODY', 'TR',
  'TH', 'TD', 'INPUT', 'SPAN']);
const ATTRS = {
  A: ['href', 'title', 'rel', 'target'],
  CODE: ['data-lang'],
  PRE: ['class'],
  OL: ['start'],
  TH: ['align'],
  TD: ['align'],
  INPUT: ['type', 'checked', 'disabled'],
};

function sanitize(root) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_COMMENT);
  const drop = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.nodeType === Node.COMMENT_NODE || !ALLOWED.has(node.nodeName)) {
      drop.push(node);
      continue;
    }
    const keep = ATTRS[node.nodeName] || [];
    for (const attr of [...node.attributes]) {
      if (!keep.includes(attr.name)) node.removeAttribute(attr.name);
    }
    if (node.nodeName === 'A' && !safeHref(node.getAttribute('href') || '')) node.removeAttribute('href');
    if (node.nodeName === 'INPUT') {
      if (node.getAttribute('type') !== 'checkbox') { drop.push(node); continue; }
      node.setAttribute('disabled', '');
    }
  }
  // An element not allowed is replaced by its text.
  for (const node of drop) {
    if (node.nodeType === Node.COMMENT_NODE) node.remove();
    else node.replaceWith(document.createTextNode(node.textContent));
  }
}

/** Markdown text → a <div class="markdown"> of sanitised DOM, code blocks highlighted soon. */
export function renderMarkdown(text) {
  const template = document.createElement('template');
  let html;
  try {
    html = marked.parse(String(text ?? ''));
  } catch {
    html = `<p>${escapeHtml(text)}</p>`;
  }
  template.innerHTML = html; // inert: nothing in a template runs or loads
  sanitize(template.content);
  const div = document.createElement('div');
  div.className = 'markdown';
  div.append(document.importNode(template.content, true));
  for (const code of div.querySelectorAll('pre > code[data-lang]')) {
    const grammar = grammarForLang(code.dataset.lang);
    if (grammar) highlightElement(code, grammar);
  }
  return div;
}
