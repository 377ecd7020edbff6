// `podnet lab ui` against a real lab (vxlan, 2 nodes; pods a and c on n1, b on n2; a service web
// with endpoints b and c), served by the bundle (dist/podnet.mjs) on 127.0.0.1:
//   - the API without a browser: /api/topology's shape against the state file (nodes, pods,
//     services with endpoints, links, the VXLAN tunnel up), /api/trace's 400s, Host and method checks;
//   - in Debian's chromium (playwright-core, nothing downloaded; skipped naming the binary when it
//     is missing): every node and pod drawn, a pod added with `lab pod add` appearing live (SSE),
//     a trace a -> b from the page's form whose numbered hops are /api/trace's in order with each
//     hop's deciding step beside it, then n1's route to n2's pod subnet deleted by hand (agent
//     stopped first, restarted in finally) and the page marking n1 as the broken hop with the reason;
//   - SIGTERM closes the server cleanly (exit 0).
// Screenshots: test-artifacts/lab-ui/*.png.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { ensureLabBundle, labCli } from '../helpers/lab.js';
import { netnsWithPrefix } from '../helpers/netns.js';
import type { TraceResult } from '../../src/trace/types.js';
import type { UiTopology } from '../../src/lab/ui/topology.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const PODNET = join(ROOT, 'dist/podnet.mjs');
const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts/lab-ui');
const LAB_DIR = mkdtempSync(join(tmpdir(), 'pnlab-ui-test-'));
const TAG = `u${randomBytes(3).toString('hex')}`;
const browserSkip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (Debian's chromium package: apt-get install --no-install-recommends chromium, or scripts/setup.sh)`;
if (browserSkip) console.log(`# lab-ui: browser tests skipped: ${browserSkip}`);

interface St {
  fabricNs: string;
  nodes: Record<string, { ns: string; ip: string; subnetFile: string }>;
  pods: Record<string, { ns: string; ips: string[]; node: string }>;
}
const state = (): St => JSON.parse(readFileSync(join(LAB_DIR, TAG, 'state.json'), 'utf8')) as St;

function cli(args: string[]): string {
  const r = labCli(LAB_DIR, [...args, '--name', TAG]);
  assert.equal(r.code, 0, `lab ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** The static files of the page are inlined into the bundle: rebuild when one is newer than it. */
function ensureBundleWithPage(): void {
  ensureLabBundle();
  const dir = join(ROOT, 'src/lab/ui/static');
  const built = statSync(PODNET).mtimeMs;
  if (readdirSync(dir).some((f) => statSync(join(dir, f)).mtimeMs > built)) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

let port = 0;
let ui: ChildProcess | undefined;
let uiExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
let uiStderr = '';

function get(path: string, o: { method?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: o.method ?? 'GET', headers: o.headers, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in 20 s`)));
    req.on('error', reject);
    req.end();
  });
}
async function getJson<T>(path: string): Promise<{ status: number; body: T }> {
  const r = await get(path);
  return { status: r.status, body: JSON.parse(r.body) as T };
}

/** Starts `podnet lab ui` from the bundle and waits (deadline 15 s) for it to print its URL. */
async function startUi(): Promise<void> {
  port = await freePort();
  const child = spawn(process.execPath, [PODNET, 'lab', 'ui', '--name', TAG, '--listen', `127.0.0.1:${port}`], { env: { ...process.env, PODNET_LAB_DIR: LAB_DIR }, stdio: ['ignore', 'pipe', 'pipe'] });
  ui = child;
  uiExit = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (uiStderr += d));
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`lab ui printed no URL in 15 s: ${out} ${uiStderr}`)), 15_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes(`http://127.0.0.1:${port}/`)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`lab ui exited (${code}) before listening: ${uiStderr}`));
    });
  });
}

/** Stops the UI child by its PID; resolves with how it exited (deadline 10 s, then SIGKILL). */
async function stopUi(): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  if (!ui || !uiExit || ui.exitCode !== null || ui.signalCode !== null) return uiExit ? await uiExit : undefined;
  process.kill(ui.pid!, 'SIGTERM');
  const r = await Promise.race([uiExit, new Promise<undefined>((res) => setTimeout(() => res(undefined), 10_000))]);
  if (!r) {
    process.kill(ui.pid!, 'SIGKILL');
    return await uiExit;
  }
  return r;
}

