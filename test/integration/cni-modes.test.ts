// Every mode, through the installed executable, in real namespaces: pods reach each other and
// their gateway, CHECK notices a removed address, DEL leaves nothing behind.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { MODE_CASES, type Conf } from '../helpers/modes.js';

for (const agent of [false, true]) {
  for (const c of MODE_CASES) {
    describe(`${c.mode} mode (${agent ? 'agent' : 'standalone'})`, () => {
      let h: CniHarness;
      let conf: Conf;
      let dataDir: string;
      before(async () => {
        h = new CniHarness();
        dataDir = join(h.tmp, 'ipam');
        conf = c.conf(`t${c.mode}`, { type: 'podnet-ipam', ranges: c.ranges, dataDir });
        c.setupNode?.(h);
        if (agent) await h.startAgent();
      });
      after(async () => {
        await h.cleanup();
      });

      test('two pods reach each other and the gateway over IPv4 and IPv6; CHECK passes; DEL leaves nothing', async () => {
        const pods = [h.pod('a'), h.pod('b')];
        const ips: string[][] = [];
        for (const [i, p] of pods.entries()) {
          const r = await h.invoke({ command: 'ADD', containerId: `c${i}`, netns: h.podPath(p), ifname: 'eth0', conf });
          assert.equal(r.code, 0, `ADD failed: ${r.stdout} ${r.stderr}`);
          const res = r.json as { cniVersion: string; ips: { address: string; interface?: number }[]; interfaces: { name: string; sandbox?: string }[] };
          assert.equal(res.cniVersion, conf.cniVersion);
          assert.equal(res.ips.length, 2);
          const sandboxIdx = res.interfaces.findIndex((x) => x.sandbox);
          assert.ok(sandboxIdx >= 0 && res.ips.every((x) => x.interface === sandboxIdx));
          ips.push(res.ips.map((x) => x.address.split('/')[0]));
          // the host link that forwards to the pod (the bridge; the routed veth) carries no
          // tentative IPv6 address: the kernel solicits neighbours for forwarded packets only
          // from a usable link-local (a bridge port's own link-local does not matter)
          if (c.mode !== 'macvlan') {
            const tentative = (JSON.parse(h.exec(h.nodeNs, ['ip', '-6', '-j', 'addr', 'show', 'tentative'])) as { ifname: string; addr_info: { local: string }[] }[])
              .filter((l) => (c.mode === 'bridge' ? l.ifname === 'pnbr0' : l.ifname.startsWith('veth')))
              .flatMap((l) => l.addr_info.map((x) => `${l.ifname} ${x.local}`));
            assert.deepEqual(tentative, [], 'tentative addresses on the host links right after ADD');
          }
          const chk = await h.invoke({ command: 'CHECK', containerId: `c${i}`, netns: h.podPath(p), ifname: 'eth0', conf: { ...conf, prevResult: res } });
          assert.equal(chk.code, 0, `CHECK failed: ${chk.stdout}`);
        }
        for (const dst of [...ips[1], ...c.gateways]) assert.ok(h.ping(pods[0], dst), `${pods[0]} cannot reach ${dst}`);
        for (const dst of ips[0]) assert.ok(h.ping(pods[1], dst), `${pods[1]} cannot reach ${dst}`);
        assert.ok(h.ping(h.nodeNs, ips[0][0]), 'node cannot reach its pod');

        for (const [i, p] of pods.entries()) {
          const d = await h.invoke({ command: 'DEL', containerId: `c${i}`, netns: h.podPath(p), ifname: 'eth0', conf });
          assert.equal(d.code, 0, d.stdout);
          assert.equal(d.stdout, '');
          // containerd's second DEL: no netns any more
          const d2 = await h.invoke({ command: 'DEL', containerId: `c${i}`, netns: '', ifname: 'eth0', conf });
          assert.equal(d2.code, 0, d2.stdout);
          assert.equal(h.exec(p, ['ip', '-j', 'link', 'show']).includes('"eth0"'), false, 'pod interface left');
        }
        assert.deepEqual(h.reservations(dataDir, conf.name as string), []);
        if (c.hostLinkPrefix) assert.deepEqual(h.nodeLinks().filter((l) => l.ifname.startsWith(c.hostLinkPrefix!)).map((l) => l.ifname), []);
        if (conf.ipMasq) {
          const nft = h.exec(h.nodeNs, ['nft', '-j', 'list', 'table', 'inet', 'podnet']);
          assert.equal(/"elem"/.test(nft) && /10\.77\.\d\.\d+"/.test(nft.replace(/"10\.77\.\d\.0"/g, '')), false, 'masquerade element left');
        }
        if (c.mode === 'macvlan') {
          const routes = h.exec(h.nodeNs, ['ip', 'route', 'show']);
          assert.equal(/192\.168\.77\.1\d\d /.test(routes), false, `host route to a deleted pod left: ${routes}`);
        }
      });

      test('CHECK fails once an address is removed by hand', async () => {
        const p = h.pod('chk');
        const r = await h.invoke({ command: 'ADD', containerId: 'chk', netns: h.podPath(p), ifname: 'eth0', conf });
        assert.equal(r.code, 0, r.stdout);
        const res = r.json as { ips: { address: string }[] };
        const v4 = res.ips[0].address.split('/')[0];
        const onLink = JSON.parse(h.exec(p, ['ip', '-j', 'addr', 'show', 'dev', 'eth0'])) as { addr_info: { local: string; prefixlen: number }[] }[];
        const a = onLink[0].addr_info.find((x) => x.local === v4)!;
        h.exec(p, ['ip', 'addr', 'del', `${a.local}/${a.prefixlen}`, 'dev', 'eth0']);
        const chk = await h.invoke({ command: 'CHECK', containerId: 'chk', netns: h.podPath(p), ifname: 'eth0', conf: { ...conf, prevResult: res } });
        assert.notEqual(chk.code, 0);
        assert.equal((chk.json as { code: number }).code, 106);
        assert.match(String((chk.json as { msg: string }).msg), new RegExp(v4.replace(/\./g, '\\.')));
        const d = await h.invoke({ command: 'DEL', containerId: 'chk', netns: h.podPath(p), ifname: 'eth0', conf });
        assert.equal(d.code, 0, d.stdout);
        assert.deepEqual(h.reservations(dataDir, conf.name as string), []);
      });
    });
  }
}
