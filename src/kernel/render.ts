// KernelOp → iproute2 batch lines. Pure: no I/O, so the exact text fed to `ip -batch -` and
// `bridge -batch -` can be unit-tested. Every value is validated first, because a malformed token
// makes iproute2 exit() mid-batch (invarg) without saying which line it was on.
import ipaddr from 'ipaddr.js';
import type { KernelOp, LinkSpec, NetnsRef, RouteSpec } from './types.js';
import { KernelError } from './exec.js';
import { validateIfName, validateNetns } from './netns.js';

export type BatchTool = 'ip' | 'bridge';

export interface RenderedOp {
  tool: BatchTool;
  lines: string[];
}

export interface RenderContext {
  /** how to name the caller's own netns from inside another one (a 'current' NetnsRef in an op) */
  selfNetnsPath: string;
}

export const defaultRenderContext = (): RenderContext => ({ selfNetnsPath: `/proc/${process.pid}/ns/net` });

function invalid(op: string, what: string): KernelError {
  return new KernelError({ argv: [], exitCode: null, stderr: '', op, kind: 'invalid', detail: what });
}

export function describeOp(op: KernelOp): string {
  switch (op.op) {
    case 'link-add':
      return `link-add ${op.spec.kind} ${op.spec.name}`;
    case 'link-del':
      return `link-del ${op.name}`;
    case 'link-set': {
      const { op: _o, name, ...rest } = op;
      return `link-set ${name} ${JSON.stringify(rest)}`;
    }
    case 'addr-add':
    case 'addr-del':
      return `${op.op} ${op.cidr} dev ${op.dev}`;
    case 'route-add':
    case 'route-del':
      return `${op.op} ${JSON.stringify(op.route)}`;
    case 'neigh-replace':
      return `neigh-replace ${op.dst} lladdr ${op.lladdr} dev ${op.dev}`;
    case 'neigh-del':
      return `neigh-del ${op.dst} dev ${op.dev}`;
    case 'fdb-replace':
    case 'fdb-append':
    case 'fdb-del':
      return `${op.op} ${op.mac} dev ${op.dev}${op.dst ? ` dst ${op.dst}` : ''}`;
    default:
      return JSON.stringify(op);
  }
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const WORD_RE = /^[A-Za-z0-9_]+$/;

export function ipFamily(s: string): 4 | 6 | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(s)) return 4;
  if (!s.includes('%') && ipaddr.IPv6.isValid(s)) return 6;
  return undefined;
}

function checkIp(opd: string, what: string, s: unknown): 4 | 6 {
  const f = typeof s === 'string' ? ipFamily(s) : undefined;
  if (!f) throw invalid(opd, `${what} ${JSON.stringify(s)} is not an IP address`);
  return f;
}

function checkCidr(opd: string, what: string, s: unknown): 4 | 6 {
  if (typeof s !== 'string') throw invalid(opd, `${what} must be a string`);
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const f = checkIp(opd, what, addr);
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > (f === 4 ? 32 : 128)) throw invalid(opd, `${what} ${JSON.stringify(s)} has a bad prefix length`);
  }
  return f;
}

function checkMac(opd: string, what: string, s: unknown): void {
  if (typeof s !== 'string' || !MAC_RE.test(s)) throw invalid(opd, `${what} ${JSON.stringify(s)} is not a MAC address (xx:xx:xx:xx:xx:xx)`);
}

function checkInt(opd: string, what: string, n: unknown, min: number, max: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) throw invalid(opd, `${what} ${JSON.stringify(n)} must be an integer in ${min}..${max}`);
}

function checkName(opd: string, role: string, name: unknown): void {
  try {
    validateIfName(name, role);
  } catch (e) {
    throw invalid(opd, (e as KernelError).detail);
  }
}

function netnsArg(opd: string, ns: NetnsRef, ctx: RenderContext): string {
  try {
    validateNetns(ns);
  } catch (e) {
    throw invalid(opd, (e as KernelError).detail);
  }
  // `ip link add ... netns X` and `link set ... netns X` open X as a path when it contains '/', else /run/netns/X.
  return ns.kind === 'name' ? ns.name : ns.kind === 'path' ? ns.path : ctx.selfNetnsPath;
}

