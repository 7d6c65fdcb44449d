// JSON Schemas of the OpenAPI document: `$ref`s resolved (cycles guarded), `allOf` merged,
// nullability folded in; drawn as a tree of properties, and turned into example values.

import { h, add, lazyDetails, uid } from './dom.js';
import { markdown, highlight } from './markdown.js';

let DOC = {};
/** The document that `$ref`s point into. */
export function setDoc(doc) {
  DOC = doc;
}

const unescapePtr = (p) => decodeURIComponent(p).replace(/~1/g, '/').replace(/~0/g, '~');

/** The value a local `$ref` (`#/…`) points at, or undefined. */
export function pointer(ref) {
  if (typeof ref !== 'string' || !ref.startsWith('#')) return undefined;
  let cur = DOC;
  for (const part of ref.slice(1).split('/').slice(1)) {
    if (cur == null || typeof cur !== 'object') return undefined;
    cur = cur[unescapePtr(part)];
  }
  return cur;
}

export const refName = (ref) => unescapePtr(String(ref).split('/').pop());

/** A parameter, response, request body, header or example with its `$ref`s followed. */
export function deref(obj) {
  const seen = new Set();
  while (obj && typeof obj === 'object' && typeof obj.$ref === 'string') {
    if (seen.has(obj.$ref)) return {};
    seen.add(obj.$ref);
    const { $ref, ...rest } = obj;
    const target = pointer($ref);
    if (target === undefined) return { ...rest, unresolved: $ref };
    obj = { ...target, ...rest };
  }
  return obj || {};
}

const isNull = (v) =>
  v && typeof v === 'object' &&
  (v.type === 'null' || (Array.isArray(v.type) && v.type.length === 1 && v.type[0] === 'null'));

/**
 * A schema looked through: { s, name, nullable, cyclic, missing, stack }, where `s` has no
 * `$ref` or `allOf` left at its top, `name` is the component it came from, and `stack` the
 * `$ref`s followed to get here (a `$ref` already on it is a cycle, drawn but not opened).
 */
export function look(schema, stack = []) {
  let s = schema;
  let name = null;
  let nullable = false;
  if (s === true || s == null || typeof s !== 'object') s = {};
  while (typeof s.$ref === 'string') {
    const ref = s.$ref;
    name = name || refName(ref);
    if (stack.includes(ref)) {
      const t = pointer(ref) || {};
      return { s: { type: t.type ?? (t.properties ? 'object' : undefined) }, name, cyclic: true, stack };
    }
    stack = [...stack, ref];
    const { $ref, ...rest } = s;
    const target = pointer(ref);
    if (target === undefined || typeof target !== 'object') return { s: rest, name, missing: ref, stack };
    s = { ...target, ...rest };
  }
  if (Array.isArray(s.allOf)) s = merge(s, stack);
  if (s.nullable === true) nullable = true;
  if (Array.isArray(s.type) && s.type.length > 1 && s.type.includes('null')) {
    nullable = true;
    const t = s.type.filter((x) => x !== 'null');
    s = { ...s, type: t.length === 1 ? t[0] : t };
  }
  for (const k of ['anyOf', 'oneOf']) {
    if (!Array.isArray(s[k]) || !s[k].some(isNull)) continue;
    nullable = true;
    const rest = s[k].filter((v) => !isNull(v));
    const { [k]: _, ...outer } = s;
    if (rest.length === 1 && !outer.properties && !outer.type) {
      const inner = look(rest[0], stack);
      const desc = outer.description ?? inner.s.description;
      return { ...inner, s: { ...inner.s, ...(desc ? { description: desc } : {}) }, nullable: true, name: name || inner.name };
    }
    s = { ...outer, [k]: rest };
  }
  return { s, name, nullable, stack };
}

function merge(s, stack) {
  const { allOf, ...own } = s;
  const out = {};
  if (own.description) out.description = own.description;
  if (own.title) out.title = own.title;
  for (const part of [...allOf, own]) {
    const p = look(part, stack).s;
    for (const [k, v] of Object.entries(p)) {
      if (k === 'properties' && v && typeof v === 'object') {
        const props = { ...(out.properties || {}) };
        for (const [pk, pv] of Object.entries(v)) props[pk] = pk in props ? { allOf: [props[pk], pv] } : pv;
        out.properties = props;
      } else if (k === 'required' && Array.isArray(v)) {
        out.required = [...new Set([...(out.required || []), ...v])];
      } else if (!((k === 'description' || k === 'title') && k in out)) {
        out[k] = v;
      }
    }
  }
  return out;
}

const jsonType = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v);

