// `npm run bench`: every benchmark, each printing its own table on stdout.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const benches = [
  ['CNI ADD/DEL/VERSION: podnet vs reference bridge+host-local (and portmap with hostPorts)', 'cni-bench.ts'],
  ['Kernel access for an ADD: iproute2 vs netlink (koffi)', 'netlink-vs-iproute2.ts'],
  ['Datapath throughput: podnet lab vs the hand-built path (iperf3)', 'datapath.ts'],
  ['tun backend: podnet-tund vs vxlan, the hand-built kernel path and a naive forwarder (iperf3)', 'tun.ts'],
  ["Why podnet-tund's packet loop is C: checksum and system calls, TypeScript vs C", 'why-native.ts'],
  ['Convergence: 1,000 peer leases, then one more', 'convergence.ts'],
  ['bgp backend: iperf3 across racks (bgp vs vxlan vs hand-built static routes) and BIRD announcing 1,000 routes, then one more', 'bgp.ts'],
  ['Service proxy: podnet nftables/iptables vs kube-proxy layouts, 1,000-10,000 services', 'proxy.ts'],
];
let status = 0;
for (const [title, file] of benches) {
  console.log(`\n## ${title}\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, file), ...process.argv.slice(2)], { stdio: 'inherit' });
  if (r.status !== 0) status = 1;
}
process.exit(status);