/** Common link attributes; `name` first because a bare word after `link add` would be parsed as "address". */
function linkAttrs(opd: string, name: string, mtu?: number, mac?: string): string[] {
  checkName(opd, 'link name', name);
  const a = ['name', name];
  if (mac !== undefined) {
    checkMac(opd, 'mac', mac);
    a.push('address', mac);
  }
  if (mtu !== undefined) {
    checkInt(opd, 'mtu', mtu, 68, 65535);
    a.push('mtu', String(mtu));
  }
  return a;
}

function renderLinkAdd(opd: string, spec: LinkSpec, ctx: RenderContext): string[] {
  switch (spec.kind) {
    case 'veth': {
      const a = ['link', 'add', ...linkAttrs(opd, spec.name, spec.mtu, spec.mac), 'type', 'veth', 'peer', ...linkAttrs(opd, spec.peer?.name, spec.peer?.mtu, spec.peer?.mac)];
      if (spec.peer.netns) a.push('netns', netnsArg(opd, spec.peer.netns, ctx));
      return [a.join(' ')];
    }
    case 'bridge': {
      const a = ['link', 'add', ...linkAttrs(opd, spec.name, spec.mtu, spec.mac), 'type', 'bridge'];
      if (spec.vlanFiltering !== undefined) a.push('vlan_filtering', spec.vlanFiltering ? '1' : '0');
      return [a.join(' ')];
    }
    case 'vxlan': {
      checkInt(opd, 'vni', spec.vni, 0, 16777215);
      checkInt(opd, 'dstport', spec.dstport, 0, 65535);
      const a = ['link', 'add', ...linkAttrs(opd, spec.name, spec.mtu, spec.mac), 'type', 'vxlan', 'id', String(spec.vni), 'dstport', String(spec.dstport)];
      if (spec.local !== undefined) {
        checkIp(opd, 'local', spec.local);
        a.push('local', spec.local);
      }
      if (spec.dev !== undefined) {
        checkName(opd, 'dev', spec.dev);
        a.push('dev', spec.dev);
      }
      if (spec.learning !== undefined) a.push(spec.learning ? 'learning' : 'nolearning');
      return [a.join(' ')];
    }
    case 'macvlan':
    case 'ipvlan': {
      checkName(opd, 'master', spec.master);
      if (typeof spec.mode !== 'string' || !/^[a-z0-9]+$/.test(spec.mode)) throw invalid(opd, `mode ${JSON.stringify(spec.mode)} is invalid`);
      // `netns` must come before `type`: after it, the words belong to the macvlan/ipvlan option parser.
      const a = ['link', 'add', 'link', spec.master, ...linkAttrs(opd, spec.name, spec.mtu, spec.mac)];
      if (spec.netns) a.push('netns', netnsArg(opd, spec.netns, ctx));
      a.push('type', spec.kind, 'mode', spec.mode);
      return [a.join(' ')];
    }
    case 'tun': {
      checkName(opd, 'link name', spec.name);
      const lines = [`tuntap add name ${spec.name} mode tun${spec.vnetHdr ? ' vnet_hdr' : ''}`];
      // tuntap add cannot set an MTU; persistent tun devices take it afterwards like any link.
      if (spec.mtu !== undefined) {
        checkInt(opd, 'mtu', spec.mtu, 68, 65535);
        lines.push(`link set dev ${spec.name} mtu ${spec.mtu}`);
      }
      return lines;
    }
    default:
      throw invalid(opd, `unsupported link kind ${JSON.stringify((spec as { kind?: unknown }).kind)}`);
  }
}

