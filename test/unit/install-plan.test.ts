// `podnet install`'s plan for given options (pure), the source scan's dependency closure over
// a made-up node_modules, and the apply/uninstall bookkeeping in temp directories.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { planInstall, renderUnit, systemdWord, unitExecStart, type InstallOptions } from '../../src/install/plan.js';
import { scanSource, type SourceScan } from '../../src/install/source.js';
import { applyInstall, InstallRefused, NotInstalled, readManifest, uninstall } from '../../src/install/apply.js';

const ROOT = new URL('../../', import.meta.url).pathname.replace(/\/$/, '');

const scan: SourceScan = {
  root: '/src/podnet',
  name: 'podnet',
  version: '0.1.0',
  dist: [
    { rel: 'podnet-cni-client', mode: 0o755 },
    { rel: 'podnet-cni.mjs', mode: 0o755 },
    { rel: 'podnet-tund', mode: 0o755 },
    { rel: 'podnet.mjs', mode: 0o755 },
  ],
  deps: [
    { name: '@koromix/koffi-linux-x64', version: '3.3.4', dir: '/src/podnet/node_modules/@koromix/koffi-linux-x64', to: 'node_modules/@koromix/koffi-linux-x64', files: [{ rel: 'index.js', mode: 0o644 }, { rel: 'linux_x64/koffi.node', mode: 0o644 }, { rel: 'package.json', mode: 0o644 }] },
    { name: 'koffi', version: '3.3.4', dir: '/src/podnet/node_modules/koffi', to: 'node_modules/koffi', files: [{ rel: 'index.cjs', mode: 0o644 }, { rel: 'package.json', mode: 0o644 }] },
  ],
};

const opts: InstallOptions = {
  prefix: '/opt/podnet',
  cniBinDir: '/opt/cni/bin',
  cniConfDir: '/etc/cni/net.d',
  systemdDir: '/etc/systemd/system',
  node: '/usr/bin/node',
  socket: '/run/podnet/podnet.sock',
  network: 'podnet',
  mode: 'bridge',
  cniVersions: ['1.0.0', '1.1.0'],
};

test('the plan: the prefix is a package root with the bundles, natives and dependencies; CNI, conflist and unit point at it', () => {
  const p = planInstall(scan, opts);
  const by = new Map(p.entries.map((e) => [e.path, e]));
  assert.equal(p.manifest, '/opt/podnet/install-manifest.json');
  assert.deepEqual(p.warnings, []);
  const expect: [string, number, string, string?][] = [
    ['/opt/podnet/bin/podnet', 0o755, 'launcher'],
    ['/opt/podnet/lib/package.json', 0o644, 'package'],
    ['/opt/podnet/lib/dist/podnet.mjs', 0o755, 'bundle', '/src/podnet/dist/podnet.mjs'],
    ['/opt/podnet/lib/dist/podnet-cni.mjs', 0o755, 'bundle', '/src/podnet/dist/podnet-cni.mjs'],
    ['/opt/podnet/lib/dist/podnet-cni-client', 0o755, 'native', '/src/podnet/dist/podnet-cni-client'],
    ['/opt/podnet/lib/dist/podnet-tund', 0o755, 'native', '/src/podnet/dist/podnet-tund'],
    ['/opt/podnet/lib/node_modules/koffi/index.cjs', 0o644, 'dependency', '/src/podnet/node_modules/koffi/index.cjs'],
    ['/opt/podnet/lib/node_modules/@koromix/koffi-linux-x64/linux_x64/koffi.node', 0o644, 'native', '/src/podnet/node_modules/@koromix/koffi-linux-x64/linux_x64/koffi.node'],
    ['/opt/cni/bin/.podnet-client.conf', 0o644, 'cni'],
    ['/opt/cni/bin/podnet', 0o755, 'cni', '/src/podnet/dist/podnet-cni-client'],
    ['/opt/cni/bin/podnet-ipam', 0o755, 'cni', '/src/podnet/dist/podnet-cni-client'],
    ['/etc/cni/net.d/10-podnet.conflist', 0o644, 'cni-conf'],
    ['/etc/systemd/system/podnet-agent.service', 0o644, 'systemd'],
  ];
  for (const [path, mode, role, from] of expect) {
    const e = by.get(path);
    assert.ok(e, `${path} planned`);
    assert.equal(e.mode, mode, path);
    assert.equal(e.role, role, path);
    assert.equal(e.from, from, path);
  }
  assert.equal(p.entries.length, 4 + 2 + 5 + 3 + 2, 'nothing else');
  // nothing written ever names the source: it may be deleted after the install
  for (const e of p.entries) if (e.content !== undefined) assert.ok(!e.content.includes('/src/podnet'), `${e.path} names the source`);
  assert.equal(by.get('/opt/podnet/bin/podnet')!.content, "#!/bin/sh\n# podnet 0.1.0, written by `podnet install`: the Node it ran with and the installed bundle.\nexec '/usr/bin/node' '/opt/podnet/lib/dist/podnet.mjs' \"$@\"\n");
  assert.equal(by.get('/opt/cni/bin/.podnet-client.conf')!.content, 'socket=/run/podnet/podnet.sock\nnode=/usr/bin/node\nbundle=/opt/podnet/lib/dist/podnet-cni.mjs\n');
  assert.equal(JSON.parse(by.get('/opt/podnet/lib/package.json')!.content!).name, 'podnet');
  const list = JSON.parse(by.get('/etc/cni/net.d/10-podnet.conflist')!.content!);
  assert.equal(list.plugins[0].type, 'podnet');
  assert.equal(list.plugins[0].ipam.subnetFile, '/run/podnet/subnet.env');
  const unit = by.get('/etc/systemd/system/podnet-agent.service')!.content!;
  assert.deepEqual(unitExecStart(unit), ['/opt/podnet/bin/podnet', 'agent']);
  assert.match(unit, /^Restart=on-failure$/m);
  assert.match(unit, /^EnvironmentFile=-\/etc\/default\/podnet-agent$/m);
  assert.match(unit, /^WantedBy=multi-user.target$/m);
});

