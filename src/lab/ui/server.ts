// `podnet lab ui`: the lab's web page and the JSON API behind it, on node:http.
//   GET /               the page (index.html), /app.js, /app.css: everything it needs, nothing from elsewhere
//   GET /api/topology   the graph model (src/lab/ui/topology.ts); 404 {error} when the lab is gone
//   GET /api/trace?src=&dst=&proto=&port=&size=&ipv6=1
//                       `podnet trace SRC DST -o json` plus each hop's deciding step; 400 {error} for a request
//                       that cannot be traced as given (TraceUsageError)
//   GET /api/events     server-sent events: `topology` (the model, or {error}) on connect and whenever it changes
// Changes are noticed by fs.watch on the lab's dir (state.json is replaced by rename, so the dir is
// watched, not the file), debounced; and by a periodic re-read while a page is connected, for what
// the state file does not record (an agent that died, a route deleted by hand) and for a dir that
// was removed and made again. An event is sent only when the model differs from the last one sent.
//
// It listens on loopback unless --allow-remote: the page runs traces (iproute2 as root) and has no
// authentication. On loopback, requests whose Host is not a loopback name are refused, so a web page
// elsewhere cannot reach it through DNS rebinding.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { statSync, watch, type FSWatcher } from 'node:fs';
import { isIP } from 'node:net';
import { labDir, loadState, type LabState } from '../state.js';
import { asset, ASSET_TYPES, type AssetName } from './assets.js';
import { buildTopology, traceForPage } from './topology.js';
import { gatherLive } from './live.js';
import type { Proto } from '../../trace/types.js';

export const DEFAULT_LISTEN = '127.0.0.1:8080';

export interface UiServerOptions {
  lab: string;
  /** HOST:PORT ([IPv6]:PORT); port 0 picks a free one */
  listen?: string;
  /** allow a non-loopback listen address */
  allowRemote?: boolean;
  /** the periodic re-read while a page is connected (default 2000 ms) */
  pollMs?: number;
  /** fs.watch events are coalesced for this long (default 100 ms) */
  debounceMs?: number;
}

