// `podnet bgp status`: the agent's BGP speaker, asked over the agent's socket.
import { connect } from 'node:net';
import { Command, Option } from 'commander';
import { decodeResponse, encodeRequest } from '../agent/protocol.js';
import type { SpeakerStatus } from '../agent/bgp/speaker.js';

/** Exit codes: 0 every peer Established; 1 the agent cannot be asked (or runs no bgp backend); 3 a peer is not Established. */
const EXIT_AGENT = 1;
const EXIT_PEER_DOWN = 3;

export function askAgent(socket: string, control: string, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const c = connect(socket);
    const t = setTimeout(() => c.destroy(new Error(`no answer from the agent on ${socket} within ${timeoutMs} ms`)), timeoutMs);
    c.on('connect', () => c.end(encodeRequest({ env: { PODNET_CONTROL: control }, stdin: '' })));
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('error', (e) => {
      clearTimeout(t);
      reject(new Error(`cannot reach the agent on ${socket}: ${e.message}`));
    });
    c.on('end', () => {
      clearTimeout(t);
      try {
        const r = decodeResponse(Buffer.concat(chunks));
        const body = JSON.parse(r.stdout) as unknown;
        if (r.exitCode !== 0) reject(new Error((body as { error?: string }).error ?? `agent answered exit code ${r.exitCode}`));
        else resolve(body);
      } catch (e) {
        reject(new Error(`malformed answer from the agent: ${(e as Error).message}`));
      }
    });
  });
}

function duration(s: number | undefined): string {
  if (s === undefined) return '-';
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

export function renderStatus(st: SpeakerStatus): string {
  const head = `AS ${st.asn}, router ID ${st.routerId}, port ${st.listenPort || 'not listening'}${st.restarting ? ', restarted (graceful restart)' : ''}${st.converged ? '' : ', waiting for End-of-RIB'}\nannounced: ${st.announced.join(', ') || 'nothing'}\n`;
  const rows = [['PEER', 'AS', 'STATE', 'UPTIME', 'RECEIVED', 'ACCEPTED', 'ANNOUNCED', 'LAST ERROR']];
  for (const p of st.peers) {
    const state = p.state + (p.nextRetryInMs !== undefined ? ` (retry in ${Math.ceil(p.nextRetryInMs / 1000)}s, ${p.connectRetries} failed)` : '') + (p.prefixes.stale ? ` (${p.prefixes.stale} stale)` : '');
    rows.push([p.address, String(p.asn), state, duration(p.uptimeSeconds), String(p.prefixes.received), String(p.prefixes.accepted), String(p.prefixes.announced), p.lastError ?? '']);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return head + rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]))).join('  ').trimEnd()).join('\n') + '\n';
}

export function registerBgpCommands(program: Command): void {
  const bgp = program.command('bgp').description("the bgp backend's speaker in the node agent");
  bgp
    .command('status')
    .description("each peer's session state, uptime, prefixes received, accepted and announced, last error")
    .option('--socket <path>', "the agent's socket", process.env.PODNET_SOCKET ?? '/run/podnet/podnet.sock')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .addHelpText('after', '\nExit codes: 0 every peer Established, 1 the agent cannot be asked (or runs no bgp backend), 3 a peer is not Established.')
    .action(async (o: { socket: string; output: string }) => {
      let st: SpeakerStatus;
      try {
        st = (await askAgent(o.socket, 'bgp-status')) as SpeakerStatus;
      } catch (e) {
        process.stderr.write(`podnet bgp status: ${(e as Error).message}\n`);
        process.exitCode = EXIT_AGENT;
        return;
      }
      process.stdout.write(o.output === 'json' ? JSON.stringify(st, null, 2) + '\n' : renderStatus(st));
      if (st.peers.some((p) => p.state !== 'Established')) process.exitCode = EXIT_PEER_DOWN;
    });
}
