// Runs inside a test namespace: `node probe.mjs tcp|udp HOST PORT COUNT [TIMEOUT_MS] [SRC_PORT]`.
// Prints JSON {answers: {name: count}, errors: {code: count}, ms: [...]}. TCP: connect, read until
// close. UDP: one datagram per try from one socket (fixed source port when given), first reply wins.
import net from 'node:net';
import dgram from 'node:dgram';

const [proto, host, portS, countS, timeoutS, srcPortS] = process.argv.slice(2);
const port = Number(portS);
const count = Number(countS ?? 1);
const timeout = Number(timeoutS ?? 2000);
const answers = {};
const errors = {};
const ms = [];
const bump = (o, k) => (o[k] = (o[k] ?? 0) + 1);

function tcpOnce() {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let data = '';
    const s = net.connect({ host, port });
    const timer = setTimeout(() => { s.destroy(); bump(errors, 'TIMEOUT'); resolve(); }, timeout);
    s.on('data', (d) => (data += d));
    s.on('error', (e) => { clearTimeout(timer); bump(errors, e.code ?? 'ERR'); ms.push(performance.now() - t0); resolve(); });
    s.on('close', () => { clearTimeout(timer); if (data) { bump(answers, data.trim()); ms.push(performance.now() - t0); } resolve(); });
  });
}

async function udpAll() {
  const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  await new Promise((r) => sock.bind(srcPortS ? Number(srcPortS) : 0, r));
  let waiting;
  sock.on('message', (m) => { if (waiting) { const w = waiting; waiting = undefined; w(m.toString().trim()); } });
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const got = await new Promise((resolve) => {
      const timer = setTimeout(() => { waiting = undefined; resolve(undefined); }, timeout);
      waiting = (v) => { clearTimeout(timer); resolve(v); };
      sock.send('ping', port, host);
    });
    if (got) { bump(answers, got); ms.push(performance.now() - t0); } else bump(errors, 'TIMEOUT');
  }
  sock.close();
}

if (proto === 'tcp') for (let i = 0; i < count; i++) await tcpOnce();
else await udpAll();
process.stdout.write(JSON.stringify({ answers, errors, ms }) + '\n');