test('the plan without the compiled client, tund or a koffi binary: shell clients and warnings; options change the conflist and unit', () => {
  const bare: SourceScan = { ...scan, dist: scan.dist.filter((f) => f.rel.endsWith('.mjs')), deps: [scan.deps[1]] };
  const p = planInstall(bare, { ...opts, cniConfDir: undefined, systemdDir: undefined, socket: '/run/x/agent.sock' });
  const cni = p.entries.filter((e) => e.role === 'cni');
  assert.deepEqual(cni.map((e) => e.path), ['/opt/cni/bin/podnet', '/opt/cni/bin/podnet-ipam']);
  for (const e of cni) {
    assert.equal(e.from, undefined);
    assert.match(e.content!, /^bundle='\/opt\/podnet\/lib\/dist\/podnet-cni\.mjs'$/m);
    assert.match(e.content!, /^node='\/usr\/bin\/node'$/m);
    assert.match(e.content!, /PODNET_SOCKET:-'\/run\/x\/agent.sock'/);
  }
  assert.ok(!p.entries.some((e) => e.role === 'cni-conf' || e.role === 'systemd'));
  assert.equal(p.warnings.length, 3, p.warnings.join('\n'));
  assert.ok(p.warnings.some((w) => w.includes('podnet-tund')));
  assert.ok(p.warnings.some((w) => w.includes('podnet-cni-client')));
  assert.ok(p.warnings.some((w) => w.includes('koffi native binary')));
  // --shell-client with the compiled one there: no warning for it
  assert.ok(planInstall(scan, { ...opts, shellClient: true }).entries.every((e) => e.role !== 'cni' || e.from === undefined));
  assert.deepEqual(planInstall(scan, { ...opts, shellClient: true }).warnings, []);
  const routed = planInstall(scan, { ...opts, mode: 'routed', subnet: '10.9.0.0/24', network: 'n2' }).entries.find((e) => e.role === 'cni-conf')!;
  const l = JSON.parse(routed.content!);
  assert.equal(l.name, 'n2');
  assert.equal(l.plugins[0].mode, 'routed');
  assert.deepEqual(l.plugins[0].ipam.ranges, [[{ subnet: '10.9.0.0/24' }]]);
});

test('unit ExecStart: a non-default socket is passed; odd paths are quoted and escaped for systemd and read back', () => {
  assert.deepEqual(unitExecStart(renderUnit({ launcher: '/opt/podnet/bin/podnet', socket: '/run/p/s.sock', version: '1' })), ['/opt/podnet/bin/podnet', 'agent', '--socket', '/run/p/s.sock']);
  const odd = '/opt/my pod%net$x/bin/podnet';
  assert.equal(systemdWord(odd), '"/opt/my pod%%net$$x/bin/podnet"');
  assert.equal(systemdWord('/plain/path'), '/plain/path');
  assert.deepEqual(unitExecStart(renderUnit({ launcher: odd, socket: '/run/podnet/podnet.sock', version: '1' })), [odd, 'agent']);
});