function baseType(s) {
  if (Array.isArray(s.type)) return s.type.join(' | ');
  if (s.type) return s.type;
  if (s.properties || s.additionalProperties || s.patternProperties) return 'object';
  if (s.items || s.prefixItems) return 'array';
  if (s.const !== undefined) return jsonType(s.const);
  if (Array.isArray(s.enum) && s.enum.length) return [...new Set(s.enum.map(jsonType))].join(' | ');
  if (s.oneOf) return 'one of';
  if (s.anyOf) return 'any of';
  return 'any';
}

/** "string", "array of CoreTask", "map of string", "object"… */
export function typeLabel(info, depth = 0) {
  const { s, name } = info;
  const t = baseType(s);
  if (depth > 4) return t;
  if (t === 'array' && s.items && typeof s.items === 'object') {
    const it = look(s.items, info.stack);
    return `array of ${it.name || typeLabel(it, depth + 1)}${it.nullable ? ' | null' : ''}`;
  }
  if (t === 'object' && !name && !s.properties && s.additionalProperties && typeof s.additionalProperties === 'object') {
    const v = look(s.additionalProperties, info.stack);
    return `map of ${v.name || typeLabel(v, depth + 1)}`;
  }
  return t;
}

const json = (v) => JSON.stringify(v);

function facts(s) {
  const f = [];
  const range = (a, b, unit) => (a != null && b != null ? `${a}–${b}${unit}` : a != null ? `≥ ${a}${unit}` : `≤ ${b}${unit}`);
  if (s.format) f.push(['format', s.format]);
  if (s.contentMediaType) f.push(['content', s.contentMediaType]);
  if (s.const !== undefined) f.push(['always', json(s.const)]);
  if (s.minimum != null || s.maximum != null) f.push(['range', range(s.minimum, s.maximum, '')]);
  if (typeof s.exclusiveMinimum === 'number') f.push(['>', s.exclusiveMinimum]);
  if (typeof s.exclusiveMaximum === 'number') f.push(['<', s.exclusiveMaximum]);
  if (s.multipleOf != null) f.push(['multiple of', s.multipleOf]);
  if (s.minLength != null || s.maxLength != null) f.push(['length', range(s.minLength, s.maxLength, '')]);
  if (s.minItems != null || s.maxItems != null) f.push(['items', range(s.minItems, s.maxItems, '')]);
  if (s.uniqueItems) f.push(['unique items']);
  if (s.minProperties != null || s.maxProperties != null) f.push(['properties', range(s.minProperties, s.maxProperties, '')]);
  if (s.pattern) f.push(['pattern', s.pattern]);
  if (s.default !== undefined) f.push(['default', json(s.default)]);
  if (s.additionalProperties === false) f.push(['no other properties']);
  if (s.readOnly) f.push(['read-only']);
  if (s.writeOnly) f.push(['write-only']);
  if (s.example !== undefined) f.push(['example', json(s.example)]);
  else if (Array.isArray(s.examples) && s.examples.length) f.push(['example', json(s.examples[0])]);
  return f.map(([k, v]) =>
    h('span', { class: 's-fact' }, v === undefined ? k : [`${k} `, h('code', null, String(v))]),
  );
}

const MAX_DEPTH = 14;
const OPEN_DEPTH = 2;

/**
 * One line of the tree: a property name (or none), its type, `required`, `nullable` and its
 * constraints; then its description, enum values and, folded, its children.
 */
function row(nameText, schema, { required = false, stack = [], depth = 0, extra = null, description } = {}) {
  const info = look(schema, stack);
  const { s } = info;
  const li = h('li', { class: 's-row' });
  const line = h(
    'div',
    { class: 's-line' },
    nameText != null && h('code', { class: 's-name' }, nameText),
    extra,
    h('span', { class: 's-type' }, typeLabel(info)),
    info.name && !/^array of /.test(typeLabel(info)) && h('span', { class: 's-ref' }, info.name),
    required && h('span', { class: 's-req' }, 'required'),
    info.nullable && h('span', { class: 's-null' }, 'nullable'),
    s.deprecated && h('span', { class: 's-dep' }, 'deprecated'),
    info.cyclic && h('span', { class: 's-fact' }, 'recursive: drawn above'),
    info.missing && h('span', { class: 's-fact' }, `unresolved ${info.missing}`),
    facts(s),
  );
  add(li, [line, details(info, depth, description ?? (schema && schema.$ref ? schema.description : undefined))]);
  return li;
}

/** What comes under a schema's line: description, enum, and its children folded. */
function details(info, depth, ownDescription) {
  const { s } = info;
  const out = [];
  const desc = ownDescription ?? s.description ?? s.title;
  if (desc) out.push(markdown(desc, 6));
  if (Array.isArray(s.enum)) {
    out.push(h('div', { class: 's-enum' }, 'one of: ', s.enum.map((v) => [h('code', null, json(v)), ' '])));
  }
  if (info.cyclic || info.missing || depth > MAX_DEPTH) return out;
  for (const part of parts(info, depth)) {
    out.push(lazyDetails('s-sub', part.label, part.build, depth < OPEN_DEPTH));
  }
  return out;
}

