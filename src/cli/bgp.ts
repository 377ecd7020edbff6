// `podnet bgp status`: the agent's BGP speaker, asked over the agent's socket.
import { Command, Option } from 'commander';
import { askAgent } from '../agent/control-client.js';
import type { SpeakerStatus } from '../agent/bgp/speaker.js';

/** Exit codes: 0 every peer Established; 1 the agent cannot be asked (or runs no bgp backend); 3 a peer is not Established. */
const EXIT_AGENT = 1;
const EXIT_PEER_DOWN = 3;

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
