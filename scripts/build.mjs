// Bundles the CLI and the CNI entry into single ES module files: one file starts
// fast (no module resolution at run time) and is what `podnet cni install` copies.
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: false,
  logLevel: 'warning',
  // koffi ships a native addon; it is loaded from node_modules at run time.
  external: ['koffi'],
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
};

await build({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/podnet.mjs' });
await build({ ...common, entryPoints: ['src/cni/entry.ts'], outfile: 'dist/podnet-cni.mjs' });
chmodSync('dist/podnet.mjs', 0o755);
chmodSync('dist/podnet-cni.mjs', 0o755);