function renderRoute(opd: string, verb: 'add' | 'replace' | 'del', r: RouteSpec): string {
  if (!r || typeof r !== 'object') throw invalid(opd, 'route spec missing');
  let fam: 4 | 6 | undefined = r.family;
  if (r.gateway !== undefined) fam = checkIp(opd, 'gateway', r.gateway);
  else if (r.src !== undefined) fam = checkIp(opd, 'src', r.src);
  let dst: string;
  if (r.dst === 'default') {
    // "default" alone means IPv4 to ip; an IPv6 default without gateway must be spelled ::/0.
    dst = fam === 6 && r.gateway === undefined ? '::/0' : 'default';
  } else {
    const f = checkCidr(opd, 'dst', r.dst);
    if (fam !== undefined && f !== fam) throw invalid(opd, `dst ${r.dst} and gateway/src are of different families`);
    dst = r.dst;
  }
  const a = ['route', verb, dst];
  if (r.gateway !== undefined) a.push('via', r.gateway);
  if (r.dev !== undefined) {
    checkName(opd, 'dev', r.dev);
    a.push('dev', r.dev);
  }
  if (r.onlink) a.push('onlink');
  if (r.scope !== undefined) {
    if (!['global', 'link', 'host'].includes(r.scope)) throw invalid(opd, `scope ${JSON.stringify(r.scope)} is invalid`);
    a.push('scope', r.scope);
  }
  if (r.src !== undefined) a.push('src', r.src);
  if (r.metric !== undefined) {
    checkInt(opd, 'metric', r.metric, 0, 0xffffffff);
    a.push('metric', String(r.metric));
  }
  if (r.table !== undefined) {
    checkInt(opd, 'table', r.table, 1, 0xffffffff);
    a.push('table', String(r.table));
  }
  if (r.proto !== undefined) {
    if (!WORD_RE.test(r.proto)) throw invalid(opd, `proto ${JSON.stringify(r.proto)} is invalid`);
    a.push('proto', r.proto);
  }
  if (r.mtu !== undefined) {
    checkInt(opd, 'mtu', r.mtu, 68, 65535);
    a.push('mtu', String(r.mtu));
  }
  if (r.advmss !== undefined) {
    checkInt(opd, 'advmss', r.advmss, 1, 65535);
    a.push('advmss', String(r.advmss));
  }
  return a.join(' ');
}

/**
 * Renders one op as batch lines for its tool. Throws KernelError(kind 'invalid') for anything
 * iproute2 would choke on, so nothing is spawned for a malformed plan.
 */
