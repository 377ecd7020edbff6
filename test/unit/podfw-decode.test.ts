// The netlink PodFirewall reads hostPort elements back from the kernel's bytes: keys and data of
// concatenations padded to 4 bytes per part, comments in libnftnl's udata TLVs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { commentUdata, valueBytes } from '../../src/kernel/netlink/nft-elements.js';
import { parseSetElements, udataComment } from '../../src/kernel/netlink/nft-read.js';
import { decodeHairpin, decodeHostportElement } from '../../src/cni/podfw/netlink.js';

test('hostPort map elements decode from the bytes the writer encodes (v4, v6, with hostIP)', () => {
  const v4 = decodeHostportElement('hostports4', {
    key: valueBytes([{ kind: 'proto', value: 'udp' }, { kind: 'port', value: 5353 }]),
    data: valueBytes([{ kind: 'ipv4', value: '10.1.0.5' }, { kind: 'port', value: 53 }]),
    comment: 'n:c1/eth0',
  });
  assert.deepEqual(v4, { map: 'hostports4', protocol: 'udp', hostPort: 5353, podIP: '10.1.0.5', containerPort: 53, owner: 'n:c1/eth0' });
  const v6 = decodeHostportElement('hostipports6', {
    key: valueBytes([{ kind: 'ipv6', value: 'fd00:0::1' }, { kind: 'proto', value: 'tcp' }, { kind: 'port', value: 8080 }]),
    data: valueBytes([{ kind: 'ipv6', value: 'fd00::5' }, { kind: 'port', value: 80 }]),
  });
  assert.deepEqual(v6, { map: 'hostipports6', hostIP: 'fd00::1', protocol: 'tcp', hostPort: 8080, podIP: 'fd00::5', containerPort: 80 });
  // a key of the wrong shape for its map is not an element of ours
  assert.equal(decodeHostportElement('hostipports4', { key: valueBytes([{ kind: 'proto', value: 'tcp' }, { kind: 'port', value: 1 }]), data: Buffer.alloc(8) }), undefined);
  assert.equal(decodeHostportElement('hostports4', { key: Buffer.from([1, 0, 0, 0, 0, 80, 0, 0]), data: Buffer.alloc(8) }), undefined, 'protocol 1 is not a hostPort protocol');
  assert.deepEqual(decodeHairpin('hairpin4', { key: valueBytes([{ kind: 'ipv4', value: '10.1.0.5' }, { kind: 'ipv4', value: '10.1.0.5' }]), comment: 'o' }), { set: 'hairpin4', podIP: '10.1.0.5', owner: 'o' });
});

test('a NEWSETELEM message parses into key, data and comment per element', () => {
  const attr = (type: number, payload: Buffer, nested = false): Buffer => {
    const len = 4 + payload.length;
    const b = Buffer.alloc((len + 3) & ~3);
    b.writeUInt16LE(len, 0);
    b.writeUInt16LE(nested ? type | 0x8000 : type, 2);
    payload.copy(b, 4);
    return b;
  };
  const elem = (key: Buffer, comment?: string) =>
    attr(1, Buffer.concat([attr(1, attr(1, key), true), ...(comment ? [attr(6, commentUdata(comment))] : [])]), true);
  const msg = Buffer.concat([
    Buffer.from([1, 0, 0, 0]), // nfgenmsg
    attr(1, Buffer.from('podnet\0')),
    attr(2, Buffer.from('masq_pods4\0')),
    attr(3, Buffer.concat([elem(Buffer.from([10, 0, 0, 1]), 'a:b'), elem(Buffer.from([10, 0, 0, 2]))]), true),
  ]);
  const els = parseSetElements(msg);
  assert.equal(els.length, 2);
  assert.deepEqual([...els[0].key], [10, 0, 0, 1]);
  assert.equal(els[0].comment, 'a:b');
  assert.equal(els[1].comment, undefined);
  assert.equal(udataComment(Buffer.from([1, 2, 0, 0, 0, 4, 120, 121, 122, 0]), 0), 'xyz', 'the comment TLV after another one');
  assert.equal(udataComment(Buffer.from([0, 9, 120]), 0), undefined, 'a truncated TLV is no comment');
});
