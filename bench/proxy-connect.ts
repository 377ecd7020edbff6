// Helper of bench/proxy.ts, run inside a network namespace (nsenter --net=…):
//
//   node --import tsx bench/proxy-connect.ts serve PORT
//       a TCP server on 0.0.0.0:PORT that accepts and lets the client close; prints "ready"
//   node --import tsx bench/proxy-connect.ts connect IP PORT COUNT WARMUP
//       COUNT sequential connects (after WARMUP unmeasured ones): net.connect until 'connect',
//       timed with process.hrtime, then destroy; prints a JSON array of microseconds
//   node --import tsx bench/proxy-connect.ts loop IP PORT WARMUP
//       prints "ready" after WARMUP connects, then for each line N on stdin makes N connects and
//       prints their JSON array (lets the caller interleave batches of two clients tightly)
import net from 'node:net';
import { createInterface } from 'node:readline';

const [mode, ...args] = process.argv.slice(2);

function connectOnce(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = net.connect({ host, port });
    s.setNoDelay(true);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, 5000);
    s.once('connect', () => {
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      clearTimeout(timer);
      s.destroy();
      resolve(us);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

if (mode === 'serve') {
  const port = Number(args[0]);
  const srv = net.createServer((c) => {
    c.on('error', () => {});
    c.resume();
    c.on('end', () => c.end());
  });
  srv.listen(port, '0.0.0.0', () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => process.exit(0));
} else if (mode === 'connect') {
  const [host, port, count, warmup] = [args[0], Number(args[1]), Number(args[2]), Number(args[3] ?? 20)];
  for (let i = 0; i < warmup; i++) await connectOnce(host, port);
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(await connectOnce(host, port));
  process.stdout.write(JSON.stringify(out) + '\n');
} else if (mode === 'loop') {
  const [host, port, warmup] = [args[0], Number(args[1]), Number(args[2] ?? 20)];
  for (let i = 0; i < warmup; i++) await connectOnce(host, port);
  process.stdout.write('ready\n');
  for await (const line of createInterface({ input: process.stdin })) {
    const count = Number(line.trim());
    if (!Number.isInteger(count) || count <= 0) break;
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(await connectOnce(host, port));
    process.stdout.write(JSON.stringify(out) + '\n');
  }
  process.exit(0);
} else {
  process.stderr.write('usage: proxy-connect.ts serve PORT | connect IP PORT COUNT [WARMUP] | loop IP PORT [WARMUP]\n');
  process.exit(2);
}