export interface UiServer {
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

export function parseListen(v: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(v) ?? /^([^:[\]]+):(\d+)$/.exec(v);
  if (!m) throw new Error(`--listen ${JSON.stringify(v)}: expected HOST:PORT or [IPv6]:PORT, e.g. ${DEFAULT_LISTEN}`);
  const host = m[1] === 'localhost' ? '127.0.0.1' : m[1];
  if (!isIP(host)) throw new Error(`--listen ${JSON.stringify(v)}: the host must be an IP address (or localhost)`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--listen ${JSON.stringify(v)}: port out of range (0-65535)`);
  return { host, port };
}

export function isLoopback(host: string): boolean {
  return /^127\./.test(host) || host === '::1' || /^::ffff:127\./i.test(host);
}

/** Host header values a browser sends for a loopback address: 127.x, localhost, [::1], with or without the port. */
function loopbackHostHeader(h: string | undefined): boolean {
  if (!h) return false;
  const host = h.startsWith('[') ? h.slice(1, h.indexOf(']')) : h.replace(/:\d+$/, '');
  return host === 'localhost' || isLoopback(host);
}

class UsageError extends Error {}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// the page loads only from here (no CDN, no inline script)
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export async function startUiServer(o: UiServerOptions): Promise<UiServer> {
  const { host, port } = parseListen(o.listen ?? DEFAULT_LISTEN);
  if (!isLoopback(host) && !o.allowRemote) throw new Error(`--listen ${host}: not a loopback address; the page runs traces as root without authentication, so listening beyond this machine needs --allow-remote`);
  const pollMs = o.pollMs ?? 2000;
  const debounceMs = o.debounceMs ?? 100;
  const dir = labDir(o.lab);

  const clients = new Set<ServerResponse>();
  let last: string | undefined;
  let refreshing: Promise<void> | undefined;
  let again = false;
  let closed = false;

  async function topologyJson(): Promise<{ status: number; text: string }> {
    let s: LabState | undefined;
    try {
      s = loadState(o.lab);
    } catch (e) {
      return { status: 500, text: JSON.stringify({ error: `state of lab ${o.lab}: ${(e as Error).message}` }) };
    }
    if (!s) return { status: 404, text: JSON.stringify({ error: `no lab named ${o.lab} (it was taken down?)` }) };
    return { status: 200, text: JSON.stringify(buildTopology(s, await gatherLive(s))) };
  }

  const event = (name: string, data: string) => `event: ${name}\ndata: ${data}\n\n`;

  /** Re-reads the model and sends it to every page when it changed; one at a time, a request during one runs once after it. */
  function refresh(): Promise<void> {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        again = false;
        const { text } = await topologyJson();
        if (text !== last && !closed) {
          last = text;
          for (const c of clients) c.write(event('topology', text));
        }
      } while (again && !closed);
    })().finally(() => {
      refreshing = undefined;
    });
    return refreshing;
  }

  // fs.watch on the lab's dir, re-made when the dir is made again (lab down + up)
  let watcher: FSWatcher | undefined;
  let watchedIno: number | undefined;
  let debounce: NodeJS.Timeout | undefined;
  function ensureWatcher(): void {
    let ino: number | undefined;
    try {
      ino = statSync(dir).ino;
    } catch {
      ino = undefined;
    }
    if (watcher && ino === watchedIno) return;
    watcher?.close();
    watcher = undefined;
    watchedIno = undefined;
    if (ino === undefined) return;
    try {
      watcher = watch(dir, { persistent: false }, (_type, file) => {
        if (file && file !== 'state.json') return;
        clearTimeout(debounce);
        debounce = setTimeout(() => void refresh(), debounceMs);
      });
      watcher.on('error', () => {
        watcher?.close();
        watcher = undefined;
        watchedIno = undefined;
        void refresh();
      });
      watchedIno = ino;
    } catch {
      watcher = undefined;
    }
  }
  ensureWatcher();
  const poll = setInterval(() => {
    if (clients.size === 0) return;
    ensureWatcher();
    void refresh();
  }, pollMs);
  const heartbeat = setInterval(() => {
    for (const c of clients) c.write(': keep-alive\n\n');
  }, 15_000);

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://podnet.invalid');
    if (isLoopback(host) && !loopbackHostHeader(req.headers.host)) return sendJson(res, 403, { error: `Host ${JSON.stringify(req.headers.host ?? '')} is not this machine's loopback` });
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return sendJson(res, 405, { error: `${req.method} is not served here` });
    }
    const file: AssetName | undefined = url.pathname === '/' || url.pathname === '/index.html' ? 'index.html' : url.pathname === '/app.js' ? 'app.js' : url.pathname === '/app.css' ? 'app.css' : undefined;
    if (file) {
      const body = asset(file);
      res.writeHead(200, { 'content-type': ASSET_TYPES[file], 'cache-control': 'no-cache', 'content-security-policy': CSP, 'x-content-type-options': 'nosniff', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    switch (url.pathname) {
      case '/api/topology': {
        const t = await topologyJson();
        res.writeHead(t.status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
        res.end(t.text);
        return;
      }
      case '/api/trace':
        return apiTrace(url.searchParams, res);
      case '/api/events': {
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
        res.write('retry: 2000\n\n');
        clients.add(res);
        req.on('close', () => clients.delete(res));
        // this page gets the model now, whatever the others last got
        const t = await topologyJson();
        if (!res.writableEnded) res.write(event('topology', t.text));
        ensureWatcher();
        return;
      }
      default:
        return sendJson(res, 404, { error: `no ${url.pathname} here: the page is /, the API /api/topology, /api/trace, /api/events` });
    }
  }

  async function apiTrace(q: URLSearchParams, res: ServerResponse): Promise<void> {
    const { traceRequest, TraceUsageError } = await import('../../trace/query.js');
    try {
      const src = q.get('src')?.trim();
      const dst = q.get('dst')?.trim();
      if (!src || !dst) throw new UsageError('a trace needs src and dst (a pod or node name, an address, NAME:PORT or IP:PORT)');
      const protoText = q.get('proto')?.trim() || undefined;
      if (protoText !== undefined && !['tcp', 'udp', 'icmp'].includes(protoText)) throw new UsageError(`proto must be tcp, udp or icmp, not ${JSON.stringify(protoText)}`);
      const port = q.get('port')?.trim() || undefined;
      const size = q.get('size')?.trim() || undefined;
      const ipv6 = ['1', 'true', 'yes', 'on'].includes(q.get('ipv6') ?? '');
      const lab = loadState(o.lab);
      if (!lab) return sendJson(res, 404, { error: `no lab named ${o.lab} (it was taken down?)` });
      const r = await traceRequest(src, dst, { lab, proto: protoText as Proto | undefined, port, size, ipv6 });
      sendJson(res, 200, traceForPage(r));
    } catch (e) {
      if (e instanceof UsageError || e instanceof TraceUsageError) return sendJson(res, 400, { error: (e as Error).message });
      sendJson(res, 500, { error: `trace failed: ${(e as Error).message}` });
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: (e as Error).message });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${o.listen ?? DEFAULT_LISTEN}: ${e.code === 'EADDRINUSE' ? 'the address is in use' : e.message}`)));
    server.listen(port, host, () => resolve());
  }).catch((e: unknown) => {
    clearInterval(poll);
    clearInterval(heartbeat);
    watcher?.close();
    throw e;
  });
  const addr = server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  // a wildcard address is reached on this machine through loopback
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const urlHost = shown.includes(':') ? `[${shown}]` : shown;

  return {
    url: `http://${urlHost}:${bound}/`,
    host,
    port: bound,
    async close() {
      closed = true;
      clearInterval(poll);
      clearInterval(heartbeat);
      clearTimeout(debounce);
      watcher?.close();
      for (const c of clients) c.end();
      clients.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await refreshing;
    },
  };
}