before(async () => {
  ensureBundleWithPage();
  cli(['up', '--nodes', '2', '--backend', 'vxlan']);
  cli(['pod', 'add', 'a', '--node', 'n1']);
  cli(['pod', 'add', 'c', '--node', 'n1']);
  cli(['pod', 'add', 'b', '--node', 'n2']);
  cli(['service', 'add', 'web', '--port', '80', '--target', '8080', '--pods', 'b,c']);
  await startUi();
});

after(async () => {
  await stopUi();
  if (existsSync(join(LAB_DIR, TAG))) labCli(LAB_DIR, ['down', '--name', TAG]);
  for (const ns of netnsWithPrefix(`pnlab-${TAG}-`)) spawnSync('ip', ['netns', 'del', ns]);
  rmSync(LAB_DIR, { recursive: true, force: true });
});

describe('lab ui: the API', { timeout: 60_000 }, () => {
  it('/api/topology: every node, pod, service with its endpoints, the links and the VXLAN tunnel, as the state file has them', async () => {
    const st = state();
    const { status, body: t } = await getJson<UiTopology>('/api/topology');
    assert.equal(status, 200);
    assert.equal(t.lab.name, TAG);
    assert.equal(t.lab.backend, 'vxlan');
    assert.equal(t.fabric.ns, st.fabricNs);
    assert.equal(t.fabric.health, 'ok');
    assert.deepEqual(t.racks, []);
    assert.equal(t.router, undefined);
    assert.deepEqual(
      t.nodes.map((n) => [n.name, n.ns, n.ip, n.agent, n.health]),
      ['n1', 'n2'].map((n) => [n, st.nodes[n].ns, st.nodes[n].ip, 'running', 'ok']),
    );
    for (const n of t.nodes) {
      const leased = /PODNET_SUBNET=(\S+)/.exec(readFileSync(st.nodes[n.name].subnetFile, 'utf8'))![1].replace(/\.\d+\//, '.0/');
      assert.deepEqual(n.subnets, [leased]);
    }
    assert.deepEqual(
      t.pods.map((p) => [p.name, p.node, p.ns, p.ips]).sort(),
      Object.entries(st.pods).map(([name, p]) => [name, p.node, p.ns, p.ips]).sort(),
    );
    assert.equal(t.services.length, 1);
    const web = t.services[0];
    assert.equal(web.name, 'web');
    assert.match(web.clusterIP, /^10\.96\./);
    assert.deepEqual(web.ports, ['80/TCP→8080']);
    assert.deepEqual(
      web.endpoints.map((e) => [e.pod, e.ns, e.ip, e.ready]).sort(),
      ['b', 'c'].map((p) => [p, st.pods[p].ns, st.pods[p].ips[0], true]).sort(),
    );
    assert.deepEqual(t.links.map((l) => l.id).sort(), ['pod:a', 'pod:b', 'pod:c', 'underlay:n1', 'underlay:n2']);
    const u1 = t.links.find((l) => l.id === 'underlay:n1')!;
    assert.deepEqual([u1.a, u1.b, u1.bDev], [st.nodes.n1.ns, st.fabricNs, 'v-n1']);
    assert.equal(t.tunnels.length, 1);
    assert.deepEqual({ ...t.tunnels[0] }, { id: 'tunnel:n1:n2', kind: 'vxlan', a: 'n1', b: 'n2', dev: 'podnet.1', vni: 1, port: 8472, ab: true, ba: true, state: 'up' });
    assert.equal(t.roles[st.pods.a.ns], 'pod a');
    assert.equal(t.roles[st.nodes.n2.ns], 'node n2');
  });

  it('/api/trace: the trace of `podnet trace -o json` with each hop\'s deciding step; 400 with {error} for what cannot be traced', async () => {
    const ok = await getJson<TraceResult & { deciding: number[] }>('/api/trace?src=a&dst=b&proto=tcp&port=8080');
    assert.equal(ok.status, 200);
    assert.equal(ok.body.verdict, 'complete');
    assert.deepEqual([ok.body.query.proto, ok.body.query.dport], ['tcp', 8080]);
    const cliTrace = JSON.parse(spawnSync(process.execPath, [PODNET, 'trace', 'a', 'b', '--proto', 'tcp', '--port', '8080', '--name', TAG, '-o', 'json'], { encoding: 'utf8', env: { ...process.env, PODNET_LAB_DIR: LAB_DIR } }).stdout) as TraceResult;
    assert.deepEqual(ok.body.hops.map((h) => h.ns), cliTrace.hops.map((h) => h.ns));
    assert.equal(ok.body.deciding.length, ok.body.hops.length);
    const kinds = ok.body.hops.map((h, i) => h.steps[ok.body.deciding[i]].kind);
    assert.ok(kinds.includes('encap') && kinds.includes('decap'), kinds.join(' '));
    assert.equal(kinds.at(-1), 'deliver');

    for (const [q, re] of [
      ['src=a&dst=nosuchpod', /nosuchpod is no pod or node/],
      ['src=a', /needs src and dst/],
      ['src=a&dst=b&proto=sctp', /proto must be tcp, udp or icmp/],
      ['src=a&dst=b&port=99999', /--port must be an integer 1-65535/],
      ['src=a&dst=b&proto=icmp&port=80', /icmp has no port/],
    ] as const) {
      const r = await getJson<{ error: string }>(`/api/trace?${q}`);
      assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error, re, q);
    }
  });

  it('serves the page and its files itself (CSP self, no CDN); refuses a foreign Host, other methods and unknown paths', async () => {
    const page = await get('/');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /text\/html/);
    assert.match(String(page.headers['content-security-policy']), /script-src 'self'/);
    const refs = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(refs.filter((r) => /^(https?:)?\/\//.test(r)), [], 'nothing from elsewhere');
    for (const [path, type] of [['/app.js', /javascript/], ['/app.css', /text\/css/]] as const) {
      const r = await get(path);
      assert.equal(r.status, 200, path);
      assert.match(String(r.headers['content-type']), type);
      assert.ok(r.body.length > 1000, path);
      assert.doesNotMatch(r.body, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/, `${path} loads nothing from elsewhere`);
    }
    assert.equal((await get('/api/topology', { headers: { host: 'rebind.example:80' } })).status, 403);
    assert.equal((await get('/api/topology', { headers: { host: `localhost:${port}` } })).status, 200);
    assert.equal((await get('/api/trace?src=a&dst=b', { method: 'POST' })).status, 405);
    assert.equal((await get('/nope')).status, 404);
  });

  it('refuses a non-loopback listen address without --allow-remote', () => {
    const r = spawnSync(process.execPath, [PODNET, 'lab', 'ui', '--name', TAG, '--listen', '0.0.0.0:0'], { encoding: 'utf8', env: { ...process.env, PODNET_LAB_DIR: LAB_DIR }, timeout: 10_000 });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /not a loopback address.*--allow-remote/);
  });
});

