// The web UI's browser suite: playwright-core drives Debian's chromium headless against a gantry
// the Rust harness (tests/browser.rs) started; axe-core checks each main view. Each check is a
// small named test; the suite prints one line per test and "N passed, N failed" at the end,
// and exits non-zero when any failed. Screenshots of the main views go to $GANTRY_ARTIFACTS and
// are checked to be non-blank.
//
// Environment: GANTRY_URL, GANTRY_USER, GANTRY_PASSWORD, GANTRY_API_KEY,
// GANTRY_BROWSER_MODULES (node_modules with playwright-core and axe-core), GANTRY_ARTIFACTS,
// GANTRY_KEY_FILE (the node's JWT signing keys, to make an expired token).

import { createHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env('GANTRY_URL');
const USER = env('GANTRY_USER');
const PASSWORD = env('GANTRY_PASSWORD');
const API_KEY = env('GANTRY_API_KEY');
const ARTIFACTS = env('GANTRY_ARTIFACTS');
const KEY_FILE = env('GANTRY_KEY_FILE');
const require = createRequire(join(env('GANTRY_BROWSER_MODULES'), 'noop.js'));
const { chromium } = require('playwright-core');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
const tid = (id) => `[data-testid="${id}"]`;

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// ---- helpers ----------------------------------------------------------------------------

/** A request to the API with the API key (to arrange state the browser then shows). */
async function api(method, path, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return json;
}

async function signIn(page) {
  await page.goto(`${BASE}/ui/sign-in`);
  await page.fill(tid('signin-username'), USER);
  await page.fill(tid('signin-password'), PASSWORD);
  await page.click(tid('signin-submit'));
  await page.waitForURL((url) => !url.pathname.startsWith('/ui/sign-in'), { timeout: 15000 });
}

/**
 * A copy of `token` that expired an hour ago, signed with the node's own key (lines of
 * `kid:hex-secret`), so only its expiry makes it invalid.
 */
function expiredCopy(token) {
  const [head, body] = token.split('.');
  const header = JSON.parse(Buffer.from(head, 'base64url'));
  const claims = JSON.parse(Buffer.from(body, 'base64url'));
  const line = readFileSync(KEY_FILE, 'utf8').split('\n').find((l) => l.startsWith(`${header.kid}:`));
  assert(line, `no key ${header.kid} in ${KEY_FILE}`);
  const now = Math.floor(Date.now() / 1000);
  claims.iat = now - 7200;
  claims.exp = now - 3600;
  const input = `${head}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const secret = Buffer.from(line.slice(header.kid.length + 1).trim(), 'hex');
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** The pixels of an 8-bit RGB or RGBA PNG (what chromium writes): rows unfiltered. */
function decodePng(buffer) {
  let offset = 8;
  let width = 0, height = 0, channels = 4;
  const idat = [];
  while (offset < buffer.length) {
    const length = buffer.readUInt32BE(offset);
    const type = buffer.toString('ascii', offset + 4, offset + 8);
    const data = buffer.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert(data[8] === 8 && (data[9] === 2 || data[9] === 6), 'an 8-bit RGB(A) PNG');
      channels = data[9] === 2 ? 3 : 4;
    } else if (type === 'IDAT') {
      idat.push(data);
    }
    offset += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const left = i >= channels ? pixels[y * stride + i - channels] : 0;
      const up = y > 0 ? pixels[(y - 1) * stride + i] : 0;
      const corner = y > 0 && i >= channels ? pixels[(y - 1) * stride + i - channels] : 0;
      let predicted = 0;
      if (filter === 1) predicted = left;
      else if (filter === 2) predicted = up;
      else if (filter === 3) predicted = (left + up) >> 1;
      else if (filter === 4) {
        const p = left + up - corner;
        const pa = Math.abs(p - left), pb = Math.abs(p - up), pc = Math.abs(p - corner);
        predicted = pa <= pb && pa <= pc ? left : pb <= pc ? up : corner;
      }
      pixels[y * stride + i] = (row[i] + predicted) & 0xff;
    }
  }
  return { width, height, channels, pixels };
}

/** Blank: fewer than 1 % of the pixels differ from the most common colour. */
function pngIsBlank(buffer) {
  const { width, height, channels, pixels } = decodePng(buffer);
  const counts = new Map();
  for (let i = 0; i < width * height; i++) {
    const o = i * channels;
    const key = (pixels[o] << 16) | (pixels[o + 1] << 8) | pixels[o + 2];
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  let most = 0;
  for (const n of counts.values()) most = Math.max(most, n);
  return width * height - most < width * height * 0.01;
}

async function screenshot(page, name) {
  const buffer = await page.screenshot({ fullPage: true });
  writeFileSync(join(ARTIFACTS, `${name}.png`), buffer);
  assert(!pngIsBlank(buffer), `the ${name} screenshot is blank`);
}

async function accessible(page, view) {
  // Evaluated over the DevTools protocol: the page's CSP (script-src 'self') stays on.
  await page.evaluate(AXE);
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    await axe.run(document, { resultTypes: ['violations'] }));
  const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert(serious.length === 0,
    `${view}: ${serious.map((v) => `${v.id} (${v.impact}): ${v.nodes.length} nodes, e.g. ${v.nodes[0]?.target}`).join('; ')}`);
}

/** The seqs of the run events shown, in page order. */
async function shownSeqs(page) {
  return page.$$eval(tid('run-event'), (els) => els.map((e) => Number(e.dataset.seq)));
}

function noGapNoRepeat(seqs, label) {
  for (let i = 1; i < seqs.length; i++) {
    assert(seqs[i] !== seqs[i - 1], `${label}: seq ${seqs[i]} shown twice`);
    assert(seqs[i] === seqs[i - 1] + 1, `${label}: a gap between ${seqs[i - 1]} and ${seqs[i]}`);
  }
}

// ---- the suite --------------------------------------------------------------------------

let browser;
let context;
let page;
const state = {};

test('first load: bytes and time of the sign-in view (printed, not asserted)', async () => {
  const fresh = await browser.newContext();
  const p = await fresh.newPage();
  // Each response's body, read once it has finished (counted after the page is idle, so no
  // size is read before it is known).
  const bodies = [];
  p.on('requestfinished', (r) => bodies.push(r.response().then((res) => res.body()).then((b) => b.length)));
  await p.goto(`${BASE}/ui/sign-in`, { waitUntil: 'networkidle' });
  const loaded = await p.evaluate(() => performance.getEntriesByType('navigation')[0].loadEventEnd);
  const bytes = (await Promise.all(bodies)).reduce((a, b) => a + b, 0);
  console.log(`       first load of /ui/sign-in: ${bytes} bytes in ${bodies.length} requests, load event at ${loaded.toFixed(0)} ms`);
  assert(bytes > 0, 'nothing loaded');
  await fresh.close();
});

test('a wrong password is told in the page', async () => {
  await page.goto(`${BASE}/ui/sign-in`);
  await page.fill(tid('signin-username'), USER);
  await page.fill(tid('signin-password'), 'not the password');
  await page.click(tid('signin-submit'));
  const message = page.locator(tid('error-message'));
  await message.waitFor({ timeout: 10000 });
  assert((await message.innerText()).trim().length > 0, 'an empty error message');
  assert(page.url().includes('/ui/sign-in'), 'left the sign-in page');
  await accessible(page, 'sign-in');
  await screenshot(page, 'sign-in');
});

test('sign in, and the token is in no URL', async () => {
  await signIn(page);
  assert(!page.url().includes('token'), page.url());
  const stored = await page.evaluate(() => sessionStorage.getItem('gantry.token'));
  assert(stored && stored.split('.').length === 3, 'a JWT in sessionStorage');
  assert(!page.url().includes(stored), 'the token in the URL');
});

test('create a project, and it has its own URL', async () => {
  await page.goto(`${BASE}/ui/projects`);
  await page.click(tid('project-create'));
  await page.fill(tid('project-name'), 'Browser project');
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/ui\/projects\/[^/]+$/, { timeout: 15000 });
  state.project = page.url().split('/').pop();
  await page.goto(`${BASE}/ui/projects`);
  await page.getByText('Browser project').first().waitFor();
  await accessible(page, 'projects');
  await screenshot(page, 'projects');
});

test('create a task on the board and run it: output shows before the run ends', async () => {
  // The project's tasks run the stand-in claude.
  await api('PUT', `/api/projects/${state.project}`, { settings: { backend: 'claude' } });
  await page.goto(`${BASE}/ui/projects/${state.project}`);
  await page.click(tid('task-create'));
  await page.fill(tid('task-title'), 'Say hello');
  await page.click(tid('task-save'));
  const card = page.locator(tid('task-card'), { hasText: 'Say hello' });
  await card.waitFor({ timeout: 10000 });
  await accessible(page, 'board');
  await screenshot(page, 'board');
  await card.locator(tid('task-execute')).click();
  await card.click();
  await page.waitForURL(/\/ui\/tasks\/[^/]+$/, { timeout: 15000 });
  state.task = page.url().split('/').pop();
  await page.locator(tid('run-event')).first().waitFor({ timeout: 20000 });
  const task = await api('GET', `/api/tasks/${state.task}`);
  assert(['running', 'queued'].includes(task.data.status),
    `output showed only after the run ended (${task.data.status})`);
});

test('a reload mid-run continues with no gap and no repeat', async () => {
  const before = await shownSeqs(page);
  assert(before.length > 0, 'nothing shown yet');
  await page.reload();
  await page.waitForFunction(
    (n) => document.querySelectorAll('[data-testid="run-event"]').length > n,
    before.length, { timeout: 20000 });
  noGapNoRepeat(await shownSeqs(page), 'after the reload');
});

test('a cut connection resumes with no gap and no repeat, and the run ends', async () => {
  await context.setOffline(true);
  await page.waitForTimeout(1500);
  await context.setOffline(false);
  await page.waitForFunction(async (id) => {
    const res = await fetch(`/api/tasks/${id}`, {
      headers: { authorization: `Bearer ${sessionStorage.getItem('gantry.token')}` },
    });
    const body = await res.json();
    return body.data && body.data.status === 'completed';
  }, state.task, { timeout: 60000, polling: 500 });
  // Everything the run printed is shown once: the shown seqs reach the log's last.
  await page.waitForTimeout(1500);
  const seqs = await shownSeqs(page);
  noGapNoRepeat(seqs, 'after the drop');
  await accessible(page, 'run');
  await screenshot(page, 'run');
});

test('cancel another task', async () => {
  const made = await api('POST', '/api/tasks/', { title: 'slow task', project_id: state.project });
  const id = made.data.id;
  await api('POST', `/api/tasks/${id}/execute`);
  await page.goto(`${BASE}/ui/projects/${state.project}`);
  const card = page.locator(tid('task-card'), { hasText: 'slow task' });
  await card.waitFor({ timeout: 10000 });
  await card.locator(tid('task-cancel')).click();
  await page.waitForFunction(async (tid) => {
    const res = await fetch(`/api/tasks/${tid}`, {
      headers: { authorization: `Bearer ${sessionStorage.getItem('gantry.token')}` },
    });
    return (await res.json()).data.status === 'cancelled';
  }, id, { timeout: 30000, polling: 300 });
});

test('browse the workspace and open a file', async () => {
  const task = await api('GET', `/api/tasks/${state.task}`);
  await page.goto(`${BASE}/ui/projects/${state.project}`);
  await page.locator('a[href^="/ui/workspaces/"]').first().click();
  await page.locator(tid('ws-file'), { hasText: 'src' }).first().click();
  await page.locator(tid('ws-file'), { hasText: 'main.rs' }).first().click();
  const view = page.locator(tid('file-view'));
  await view.waitFor({ timeout: 10000 });
  assert((await view.innerText()).includes('println!'), 'the file is shown');
  assert(task.data, 'the task is there');
  await accessible(page, 'workspace');
  await screenshot(page, 'workspace');
});

test('the playground runs one prompt across two backends', async () => {
  await page.goto(`${BASE}/ui/playground`);
  await page.fill(tid('playground-prompt'), 'say hi');
  for (const name of ['claude', 'echo']) {
    await page.locator(tid('playground-backend'), { hasText: name }).locator('input').check();
  }
  await page.click(tid('playground-run'));
  const results = page.locator(tid('playground-result'));
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="playground-result"]').length >= 2,
    null, { timeout: 30000 });
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="playground-result"]')]
    .some((r) => r.innerText.includes('say hi')), null, { timeout: 30000 });
  assert((await results.count()) >= 2, 'two columns');
  await accessible(page, 'playground');
  await screenshot(page, 'playground');
});

test('the node view shows health and a backend that is down', async () => {
  await page.goto(`${BASE}/ui/node`);
  await page.locator(tid('node-health')).waitFor({ timeout: 10000 });
  await page.getByText('down', { exact: false }).first().waitFor({ timeout: 10000 });
  await accessible(page, 'node');
  await screenshot(page, 'node');
});

test('/docs renders markdown, expands a route and runs "try it"', async () => {
  await page.goto(`${BASE}/docs`);
  const ops = page.locator(tid('docs-operation'));
  await ops.first().waitFor({ timeout: 10000 });
  const body = await page.locator('main').innerText();
  assert(!body.includes('**'), 'raw markdown in /docs');
  const health = page.locator(`${tid('docs-operation')}[data-method="get"][data-path="/api/health"]`);
  await health.locator(tid('docs-operation-toggle')).click();
  await health.locator(tid('docs-schema')).first().waitFor({ timeout: 5000 });
  await health.locator(tid('docs-try-send')).click();
  await health.locator(tid('docs-try-status')).filter({ hasText: '200' }).waitFor({ timeout: 10000 });
  await accessible(page, 'docs');
  await screenshot(page, 'docs');
});

test('an expired token sends the user to sign in with a message', async () => {
  const token = await page.evaluate(() => sessionStorage.getItem('gantry.token'));
  const expired = expiredCopy(token);
  await page.evaluate((t) => sessionStorage.setItem('gantry.token', t), expired);
  await page.goto(`${BASE}/ui/projects`);
  await page.waitForURL(/\/ui\/sign-in/, { timeout: 15000 });
  const message = page.locator(tid('error-message'));
  await message.waitFor({ timeout: 10000 });
  assert(/expired/i.test(await message.innerText()), `the message: ${await message.innerText()}`);
  assert(!(await page.evaluate(() => sessionStorage.getItem('gantry.token'))), 'the expired token is kept');
  await signIn(page);
});

test('a revoked token sends the user to sign in with a message', async () => {
  const token = await page.evaluate(() => sessionStorage.getItem('gantry.token'));
  const res = await fetch(`${BASE}/api/auth/logout`, {
    method: 'POST', headers: { authorization: `Bearer ${token}` },
  });
  assert(res.ok, `logout: ${res.status}`);
  await page.goto(`${BASE}/ui/projects`);
  await page.waitForURL(/\/ui\/sign-in/, { timeout: 15000 });
  const message = page.locator(tid('error-message'));
  await message.waitFor({ timeout: 10000 });
  assert((await message.innerText()).trim().length > 0, 'an empty message');
});

test('an API key signs in too, and sign out forgets it', async () => {
  await page.goto(`${BASE}/ui/sign-in`);
  await page.fill(tid('signin-apikey'), API_KEY);
  await page.click(tid('signin-submit'));
  await page.waitForURL((url) => !url.pathname.startsWith('/ui/sign-in'), { timeout: 15000 });
  await page.click(tid('signout'));
  await page.waitForURL(/\/ui\/sign-in/, { timeout: 15000 });
  const stored = await page.evaluate(() => sessionStorage.getItem('gantry.token'));
  assert(!stored, 'the key is still stored');
});

test('a phone-width board in the dark scheme has no horizontal overflow', async () => {
  const phone = await browser.newContext({ viewport: { width: 360, height: 740 }, colorScheme: 'dark' });
  const p = await phone.newPage();
  await signIn(p);
  await p.goto(`${BASE}/ui/projects/${state.project}`);
  await p.locator(tid('task-card')).first().waitFor({ timeout: 10000 });
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert(overflow <= 1, `${overflow}px wider than the screen`);
  await accessible(p, 'board (phone, dark)');
  await screenshot(p, 'board-phone-dark');
  await phone.close();
});

// ---- run ----------------------------------------------------------------------------------

const executable = process.env.GANTRY_CHROMIUM || 'chromium';
browser = await chromium.launch({
  executablePath: executable.includes('/') ? executable : (await import('node:child_process'))
    .execSync(`command -v ${executable}`, { encoding: 'utf8' }).trim(),
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
page = await context.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });

let passed = 0;
let failed = 0;
for (const t of tests) {
  const started = Date.now();
  try {
    await t.fn();
    passed++;
    console.log(`ok     ${t.name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAILED ${t.name}: ${e.message.split('\n')[0]}`);
    try {
      const shown = (await page.locator('main').innerText()).replace(/\s+/g, ' ').slice(0, 300);
      console.log(`       at ${page.url()}, showing: ${shown}`);
    } catch { /* the page may be gone */ }
    try {
      writeFileSync(join(ARTIFACTS, `failed-${passed + failed}.png`), await page.screenshot({ fullPage: true }));
    } catch { /* the page may be gone */ }
  }
}
await browser.close();
if (consoleErrors.length) console.log(`console errors seen: ${consoleErrors.slice(0, 10).join(' | ')}`);
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
