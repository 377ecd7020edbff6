// Bundles the CLI and the CNI entry into single ES module files: one file starts
// fast (no module resolution at run time) and is what `podnet cni install` copies.
import { build } from 'esbuild';
import { chmodSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: false,
  logLevel: 'warning',
  // koffi ships a native addon, etcd3 (gRPC) reads its .proto files next to itself:
  // both are loaded from node_modules at run time.
  external: ['koffi', 'etcd3'],
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
};

// the lab's web page (`podnet lab ui`): its static files inline in the bundle (src/lab/ui/assets.ts)
const uiAssets = Object.fromEntries(['index.html', 'app.js', 'app.css'].map((f) => [f, readFileSync(`src/lab/ui/static/${f}`, 'utf8')]));
await build({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/podnet.mjs', define: { __PODNET_UI_ASSETS__: JSON.stringify(uiAssets) } });
await build({ ...common, entryPoints: ['src/cni/entry.ts'], outfile: 'dist/podnet-cni.mjs' });
chmodSync('dist/podnet.mjs', 0o755);
chmodSync('dist/podnet-cni.mjs', 0o755);

// The CNI client the runtime execs (see the file's header for why it is C). Without a C
// compiler the installer falls back to the POSIX shell client.
const cc = process.env.CC || 'cc';
const r = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-static', '-o', 'dist/podnet-cni-client', 'src/client/podnet-cni-client.c'], { stdio: 'inherit' });
if (r.error || r.status !== 0) {
  rmSync('dist/podnet-cni-client', { force: true });
  console.warn(`warning: could not compile the CNI client with ${cc} (${r.error?.message ?? `exit ${r.status}`}); \`podnet cni install\` will use the shell client`);
}

// podnet-tund, the tun backend's datapath (docs/tun.md "Why C"). Without it the tun backend
// refuses to start, naming the missing binary; every other backend works.
const tundSources = readdirSync('src/tund').filter((f) => f.endsWith('.c')).map((f) => `src/tund/${f}`);
// -O3: the checksum loop is vectorised only there (6 GB/s at -O2, 33 GB/s at -O3 here)
const t = spawnSync(cc, ['-O3', '-Wall', '-Wextra', '-pthread', '-o', 'dist/podnet-tund', ...tundSources], { stdio: 'inherit' });
if (t.error || t.status !== 0) {
  rmSync('dist/podnet-tund', { force: true });
  console.warn(`warning: could not compile podnet-tund with ${cc} (${t.error?.message ?? `exit ${t.status}`}); the tun backend is unavailable`);
}
