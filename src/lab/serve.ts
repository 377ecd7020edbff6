// `--serve`: a tiny reply server in a pod's namespace, so services have something to answer. It
// answers every TCP connection with the pod's name and a newline, then closes, and every UDP
// datagram with the same line, sent from the receiving socket back to the sender (what a
// proxy's reverse NAT expects). It is the hidden `podnet lab serve` of dist/podnet.mjs, started
// with `nsenter --net=<pod netns>` (argument array), detached, its output in the lab's dir, its
// PID and start time recorded in the lab state; it is stopped by that PID only after
// /proc/PID/cmdline shows it is still this pod's server.
import { createSocket, type Socket } from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { podnetBundle } from './agents.js';
import type { LabPod, LabServer, LabState, ProcRef } from './state.js';
import { isAlive, startDetached, stopProcess, tail } from './sys.js';

export interface ServeOptions {
  reply: string;
  tcp: number[];
  udp: number[];
  /** written (with the PID) once every socket is bound */
  readyFile?: string;
  /** bind address (default 0.0.0.0: the lab is IPv4) */
  host?: string;
}

/** Runs the server until SIGTERM or SIGINT; rejects when a port cannot be bound. */
export async function runServer(o: ServeOptions): Promise<void> {
  if (o.tcp.length === 0 && o.udp.length === 0) throw new Error('nothing to serve: give --tcp and/or --udp');
  const host = o.host ?? '0.0.0.0';
  const line = Buffer.from(`${o.reply}\n`);
  const servers: Server[] = [];
  const sockets: Socket[] = [];
  for (const port of o.tcp) {
    const srv = createServer((c) => {
      c.on('error', () => {}); // a reset by the client is its business
      c.end(line);
    });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (e) => reject(new Error(`tcp ${port}: ${e.message}`)));
      srv.listen({ port, host, backlog: 1024 }, () => resolve());
    });
    srv.on('error', (e) => process.stderr.write(`serve: tcp ${port}: ${e.message}\n`));
    servers.push(srv);
  }
  for (const port of o.udp) {
    const sock = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', (e) => reject(new Error(`udp ${port}: ${e.message}`)));
      sock.bind(port, host, () => resolve());
    });
    sock.on('error', (e) => process.stderr.write(`serve: udp ${port}: ${e.message}\n`));
    sock.on('message', (_msg, rinfo) => sock.send(line, rinfo.port, rinfo.address, () => {}));
    sockets.push(sock);
  }
  const what = [...o.tcp.map((p) => `${p}/tcp`), ...o.udp.map((p) => `${p}/udp`)].join(', ');
  process.stdout.write(`${new Date().toISOString()} serve: pid ${process.pid} answering "${o.reply}" on ${what}\n`);
  if (o.readyFile) writeFileSync(o.readyFile, `${process.pid}\n`);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      process.stdout.write(`${new Date().toISOString()} serve: ${sig}, exiting\n`);
      for (const s of servers) s.close();
      for (const s of sockets) s.close();
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

/** The record of a pod's server before it runs (written to the state first). */
export function planServer(s: LabState, pod: string, ports: string[]): LabServer {
  const dir = join(s.dir, 'pods', pod);
  return { ports, log: join(dir, 'serve.log'), readyFile: join(dir, 'serve.ready') };
}

export function serveArgv(pod: LabPod, srv: LabServer): string[] {
  const tcp = srv.ports.filter((p) => p.endsWith('/tcp')).flatMap((p) => ['--tcp', p.split('/')[0]]);
  const udp = srv.ports.filter((p) => p.endsWith('/udp')).flatMap((p) => ['--udp', p.split('/')[0]]);
  // nsenter with only --net execs the command in place: the PID is the server's own
  return ['nsenter', `--net=/run/netns/${pod.ns}`, '--', process.execPath, podnetBundle(), 'lab', 'serve', '--reply', pod.name, ...tcp, ...udp, '--ready-file', srv.readyFile];
}

export function startServer(pod: LabPod, srv: LabServer): ProcRef {
  mkdirSync(join(srv.log, '..'), { recursive: true });
  rmSync(srv.readyFile, { force: true });
  return startDetached(serveArgv(pod, srv), srv.log);
}

/** Waits for the ready file the server writes once it listens; its death or a timeout is an error with its log. */
export async function waitForServer(pod: LabPod, srv: LabServer, ref: ProcRef, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (existsSync(srv.readyFile)) {
      const pid = Number(readFileSync(srv.readyFile, 'utf8').trim());
      if (pid === ref.pid) return;
    }
    if (!isAlive(ref)) throw new Error(`the server of pod ${pod.name} (${srv.ports.join(', ')}) exited before listening; the end of ${srv.log}:\n${tail(srv.log)}`);
    if (Date.now() > until) throw new Error(`the server of pod ${pod.name} did not listen on ${srv.ports.join(', ')} within ${timeoutMs / 1000} s; the end of ${srv.log}:\n${tail(srv.log)}`);
    await sleep(20);
  }
}

/** The process' argv from /proc (empty when it is gone). */
export function procCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** Still the server the lab started for this pod: same start time, and its argv says so. */
export function isPodServer(ref: ProcRef | undefined, pod: string): boolean {
  if (!ref || !isAlive(ref)) return false;
  const argv = procCmdline(ref.pid);
  const i = argv.indexOf('serve');
  return i > 0 && argv[i - 1] === 'lab' && argv[argv.indexOf('--reply') + 1] === pod;
}

/** Stops a pod's server by its recorded PID, only if it is still that server. */
export async function stopServer(srv: LabServer | undefined, pod: string): Promise<boolean> {
  if (!srv?.proc || !isPodServer(srv.proc, pod)) return false;
  return stopProcess(srv.proc, 'SIGTERM', 3000);
}