test('the plan refuses relative paths, line breaks and overlapping destinations', () => {
  assert.throws(() => planInstall(scan, { ...opts, prefix: 'opt/podnet' }), /--prefix: not an absolute path/);
  assert.throws(() => planInstall(scan, { ...opts, cniBinDir: '/opt/cni\n/bin' }), /--cni-bin-dir: path with a line break/);
  assert.throws(() => planInstall(scan, { ...opts, cniBinDir: '/opt/podnet/bin' }), /two files of the install would be written to \/opt\/podnet\/bin\/podnet/);
});

function put(path: string, text: string, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  chmodSync(path, mode);
}

test('the scan: dist files, the dependency closure as Node resolves it (nested, hoisted, optional missing), errors for a missing dependency', () => {
  const t = mkdtempSync(join(tmpdir(), 'pnt-scan-'));
  try {
    const r = join(t, 'pkg');
    put(join(r, 'package.json'), JSON.stringify({ name: 'podnet', version: '9.9.9', dependencies: { a: '1', koffi: '3' }, devDependencies: { dev: '1' } }));
    put(join(r, 'dist/podnet.mjs'), 'x', 0o755);
    put(join(r, 'dist/podnet-cni.mjs'), 'x', 0o755);
    put(join(r, 'dist/notes.txt'), 'x');
    // a needs b@2 (nested in a) and c (hoisted); c needs b (the hoisted b@1)
    put(join(r, 'node_modules/a/package.json'), JSON.stringify({ name: 'a', version: '1.0.0', dependencies: { b: '2', c: '1' } }));
    put(join(r, 'node_modules/a/lib/a.js'), 'a');
    put(join(r, 'node_modules/a/node_modules/b/package.json'), JSON.stringify({ name: 'b', version: '2.0.0' }));
    put(join(r, 'node_modules/a/node_modules/.bin/x'), 'x', 0o755);
    put(join(r, 'node_modules/b/package.json'), JSON.stringify({ name: 'b', version: '1.0.0' }));
    put(join(r, 'node_modules/c/package.json'), JSON.stringify({ name: 'c', version: '1.0.0', dependencies: { b: '1' } }));
    put(join(r, 'node_modules/c/bin/c.sh'), 'c', 0o755);
    put(join(r, 'node_modules/dev/package.json'), JSON.stringify({ name: 'dev', version: '1.0.0' }));
    put(join(r, 'node_modules/koffi/package.json'), JSON.stringify({ name: 'koffi', version: '3.3.4', optionalDependencies: { '@koromix/koffi-linux-x64': '3.3.4', '@koromix/koffi-darwin-arm64': '3.3.4' } }));
    put(join(r, 'node_modules/@koromix/koffi-linux-x64/package.json'), JSON.stringify({ name: '@koromix/koffi-linux-x64', version: '3.3.4' }));
    put(join(r, 'node_modules/@koromix/koffi-linux-x64/linux_x64/koffi.node'), 'ELF');
    const s = scanSource(r);
    assert.equal(s.version, '9.9.9');
    assert.deepEqual(s.dist.map((f) => [f.rel, f.mode]), [['notes.txt', 0o644], ['podnet-cni.mjs', 0o755], ['podnet.mjs', 0o755]]);
    assert.deepEqual(s.deps.map((d) => [d.to, d.version]), [
      ['node_modules/@koromix/koffi-linux-x64', '3.3.4'],
      ['node_modules/a', '1.0.0'],
      ['node_modules/a/node_modules/b', '2.0.0'],
      ['node_modules/b', '1.0.0'],
      ['node_modules/c', '1.0.0'],
      ['node_modules/koffi', '3.3.4'],
    ]);
    const a = s.deps.find((d) => d.to === 'node_modules/a')!;
    assert.deepEqual(a.files.map((f) => f.rel), ['lib/a.js', 'package.json'], "a's own node_modules is not a's files");
    assert.deepEqual(s.deps.find((d) => d.to === 'node_modules/c')!.files.map((f) => [f.rel, f.mode]), [['bin/c.sh', 0o755], ['package.json', 0o644]]);
    rmSync(join(r, 'node_modules/c'), { recursive: true });
    assert.throws(() => scanSource(r), /a@1.0.0 depends on c, which is not installed/);
    rmSync(join(r, 'dist/podnet-cni.mjs'));
    assert.throws(() => scanSource(r), /podnet-cni.mjs is missing: run `npm run build` first/);
  } finally {
    rmSync(t, { recursive: true, force: true });
  }
});

