// The standalone CNI executable: env and stdin in, result or error JSON on stdout, logs to
// /var/log/podnet/cni.log. Serves both `podnet` and `podnet-ipam` (PODNET_PLUGIN or argv[1]).
import { basename } from 'node:path';
import { runCni } from './run.js';

function readStdin(): Promise<string> {
  return new Promise((resolve) => {
    if (process.stdin.isTTY) return resolve('');
    let data = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (d) => (data += d));
    process.stdin.on('end', () => resolve(data));
    process.stdin.on('error', () => resolve(data));
  });
}

const which = process.env.PODNET_PLUGIN || basename(process.argv[1] ?? 'podnet').replace(/\.m?js$/, '');
const stdin = process.env.CNI_COMMAND === 'VERSION' ? '' : await readStdin();
const env: Record<string, string> = {};
for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
const res = await runCni(which, { env, stdin });
process.stdout.write(res.stdout);
if (res.stderr) process.stderr.write(res.stderr);
process.exitCode = res.exitCode;
