// Error classification, name validation and netns argv construction.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KernelError, classifyKernelMessage, cleanStderr, isExists, isNotFound, run } from '../../src/kernel/exec.js';
import { iprouteArgv, netnsFromPath, nsExecArgv, validateIfName, validateNetnsName } from '../../src/kernel/netns.js';
import { nftDetail } from '../../src/kernel/nft.js';

describe('classifyKernelMessage', () => {
  const cases: Array<[string, string]> = [
    ['Cannot find device "nope"', 'not-found'],
    ['RTNETLINK answers: No such process', 'not-found'],
    ['RTNETLINK answers: No such file or directory', 'not-found'],
    ['Error: ipv4: Address not found.', 'not-found'],
    ['RTNETLINK answers: Cannot assign requested address', 'not-found'],
    ['Error: FIB table does not exist.', 'not-found'],
    ['Device "x" does not exist.', 'not-found'],
    ['RTNETLINK answers: File exists', 'exists'],
    ['Error: ipv4: Address already assigned.', 'exists'],
    ['RTNETLINK answers: Device or resource busy', 'busy'],
    ['RTNETLINK answers: Operation not supported', 'unsupported'],
    ['Error: Unknown device type.', 'unsupported'],
    ['Error: argument "x" is wrong: invalid mtu', 'invalid'],
    ['RTNETLINK answers: Invalid argument', 'invalid'],
    ['/dev/stdin:1:1-3: Error: syntax error, unexpected junk', 'invalid'],
    ['Error: Nexthop device is not up.', 'other'],
  ];
  for (const [msg, kind] of cases) it(`${msg} → ${kind}`, () => assert.equal(classifyKernelMessage(msg), kind));
});

describe('KernelError', () => {
  it('carries argv, exit code, stderr, op and kind, and says what was attempted and what the kernel said', () => {
    const e = new KernelError({ argv: ['ip', '-batch', '-'], exitCode: 1, stderr: 'Cannot find device "x"\nCommand failed -:2\n', op: 'addr-add 10.0.0.1/24 dev x' });
    assert.equal(e.name, 'KernelError');
    assert.equal(e.kind, 'not-found');
    assert.equal(e.exitCode, 1);
    assert.equal(e.op, 'addr-add 10.0.0.1/24 dev x');
    assert.equal(e.message, 'addr-add 10.0.0.1/24 dev x: Cannot find device "x" [ip -batch -, exit 1]');
    assert.ok(e instanceof Error);
    assert.ok(isNotFound(e) && !isExists(e));
    assert.ok(!isNotFound(new Error('Cannot find device')));
    // recognised by shape, so a second copy of the module still works
    assert.ok(isExists({ name: 'KernelError', kind: 'exists' }));
  });

  it('drops usage dumps and batch notes from the detail', () => {
    assert.equal(cleanStderr('vxlan: unknown command "x"?\nUsage: ... vxlan id VNI\n  [ local ADDR ]\nCommand failed -:1\n'), 'vxlan: unknown command "x"?');
    assert.equal(nftDetail('/dev/stdin:2:5-9: Error: syntax error\nadd rule x\n    ^^^^^\n'), '/dev/stdin:2:5-9: Error: syntax error | add rule x');
  });

  it('run() reports a missing program as unsupported with an install hint', async () => {
    await assert.rejects(run(['podnet-no-such-tool-xyz']), (e) => e instanceof KernelError && e.kind === 'unsupported' && /command not found/.test(e.message));
    await assert.rejects(run(['sh', '-c', 'echo "RTNETLINK answers: File exists" >&2; exit 2']), (e) => isExists(e) && (e as KernelError).exitCode === 2);
    assert.equal(await run(['cat'], { input: 'hi' }), 'hi');
  });
});

describe('netns references', () => {
  it('netnsFromPath: empty → current, slash → path, else name', () => {
    assert.deepEqual(netnsFromPath(''), { kind: 'current' });
    assert.deepEqual(netnsFromPath(undefined), { kind: 'current' });
    assert.deepEqual(netnsFromPath('/var/run/netns/cni-1'), { kind: 'path', path: '/var/run/netns/cni-1' });
    assert.deepEqual(netnsFromPath('cni-1'), { kind: 'name', name: 'cni-1' });
  });

  it('builds argv: ip -n for names, nsenter for paths and for non-iproute tools', () => {
    assert.deepEqual(iprouteArgv({ kind: 'name', name: 'a' }, 'ip', ['-j', 'link']), ['ip', '-n', 'a', '-j', 'link']);
    assert.deepEqual(iprouteArgv({ kind: 'path', path: '/proc/1/ns/net' }, 'bridge', ['fdb']), ['nsenter', '--net=/proc/1/ns/net', 'bridge', 'fdb']);
    assert.deepEqual(iprouteArgv({ kind: 'current' }, 'ip', ['link']), ['ip', 'link']);
    assert.deepEqual(nsExecArgv({ kind: 'name', name: 'a' }, ['nft', '-f', '-']), ['nsenter', '--net=/run/netns/a', 'nft', '-f', '-']);
    assert.deepEqual(nsExecArgv({ kind: 'current' }, ['sysctl']), ['sysctl']);
    assert.throws(() => iprouteArgv({ kind: 'name', name: '../x' }, 'ip', []), KernelError);
    assert.throws(() => iprouteArgv({ kind: 'path', path: '/run/netns/a b' }, 'ip', []), KernelError);
  });

  it('validates interface and netns names', () => {
    for (const ok of ['eth0', 'a', 'veth1234567890a', 'br-x_y.z', 'é']) validateIfName(ok);
    for (const bad of ['', 'sixteen-chars-xx', 'a/b', 'a:b', 'a b', 'a\tb', '.', '..', 'a"b', 'a#b']) {
      assert.throws(() => validateIfName(bad), (e) => e instanceof KernelError && e.kind === 'invalid', JSON.stringify(bad));
    }
    assert.throws(() => validateIfName('ééééééééé'), /1\.\.15 bytes/);
    validateNetnsName('cni-12_ab.c');
    for (const bad of ['', 'a b', 'a/b', '..', 'x$y']) assert.throws(() => validateNetnsName(bad), KernelError, bad);
  });
});
