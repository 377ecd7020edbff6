// `podnet cni install`, as an install container runs it: executables and conflist in place,
// atomically, and the installed client answers as a plugin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../helpers/cni.js';

const ROOT = new URL('../../', import.meta.url).pathname;

test('podnet cni install writes podnet, podnet-ipam and a conflist; the client answers VERSION and works standalone', () => {
  ensureBuilt();
  const tmp = mkdtempSync(join(tmpdir(), 'pnt-install-'));
  try {
    const bin = join(tmp, 'bin');
    const conf = join(tmp, 'net.d');
    const out = execFileSync(process.execPath, [`${ROOT}dist/podnet.mjs`, 'cni', 'install', '--bin-dir', bin, '--conf-dir', conf, '--subnet', '10.82.0.0/24', '-o', 'json'], { encoding: 'utf8' });
    assert.equal(JSON.parse(out).written.length, 3);
    for (const p of ['podnet', 'podnet-ipam']) assert.equal(statSync(join(bin, p)).mode & 0o777, 0o755);
    assert.deepEqual(readdirSync(conf), ['10-podnet.conflist'], 'no temp files left');
    const list = JSON.parse(readFileSync(join(conf, '10-podnet.conflist'), 'utf8'));
    assert.equal(list.plugins[0].type, 'podnet');
    assert.deepEqual(list.plugins[0].ipam.ranges, [[{ subnet: '10.82.0.0/24' }]]);
    const v = spawnSync(join(bin, 'podnet'), [], { env: { CNI_COMMAND: 'VERSION', PATH: process.env.PATH }, input: '{"cniVersion":"1.0.0"}', encoding: 'utf8' });
    assert.equal(v.status, 0);
    assert.ok(JSON.parse(v.stdout).supportedVersions.includes('1.1.0'));
    // STATUS with no agent: the client runs the plugin itself
    const s = spawnSync(join(bin, 'podnet-ipam'), [], {
      env: { CNI_COMMAND: 'STATUS', CNI_PATH: bin, PATH: process.env.PATH, PODNET_SOCKET: join(tmp, 'none.sock'), PODNET_CNI_LOG: join(tmp, 'log') },
      input: JSON.stringify({ cniVersion: '1.1.0', name: 'inst', type: 'podnet-ipam', ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.82.0.0/24' }]], dataDir: join(tmp, 'ipam') } }),
      encoding: 'utf8',
    });
    assert.equal(s.status, 0, s.stdout + s.stderr);
    // the per-call log line
    const line = JSON.parse(readFileSync(join(tmp, 'log'), 'utf8').trim().split('\n').pop()!);
    assert.equal(line.cmd, 'STATUS');
    assert.equal(line.subsys, 'cni');
    // --help lists the commands
    const help = execFileSync(process.execPath, [`${ROOT}dist/podnet.mjs`, '--help'], { encoding: 'utf8' });
    for (const c of ['agent', 'cni', 'demo']) assert.match(help, new RegExp(`^\\s+${c}\\b`, 'm'));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