describe('lab ui: the page in chromium', { skip: browserSkip, timeout: 90_000 }, () => {
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];
  const shot = async (name: string) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  };
  /** The hop badges drawn on the graph, in document (= path) order: [hop index, ns]. */
  const badges = async () => Promise.all((await page.locator('.hop-badge').all()).map(async (b) => [Number(await b.getAttribute('data-hop')), await b.getAttribute('data-ns')] as const));
  const squash = (s: string) => s.replace(/\s+/g, '');
  /** The text lines drawn in an SVG group (not its tooltip). */
  const lines = async (g: Locator) => (await g.locator('text').allTextContents()).join(' ');

  before(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // root needs --no-sandbox; no name but the page's own resolves, so nothing in chromium
      // reaches beyond loopback (playwright already turns off background networking)
      args: ['--no-sandbox', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
    });
    page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`);
    });
    await page.goto(`http://127.0.0.1:${port}/`);
  });
  after(async () => {
    await browser?.close();
  });

  it('draws every node and pod of the lab, the fabric, the tunnel and the service', async () => {
    const st = state();
    await page.locator('#live[data-state="live"]').waitFor({ timeout: 10_000 });
    await page.locator(`[data-ns="${st.pods.b.ns}"][data-kind="pod"]`).waitFor({ timeout: 10_000 });
    for (const [name, n] of Object.entries(st.nodes)) assert.equal(await page.locator(`[data-ns="${n.ns}"][data-kind="node"][data-name="${name}"]`).count(), 1, `node ${name}`);
    for (const [name, p] of Object.entries(st.pods)) assert.equal(await page.locator(`[data-ns="${p.ns}"][data-kind="pod"][data-name="${name}"]`).count(), 1, `pod ${name}`);
    assert.equal(await page.locator('[data-kind="node"]').count(), Object.keys(st.nodes).length);
    assert.equal(await page.locator('[data-kind="pod"]').count(), Object.keys(st.pods).length);
    assert.equal(await page.locator(`[data-ns="${st.fabricNs}"][data-kind="fabric"]`).count(), 1);
    assert.equal(await page.locator('[data-tunnel="tunnel:n1:n2"][data-state="up"]').count(), 1);
    assert.equal(await page.locator('[data-service="web"].service').count(), 1);
    assert.equal(await page.locator('.svc-edge[data-service="web"]').count(), 2, 'an edge to each endpoint');
    assert.match((await page.locator('#lab-name').textContent()) ?? '', new RegExp(TAG));
    await shot('1-topology');
  });

  it('a pod added with `lab pod add` appears without a reload (server-sent events)', async () => {
    const rev = Number(await page.locator('#graph').getAttribute('data-rev'));
    const t0 = Date.now();
    cli(['pod', 'add', 'd', '--node', 'n2']);
    const added = Date.now();
    const ns = state().pods.d.ns;
    await page.locator(`[data-ns="${ns}"][data-kind="pod"][data-name="d"]`).waitFor({ timeout: 5000 });
    const seen = Date.now();
    console.log(`# pod d: lab pod add ${added - t0} ms, drawn ${seen - added} ms after it returned`);
    assert.ok(Number(await page.locator('#graph').getAttribute('data-rev')) > rev);
    assert.equal(await page.locator('[data-kind="pod"]').count(), 4);
    await shot('2-pod-added-live');
  });

  it('a trace a -> b from the form: the hops of /api/trace numbered in order, their links and the tunnel highlighted, each hop\'s deciding step beside it', async () => {
    const st = state();
    await page.fill('#src', 'a');
    await page.fill('#dst', 'b');
    await page.selectOption('#proto', '');
    await page.fill('#port', '');
    await page.click('#trace-btn');
    await page.locator('#verdict[data-verdict="complete"]').waitFor({ timeout: 15_000 });
    const api = (await getJson<TraceResult & { deciding: number[] }>('/api/trace?src=a&dst=b')).body;
    assert.equal(api.verdict, 'complete');
    const drawn = await badges();
    assert.deepEqual(drawn.map(([i]) => i), api.hops.map((_, i) => i), 'one badge per hop, in order');
    assert.deepEqual(drawn.map(([, ns]) => ns), api.hops.map((h) => h.ns), 'the namespaces of the hops in path order');
    assert.equal(drawn[0][1], st.pods.a.ns);
    assert.equal(drawn.at(-1)![1], st.pods.b.ns);
    // the namespaces passed are marked, the links between them and the tunnel are highlighted
    for (const ns of new Set(api.hops.map((h) => h.ns))) assert.match((await page.locator(`[data-key="${ns}"]`).getAttribute('class')) ?? '', /\bon-trace\b/, ns);
    for (const id of ['pod:a', 'underlay:n1', 'underlay:n2', 'pod:b']) assert.match((await page.locator(`[data-link="${id}"]`).getAttribute('class')) ?? '', /\bon-trace\b/, id);
    assert.match((await page.locator('[data-tunnel="tunnel:n1:n2"]').getAttribute('class')) ?? '', /\bon-trace\b/);
    assert.equal(await page.locator(`[data-link="pod:c"].on-trace`).count(), 0, 'pod c is not on the path');
    assert.ok((await page.locator('.trace-seg').count()) >= 4);
    // beside each hop: its deciding step (as wrapped and perhaps shortened on the graph)
    const callouts = await page.locator('.callout').all();
    assert.equal(callouts.length, api.hops.length);
    for (const [i, c] of callouts.entries()) {
      const step = api.hops[i].steps[api.deciding[i]];
      const want = squash(`${i + 1} ${step.kind}: ${step.text}`);
      const got = squash(await lines(c)).replace(/…$/, '');
      assert.equal(await c.getAttribute('data-ns'), api.hops[i].ns);
      assert.ok(got.length > 10 && want.startsWith(got.slice(0, -1)), `hop ${i + 1}: ${got} is not the start of ${want}`);
    }
    const encapHop = api.deciding.findIndex((d, i) => api.hops[i].steps[d].kind === 'encap');
    assert.match(squash(await lines(callouts[encapHop])), /encap:VXLANpodnet\.1/);
    assert.equal(await page.locator('.hop-badge.broken').count(), 0);
    assert.equal(await page.locator('#hops > li.hop').count(), api.hops.length);
    await shot('3-trace-complete');
  });

  it("broken: n1's route to n2's pod subnet deleted by hand — the page marks n1 as the broken hop with the reason", async () => {
    const st = state();
    const subnet = /PODNET_SUBNET=(\S+)/.exec(readFileSync(st.nodes.n2.subnetFile, 'utf8'))![1].replace(/\.\d+\//, '.0/');
    // the agent puts the route back within a resync: stop it so the breakage stays
    cli(['agent', 'stop', 'n1']);
    try {
      execFileSync('ip', ['-n', st.nodes.n1.ns, 'route', 'del', subnet]);
      await page.click('#trace-btn');
      await page.locator('#verdict[data-verdict="broken"]').waitFor({ timeout: 15_000 });
      const api = (await getJson<TraceResult>('/api/trace?src=a&dst=b')).body;
      assert.equal(api.verdict, 'broken');
      const brokenNs = api.hops[api.broken!.hop].ns;
      assert.equal(brokenNs, st.nodes.n1.ns);
      assert.match(api.broken!.reason, new RegExp(`no route for node n2's pod subnet ${subnet.replace(/\./g, '\\.')}`));
      assert.deepEqual((await badges()).map(([, ns]) => ns), api.hops.map((h) => h.ns));
      const bad = page.locator('.hop-badge.broken');
      assert.equal(await bad.count(), 1);
      assert.equal(await bad.getAttribute('data-ns'), st.nodes.n1.ns);
      assert.equal(Number(await bad.getAttribute('data-hop')), api.broken!.hop);
      assert.match((await page.locator(`[data-key="${st.nodes.n1.ns}"]`).getAttribute('class')) ?? '', /\bbroken\b/);
      const callout = page.locator('.callout.broken');
      assert.equal(await callout.count(), 1);
      assert.equal(await callout.getAttribute('data-ns'), st.nodes.n1.ns);
      assert.ok(squash(await lines(callout)).includes(squash(`no route for node n2's pod subnet ${subnet}`)), 'the reason beside the broken hop');
      assert.ok(squash((await page.locator('#verdict').textContent()) ?? '').includes(squash(api.broken!.reason)), 'the whole reason in the panel');
      assert.ok(((await page.locator('#verdict').textContent()) ?? '').includes(api.broken!.command!));
      // nothing drawn past the broken hop; the live re-read shows the tunnel one-way
      assert.equal(await page.locator('[data-link="underlay:n2"].on-trace').count(), 0);
      await page.locator('[data-tunnel="tunnel:n1:n2"][data-state="one-way"]').waitFor({ timeout: 6000 });
      await shot('4-trace-broken');
    } finally {
      cli(['agent', 'start', 'n1']);
    }
    // the restarted agent puts the route back: the page's tunnel is up again
    await page.locator('[data-tunnel="tunnel:n1:n2"][data-state="up"]').waitFor({ timeout: 15_000 });
  });

  it('the page raised no script errors', () => {
    assert.deepEqual(pageErrors, []);
  });
});

describe('lab ui: shutdown', { timeout: 20_000 }, () => {
  it('SIGTERM closes the server (open event streams too) and exits 0', async () => {
    // an event stream held open: close must end it, not wait for it
    const stream = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/api/events' }, resolve).on('error', reject).end();
    });
    const ended = new Promise<void>((resolve) => stream.on('end', () => resolve()).on('close', () => resolve()).resume());
    const t0 = Date.now();
    const r = await stopUi();
    await ended;
    assert.deepEqual(r, { code: 0, signal: null }, uiStderr);
    assert.match(uiStderr, /SIGTERM: stopped/);
    assert.ok(Date.now() - t0 < 5000, `closed in ${Date.now() - t0} ms`);
  });
});
