// A fake BGP peer for the agent's tests, run in the peer's netns (`ip netns exec NS node THIS JSON`).
// It connects to the agent's BGP port from the configured peer address, plays a script of steps
// (send raw bytes, wait until the agent has sent a message of some type), then collects whatever
// the agent sends until the agent closes the connection or the timeout passes, and prints one
// JSON line: {"received": HEX, "closedByAgent": bool, "error"?: string}.
//   {"host": "192.168.78.1", "port": 179, "localAddress": "192.168.78.253", "timeoutMs": 10000,
//    "steps": [{"send": "ffff…"}, {"waitFor": 4}, {"send": "…"}]}
import { connect } from 'node:net';

const o = JSON.parse(process.argv[2]);
let received = Buffer.alloc(0);
let closedByAgent = false;
let done = false;
let waiting;

/** Message types in what the agent sent so far (whole messages only). */
function typesReceived() {
  const types = [];
  let off = 0;
  while (received.length - off >= 19) {
    const len = received.readUInt16BE(off + 16);
    if (len < 19 || received.length - off < len) break;
    types.push(received[off + 18]);
    off += len;
  }
  return types;
}

function finish(error) {
  if (done) return;
  done = true;
  clearTimeout(timer);
  process.stdout.write(JSON.stringify({ received: received.toString('hex'), closedByAgent, ...(error ? { error } : {}) }) + '\n', () => process.exit(0));
  sock.destroy();
}

const timer = setTimeout(() => finish(`timed out after ${o.timeoutMs} ms`), o.timeoutMs ?? 10_000);
const sock = connect({ host: o.host, port: o.port, localAddress: o.localAddress });
sock.on('data', (d) => {
  received = Buffer.concat([received, d]);
  if (waiting && typesReceived().includes(waiting.type)) {
    const w = waiting;
    waiting = undefined;
    w.resolve();
  }
});
sock.on('end', () => {
  closedByAgent = true;
  finish();
});
sock.on('close', () => finish());
sock.on('error', (e) => {
  // a reset after the agent's NOTIFICATION is the agent closing too
  if (e.code === 'ECONNRESET' || e.code === 'EPIPE') closedByAgent = true;
  else finish(e.message);
});
sock.on('connect', async () => {
  for (const step of o.steps) {
    if (done) return;
    if (step.send) sock.write(Buffer.from(step.send, 'hex'));
    if (step.waitFor !== undefined && !typesReceived().includes(step.waitFor)) {
      await new Promise((resolve) => (waiting = { type: step.waitFor, resolve }));
    }
  }
});
