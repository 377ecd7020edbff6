// `podnet proxy render|sync|cleanup` as a user runs them: the built CLI, a services file, a netns.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureLabBundle } from '../helpers/lab.js';
import { NetnsFixture, nsExec } from '../helpers/netns.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'dist/podnet.mjs');
const dir = mkdtempSync(join(tmpdir(), 'pnproxy-cli-'));
const file = join(dir, 'services.json');

function doc(extraIP?: string) {
  const svc = (name: string, ip: string, port: number) => ({ kind: 'Service', metadata: { name, namespace: 'default' }, spec: { clusterIP: ip, ports: [{ port, targetPort: 8080 }] } });
  const items: unknown[] = [
    svc('web', '10.96.0.10', 80),
    svc('bad', '10.96.0.300', 80),
    { kind: 'EndpointSlice', metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.244.1.2'] }], ports: [{ port: 8080 }] },
  ];
  if (extraIP) items.push(svc('more', extraIP, 81));
  return { kind: 'List', items };
}

function run(args: string[], ns?: string) {
  const argv = ns ? ['ip', 'netns', 'exec', ns, process.execPath, CLI, ...args] : [process.execPath, CLI, ...args];
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

describe('podnet proxy CLI', { timeout: 120_000 }, () => {
  const nets = new NetnsFixture();
  let ns = '';
  before(() => {
    ensureLabBundle();
    writeFileSync(file, JSON.stringify(doc()));
    ns = nets.add('pxcli');
  });
  after(() => {
    nets.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('has --help on every command', () => {
    for (const c of [['proxy'], ['proxy', 'render'], ['proxy', 'sync'], ['proxy', 'cleanup']]) {
      const r = run([...c, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Usage: podnet proxy/);
    }
  });

  it('render prints the ruleset and names rejected services; --strict makes them an error', () => {
    const r = run(['proxy', 'render', '--services', file, '--node-ip', '192.0.2.1', '--cluster-cidr', '10.244.0.0/16']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /table inet podnet-proxy/);
    assert.match(r.stdout, /10\.96\.0\.10 \. tcp \. 80 : goto lb-1-int/);
    assert.match(r.stderr, /rejected: service default\/bad: spec\.clusterIP: "10\.96\.0\.300" is not a valid IP address/);
    assert.equal(run(['proxy', 'render', '--services', file, '--strict']).code, 1);
    const j = JSON.parse(run(['proxy', 'render', '--services', file, '-o', 'json', '--node-ip', '192.0.2.1']).stdout);
    assert.equal(j.ports.length, 1);
    assert.deepEqual(j.problems.map((p: { field: string }) => p.field), ['spec.clusterIP']);
    const bad = run(['proxy', 'render', '--services', join(dir, 'missing.json')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /missing\.json/);
  });

  it('sync --once applies in the current netns, cleanup removes it', () => {
    const r = run(['proxy', 'sync', '--once', '--services', file, '-o', 'json'], ns);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.kind, 'full');
    assert.deepEqual(j.rejected, ['service default/bad: spec.clusterIP: "10.96.0.300" is not a valid IP address']);
    assert.match(nsExec(ns, ['nft', 'list', 'map', 'inet', 'podnet-proxy', 'svc4']), /10\.96\.0\.10 \. tcp \. 80/);
    const c = run(['proxy', 'cleanup', '-o', 'json'], ns);
    assert.equal(c.code, 0, c.stdout + c.stderr);
    assert.equal(nsExec(ns, ['nft', 'list', 'tables']).includes('podnet-proxy'), false);
  });

  it('sync keeps the rules in step with the file', async () => {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, CLI, 'proxy', 'sync', '--services', file], { stdio: 'ignore' });
    try {
      // a service with endpoints is in svc4; one without (10.96.0.11 here) in noep4
      const has = (ip: string) => nsExec(ns, ['nft', 'list', 'table', 'inet', 'podnet-proxy'], { allowFail: true }).includes(`${ip} . tcp`);
      const wait = async (ip: string, want: boolean) => {
        for (let i = 0; i < 100 && has(ip) !== want; i++) await new Promise((r) => setTimeout(r, 100));
        assert.equal(has(ip), want, `${ip} in svc4`);
      };
      await wait('10.96.0.10', true);
      // replaced the way editors and config managers do it: write aside, rename over
      writeFileSync(join(dir, 'next.json'), JSON.stringify(doc('10.96.0.11')));
      renameSync(join(dir, 'next.json'), file);
      await wait('10.96.0.11', true);
      assert.match(nsExec(ns, ['nft', 'list', 'map', 'inet', 'podnet-proxy', 'noep4']), /10\.96\.0\.11 \. tcp \. 81 : goto reject-no-endpoints/);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    run(['proxy', 'cleanup'], ns);
  });
});