function props(s, stack, depth) {
  const req = new Set(Array.isArray(s.required) ? s.required : []);
  const ul = h('ul', { class: 's-props' });
  for (const [k, v] of Object.entries(s.properties || {})) {
    ul.append(row(k, v, { required: req.has(k), stack, depth }));
  }
  for (const [k, v] of Object.entries(s.patternProperties || {})) {
    ul.append(row(`/${k}/`, v, { stack, depth }));
  }
  if (s.additionalProperties && typeof s.additionalProperties === 'object') {
    ul.append(row('[any other key]', s.additionalProperties, { stack, depth }));
  }
  return ul;
}

function variants(list, word, stack, depth) {
  const ol = h('ol', { class: 's-props s-variants' });
  list.forEach((v, i) => {
    const li = row(null, v, { stack, depth, extra: h('span', { class: 's-opt' }, `${word} ${i + 1}`) });
    ol.append(li);
  });
  return ol;
}

/** The foldable children of a schema: its properties, array items, alternatives. */
function parts(info, depth) {
  const { s, stack } = info;
  const out = [];
  const count = Object.keys(s.properties || {}).length + Object.keys(s.patternProperties || {}).length +
    (s.additionalProperties && typeof s.additionalProperties === 'object' ? 1 : 0);
  if (count) {
    out.push({
      label: `${count} ${count === 1 ? 'property' : 'properties'}`,
      build: () => props(s, stack, depth + 1),
    });
  }
  if (s.items && typeof s.items === 'object') {
    const it = look(s.items, stack);
    const sub = it.cyclic || it.missing ? [] : parts(it, depth);
    for (const p of sub) out.push({ label: `items: ${p.label}`, build: p.build });
    if (it.s.description && !sub.length && !it.name) {
      out.push({ label: 'items', build: () => details(it, depth + 1) });
    }
  }
  for (const k of ['oneOf', 'anyOf']) {
    if (Array.isArray(s[k]) && s[k].length) {
      const word = k === 'oneOf' ? 'one of' : 'any of';
      out.push({ label: `${word} ${s[k].length} alternatives`, build: () => variants(s[k], 'option', stack, depth + 1) });
    }
  }
  if (s.not && typeof s.not === 'object') {
    out.push({ label: 'must not match', build: () => h('ul', { class: 's-props' }, row(null, s.not, { stack, depth: depth + 1 })) });
  }
  if (s.contentSchema && typeof s.contentSchema === 'object') {
    out.push({ label: `content (${s.contentMediaType || 'decoded'})`, build: () => h('ul', { class: 's-props' }, row(null, s.contentSchema, { stack, depth: depth + 1 })) });
  }
  return out;
}

/** A whole schema as a tree, with the hook `docs-schema`. */
export function schemaTree(schema) {
  const box = h('div', { class: 'schema', 'data-testid': 'docs-schema' });
  const ul = h('ul', { class: 's-props s-root' }, row(null, schema));
  return add(box, ul);
}

/** One row for a parameter or header: name, where it goes, type, required, description. */
export function paramRow(p, where) {
  let schema = p.schema;
  if (!schema && p.content) schema = Object.values(p.content)[0]?.schema;
  return row(p.name, schema || {}, {
    required: !!p.required,
    extra: where && h('span', { class: 's-in' }, where),
    description: p.description,
  });
}

// ---- examples ------------------------------------------------------------------------

const FORMATS = {
  'date-time': '2025-01-01T12:00:00Z', date: '2025-01-01', time: '12:00:00Z',
  email: 'user@example.com', uri: 'https://example.com/', url: 'https://example.com/',
  uuid: '3fa85f64-5717-4562-b3fc-2c963f66afa6', ipv4: '127.0.0.1', ipv6: '::1',
  hostname: 'example.com', duration: 'PT1M',
};

/**
 * An example value for a schema: its own `example`, `examples`, `const`, `default` or first
 * enum value, else one built from its type. `mode` "request" keeps only the required
 * properties (all, when none is) and drops read-only ones; "response" drops write-only ones.
 */
