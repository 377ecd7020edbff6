// Runs inside a test namespace: `node probe.mjs tcp|udp|udp-fresh HOST PORT COUNT [TIMEOUT_MS] [SRC_PORT|0] [INTERVAL_MS]`.
// Prints JSON {answers: {name: count}, errors: {code: count}, ms: [...], seq: [answer|error per try]}.
// TCP: connect, read until close. udp: one datagram per try from one socket (fixed source port
// when given), first reply wins; udp-fresh: a new socket (so a new flow) per try.
import net from 'node:net';
import dgram from 'node:dgram';

const [proto, host, portS, countS, timeoutS, srcPortS, intervalS] = process.argv.slice(2);
const interval = Number(intervalS ?? 0);
const port = Number(portS);
const count = Number(countS ?? 1);
const timeout = Number(timeoutS ?? 2000);
const answers = {};
const errors = {};
const ms = [];
const seq = [];
const bump = (o, k) => {
  o[k] = (o[k] ?? 0) + 1;
  seq.push(k);
};

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

async function udpAll(fresh) {
  let sock;
  let waiting;
  const open = async () => {
    sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    await new Promise((r) => sock.bind(Number(srcPortS ?? 0), r));
    sock.on('message', (m) => { if (waiting) { const w = waiting; waiting = undefined; w(m.toString().trim()); } });
  };
  await open();
  for (let i = 0; i < count; i++) {
    if (fresh && i > 0) {
      sock.close();
      await open();
    }
    const t0 = performance.now();
    const got = await new Promise((resolve) => {
      const timer = setTimeout(() => { waiting = undefined; resolve(undefined); }, timeout);
      waiting = (v) => { clearTimeout(timer); resolve(v); };
      sock.send('ping', port, host);
    });
    if (got) { bump(answers, got); ms.push(performance.now() - t0); } else bump(errors, 'TIMEOUT');
    const rest = interval - (performance.now() - t0);
    if (rest > 0) await new Promise((r) => setTimeout(r, rest));
  }
  sock.close();
}

if (proto === 'tcp') for (let i = 0; i < count; i++) await tcpOnce();
else await udpAll(proto === 'udp-fresh');
process.stdout.write(JSON.stringify({ answers, errors, ms, seq }) + '\n');