test("the scan of this checkout: koffi and this platform's koffi binary are in the closure, dev dependencies are not", () => {
  const s = scanSource(ROOT);
  const names = s.deps.map((d) => d.name);
  for (const n of ['koffi', 'etcd3', `@koromix/koffi-${process.platform}-${process.arch}`]) assert.ok(names.includes(n), n);
  for (const n of ['typescript', 'esbuild', 'tsx']) assert.ok(!names.includes(n), n);
  const bin = s.deps.find((d) => d.name === `@koromix/koffi-${process.platform}-${process.arch}`)!;
  assert.ok(bin.files.some((f) => f.rel.endsWith('.node')));
});

function miniSource(t: string): SourceScan {
  const r = join(t, 'src');
  put(join(r, 'package.json'), JSON.stringify({ name: 'podnet', version: '0.1.0' }));
  put(join(r, 'dist/podnet.mjs'), 'bundle', 0o755);
  put(join(r, 'dist/podnet-cni.mjs'), 'cni', 0o755);
  return scanSource(r);
}

test('apply and uninstall: manifest with hashes and created dirs; foreign and changed files refuse; reinstall replaces; uninstall removes exactly that', () => {
  const t = mkdtempSync(join(tmpdir(), 'pnt-apply-'));
  try {
    const src = miniSource(t);
    mkdirSync(join(t, 'bin'));
    put(join(t, 'bin/loopback'), 'theirs', 0o755);
    const o: InstallOptions = { ...opts, prefix: join(t, 'opt/podnet'), cniBinDir: join(t, 'bin'), cniConfDir: join(t, 'etc/net.d'), systemdDir: join(t, 'sd') };
    const plan = planInstall(src, o);
    const r = applyInstall(plan, { source: src.root });
    assert.deepEqual(r.dirsCreated, [join(t, 'opt'), join(t, 'opt/podnet'), join(t, 'opt/podnet/bin'), join(t, 'opt/podnet/lib'), join(t, 'opt/podnet/lib/dist'), join(t, 'etc'), join(t, 'etc/net.d'), join(t, 'sd')]);
    const m = readManifest(o.prefix)!;
    assert.equal(m.complete, true);
    assert.equal(m.files.length, plan.entries.length);
    assert.ok(m.files.every((f) => /^[0-9a-f]{64}$/.test(f.sha256)));
    // again: ours and unchanged, so replaced in place
    assert.equal(applyInstall(plan, { source: src.root }).replaced.length, plan.entries.length);
    // a changed file refuses the reinstall and the uninstall; nothing is touched
    put(join(t, 'etc/net.d/10-podnet.conflist'), '{}');
    assert.throws(() => applyInstall(plan, { source: src.root }), (e: unknown) => e instanceof InstallRefused && /changed since it was installed/.test(e.message));
    assert.throws(() => uninstall(o.prefix), (e: unknown) => e instanceof InstallRefused && e.paths.length === 1);
    assert.ok(existsSync(join(t, 'opt/podnet/bin/podnet')));
    // a reinstall without the conflist removes the stale one (forced: it changed)
    const noConf = planInstall(src, { ...o, cniConfDir: undefined });
    assert.deepEqual(applyInstall(noConf, { force: true, source: src.root }).removedStale, [join(t, 'etc/net.d/10-podnet.conflist')]);
    // a file of someone else's in a directory the install created keeps that directory
    put(join(t, 'sd/other.service'), 'x');
    const u = uninstall(o.prefix);
    assert.deepEqual(u.dirsKept, [join(t, 'sd')]);
    assert.ok(u.dirsRemoved.includes(join(t, 'opt')) && u.dirsRemoved.includes(join(t, 'etc')));
    assert.ok(!existsSync(join(t, 'opt')));
    assert.equal(readFileSync(join(t, 'bin/loopback'), 'utf8'), 'theirs');
    assert.ok(existsSync(join(t, 'sd/other.service')));
    assert.ok(!existsSync(join(t, 'bin/podnet')));
    assert.throws(() => uninstall(o.prefix), NotInstalled);
    // a foreign file where the install writes refuses it, unless forced
    put(join(t, 'bin/podnet'), 'an older podnet cni install', 0o755);
    assert.throws(() => applyInstall(plan, { source: src.root }), (e: unknown) => e instanceof InstallRefused && /bin\/podnet \(not written by podnet install\)/.test(e.message));
    assert.ok(!existsSync(join(t, 'opt')), 'refused before writing anything');
    assert.deepEqual(applyInstall(plan, { force: true, source: src.root }).replaced, [join(t, 'bin/podnet')]);
    uninstall(o.prefix);
  } finally {
    rmSync(t, { recursive: true, force: true });
  }
});