export function renderOp(op: KernelOp, ctx: RenderContext = defaultRenderContext()): RenderedOp {
  if (!op || typeof op !== 'object') throw invalid('op', `not an op: ${JSON.stringify(op)}`);
  const opd = (() => {
    try {
      return describeOp(op);
    } catch {
      return String(op.op);
    }
  })();
  switch (op.op) {
    case 'link-add':
      if (!op.spec || typeof op.spec !== 'object') throw invalid(opd, 'link spec missing');
      return { tool: 'ip', lines: renderLinkAdd(opd, op.spec, ctx) };
    case 'link-del':
      checkName(opd, 'link name', op.name);
      return { tool: 'ip', lines: [`link del dev ${op.name}`] };
    case 'link-set': {
      checkName(opd, 'link name', op.name);
      const lines: string[] = [];
      const a: string[] = [];
      if (op.mac !== undefined) {
        checkMac(opd, 'mac', op.mac);
        a.push('address', op.mac);
      }
      if (op.mtu !== undefined) {
        checkInt(opd, 'mtu', op.mtu, 68, 65535);
        a.push('mtu', String(op.mtu));
      }
      if (op.promisc !== undefined) a.push('promisc', op.promisc ? 'on' : 'off');
      if (op.alias !== undefined) {
        // Quoted so an alias may hold spaces; ip -batch's line splitter has no escapes, hence no quotes inside.
        if (typeof op.alias !== 'string' || Buffer.byteLength(op.alias) > 255 || /["\\\x00-\x1f\x7f]/.test(op.alias)) {
          throw invalid(opd, `alias ${JSON.stringify(op.alias)} is invalid (max 255 bytes, no quotes, backslashes or control characters)`);
        }
        a.push(`alias "${op.alias}"`);
      }
      if (op.master !== undefined) {
        if (op.master === null) a.push('nomaster');
        else {
          checkName(opd, 'master', op.master);
          a.push('master', op.master);
        }
      }
      if (op.newName !== undefined) checkName(opd, 'new name', op.newName);
      if (op.netns !== undefined) {
        // Once the link has left, nothing else in this batch can reach it: settings that survive a move
        // are applied before it, the rest would silently be lost, so they are refused.
        if (op.up !== undefined || op.master !== undefined || op.hairpin !== undefined) {
          throw invalid(opd, 'up/master/hairpin cannot be combined with netns (a moved link goes down and leaves its master); set them in the target netns');
        }
        if (a.length) lines.push(`link set dev ${op.name} ${a.join(' ')}`);
        // The kernel renames during the move (IFLA_IFNAME with the netns attribute), avoiding clashes in the target.
        lines.push(`link set dev ${op.name} netns ${netnsArg(opd, op.netns, ctx)}${op.newName !== undefined ? ` name ${op.newName}` : ''}`);
        return { tool: 'ip', lines };
      }
      if (op.newName !== undefined) a.unshift('name', op.newName);
      if (op.up !== undefined) a.push(op.up ? 'up' : 'down');
      if (a.length) lines.push(`link set dev ${op.name} ${a.join(' ')}`);
      if (op.hairpin !== undefined) lines.push(`link set dev ${op.newName ?? op.name} type bridge_slave hairpin ${op.hairpin ? 'on' : 'off'}`);
      if (lines.length === 0) throw invalid(opd, 'link-set changes nothing');
      return { tool: 'ip', lines };
    }
    case 'addr-add': {
      checkName(opd, 'dev', op.dev);
      const f = checkCidr(opd, 'cidr', op.cidr);
      const a = ['addr', op.replace ? 'replace' : 'add', op.cidr, 'dev', op.dev];
      // IFA_F_NODAD only means something for IPv6 (duplicate address detection).
      if (op.nodad && f === 6) a.push('nodad');
      if (op.noprefixroute) a.push('noprefixroute');
      return { tool: 'ip', lines: [a.join(' ')] };
    }
    case 'addr-del':
      checkName(opd, 'dev', op.dev);
      checkCidr(opd, 'cidr', op.cidr);
      return { tool: 'ip', lines: [`addr del ${op.cidr} dev ${op.dev}`] };
    case 'route-add':
      return { tool: 'ip', lines: [renderRoute(opd, op.replace ? 'replace' : 'add', op.route)] };
    case 'route-del':
      return { tool: 'ip', lines: [renderRoute(opd, 'del', op.route)] };
    case 'neigh-replace':
      checkName(opd, 'dev', op.dev);
      checkIp(opd, 'dst', op.dst);
      checkMac(opd, 'lladdr', op.lladdr);
      return { tool: 'ip', lines: [`neigh replace ${op.dst} lladdr ${op.lladdr} dev ${op.dev} nud permanent`] };
    case 'neigh-del':
      checkName(opd, 'dev', op.dev);
      checkIp(opd, 'dst', op.dst);
      return { tool: 'ip', lines: [`neigh del ${op.dst} dev ${op.dev}`] };
    case 'fdb-replace': {
      checkMac(opd, 'mac', op.mac);
      checkName(opd, 'dev', op.dev);
      const a = ['fdb', 'replace', op.mac, 'dev', op.dev];
      if (op.dst !== undefined) {
        checkIp(opd, 'dst', op.dst);
        a.push('dst', op.dst);
      }
      if (op.self) a.push('self');
      if (op.master) a.push('master');
      if (op.permanent) a.push('permanent');
      return { tool: 'bridge', lines: [a.join(' ')] };
    }
    case 'fdb-append':
      checkMac(opd, 'mac', op.mac);
      checkName(opd, 'dev', op.dev);
      checkIp(opd, 'dst', op.dst);
      return { tool: 'bridge', lines: [`fdb append ${op.mac} dev ${op.dev} dst ${op.dst}`] };
    case 'fdb-del': {
      checkMac(opd, 'mac', op.mac);
      checkName(opd, 'dev', op.dev);
      let l = `fdb del ${op.mac} dev ${op.dev}`;
      if (op.dst !== undefined) {
        checkIp(opd, 'dst', op.dst);
        l += ` dst ${op.dst}`;
      }
      return { tool: 'bridge', lines: [l] };
    }
    default:
      throw invalid(opd, `unknown op ${JSON.stringify((op as { op?: unknown }).op)}`);
  }
}

/** Whether a failure of this op with this error kind means "already gone" (for ignoreMissing). */
export function isMissingFailure(op: KernelOp, kind: string): boolean {
  return kind === 'not-found' && 'ignoreMissing' in op && op.ignoreMissing === true;
}