export function exampleOf(schema, mode = 'response', stack = [], depth = 0) {
  if (depth > 10) return null;
  const info = look(schema, stack);
  if (info.cyclic || info.missing) return null;
  const { s } = info;
  if (s.example !== undefined) return s.example;
  if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
  if (s.const !== undefined) return s.const;
  if (s.default !== undefined) return s.default;
  if (Array.isArray(s.enum) && s.enum.length) return s.enum.find((v) => v !== null) ?? s.enum[0];
  const alts = s.oneOf || s.anyOf;
  if (Array.isArray(alts) && alts.length && !s.properties) return exampleOf(alts[0], mode, info.stack, depth + 1);
  let t = Array.isArray(s.type) ? s.type.find((x) => x !== 'null') : s.type;
  if (!t) t = baseType(s);
  switch (t) {
    case 'object': {
      const o = {};
      const all = Object.entries(s.properties || {}).filter(([, v]) => {
        const p = look(v, info.stack).s;
        return !(mode === 'request' ? p.readOnly : p.writeOnly);
      });
      const req = new Set(Array.isArray(s.required) ? s.required : []);
      const keep = mode === 'request' && all.some(([k]) => req.has(k)) ? all.filter(([k]) => req.has(k)) : all;
      for (const [k, v] of keep) o[k] = exampleOf(v, mode, info.stack, depth + 1);
      if (!keep.length && s.additionalProperties && typeof s.additionalProperties === 'object') {
        o.key = exampleOf(s.additionalProperties, mode, info.stack, depth + 1);
      }
      return o;
    }
    case 'array': {
      if (!s.items || typeof s.items !== 'object') return [];
      const v = exampleOf(s.items, mode, info.stack, depth + 1);
      return Array(Math.max(1, Math.min(s.minItems || 1, 3))).fill(v);
    }
    case 'string':
      if (s.contentSchema && /json/.test(s.contentMediaType || '')) {
        return JSON.stringify(exampleOf(s.contentSchema, mode, info.stack, depth + 1));
      }
      return FORMATS[s.format] ?? 'string';
    case 'integer':
    case 'number':
      if (s.minimum != null) return s.minimum;
      if (typeof s.exclusiveMinimum === 'number') return s.exclusiveMinimum + 1;
      if (s.maximum != null && s.maximum < 0) return s.maximum;
      return 0;
    case 'boolean':
      return true;
    default:
      return null;
  }
}

/**
 * The examples of a media type object: [{label, value, generated}]. Named `examples` and
 * `example` come first; otherwise one generated from the schema (JSON media types only).
 */
export function examplesOf(media, type, mode) {
  const out = [];
  if (media.examples && typeof media.examples === 'object') {
    for (const [k, ex0] of Object.entries(media.examples)) {
      const ex = deref(ex0);
      if ('value' in ex) out.push({ label: ex.summary || k, value: ex.value, description: ex.description });
      else if (ex.externalValue) out.push({ label: ex.summary || k, value: `(see ${ex.externalValue})` });
    }
  }
  if (!out.length && media.example !== undefined) out.push({ label: 'Example', value: media.example });
  if (!out.length && media.schema && /json|event-stream/.test(type)) {
    const s = look(media.schema).s;
    const own = s.example !== undefined || (Array.isArray(s.examples) && s.examples.length);
    let v = exampleOf(media.schema, mode);
    if (/event-stream/.test(type) && v && typeof v === 'object' && !Array.isArray(v)) {
      const rank = (k) => ['id', 'event', 'retry', 'data'].indexOf(k) >>> 0;
      const fields = Object.entries(v).sort(([a], [b]) => rank(a) - rank(b));
      v = `${fields.map(([k, x]) => `${k}: ${typeof x === 'string' ? x : JSON.stringify(x)}`).join('\n')}\n\n`;
    }
    out.push({ label: own ? 'Example' : 'Example (generated from the schema)', value: v, generated: !own });
  }
  return out;
}

/** Text of an example value for a media type: JSON pretty-printed, strings as they are. */
export function exampleText(value, type) {
  if (typeof value === 'string' && !/json/.test(type)) return value;
  if (/ndjson|jsonl/.test(type)) return JSON.stringify(value);
  return JSON.stringify(value, null, 2);
}

/** The examples drawn: one <pre>, or a chooser over several. */
export function examplesBlock(list, type) {
  if (!list.length) return null;
  const lang = /json/.test(type) ? 'json' : '';
  const code = h('code');
  const pre = h('pre', { class: 'code', tabindex: '0' }, code);
  const show = (i) => {
    const ex = list[i];
    pre.setAttribute('aria-label', ex.label);
    highlight(code, exampleText(ex.value, type), lang);
  };
  const box = h('div', { class: 'examples' });
  if (list.length === 1) {
    add(box, h('p', { class: 'ex-label' }, list[0].label));
  } else {
    const id = uid('ex');
    const sel = h(
      'select',
      { id, onchange: () => show(sel.selectedIndex) },
      list.map((ex) => h('option', null, ex.label)),
    );
    add(box, h('p', { class: 'ex-label' }, h('label', { for: id }, 'Example '), sel));
  }
  show(0);
  return add(box, pre);
}
