// The walk: a packet's path through the namespaces, hop by hop, as the kernel would take it now.
// At each namespace the kernel's FIB decides the next hop (input routing when the packet came in
// on a device, output routing where it was sent); the link layer then decides where the frame goes:
// a veth's other end (maybe in another namespace), a bridge's FDB, a macvlan's parent or sibling,
// a VXLAN device's FDB (encapsulation: the outer packet takes its own FIB path over the underlay
// and is decapsulated by the VXLAN device of the same VNI on the node that owns the VTEP). The walk
// stops where the packet is delivered (a local address) or at the first step that breaks, naming
// the object and the command that shows it.
import type { Link } from '../kernel/index.js';
import { contains, parseCidr, tryParseCidr, tryParseIP } from '../util/ip.js';
import { HOST_NS, type FibAnswer, type TraceView } from './view.js';
import { traceHook, type NfCarry, type NfHook } from './netfilter/index.js';
import type { Hop, Step, TraceQuery, TraceResult } from './types.js';

const MAX_HOPS = 40;
/** UDP + VXLAN + inner Ethernet headers added by VXLAN (the outer IP header is the outer packet's own) */
const VXLAN_OVERHEAD = 8 + 8 + 14;

interface Packet {
  src: string;
  dst: string;
  proto: string;
  sport?: number;
  dport?: number;
  size: number;
  /** netfilter state in the current namespace (mark, NAT done), from hook to hook */
  nf?: NfCarry;
}

/** A packet inside a tunnel: the outer header, and what is resumed when it is decapsulated. */
interface Tunnel {
  /** vxlan: the kernel's device (an Ethernet frame in UDP); tun: podnet-tund (the IP packet in UDP) */
  kind: 'vxlan' | 'tun';
  vni?: number;
  port: number;
  inner: Packet;
  /** vxlan: the destination MAC of the inner frame */
  innerMac?: string;
  /** bytes the tunnel adds besides the outer IP header */
  overhead: number;
}

/** podnet-tund: the inner IP packet is the whole UDP payload */
const TUN_OVERHEAD = 8;

class Broken extends Error {}

/** Where a frame is taken up by layer 3: the namespace, the device, and the hop it belongs to. */
interface Arrival {
  ns: string;
  dev: string;
  hop: Hop;
}

export async function walk(view: TraceView, q: TraceQuery): Promise<TraceResult> {
  const hops: Hop[] = [];
  const w = new Walker(view, hops);
  try {
    await w.l3(q.fromNs, undefined, { src: q.src, dst: q.dst, proto: q.proto, sport: q.sport, dport: q.dport, size: q.size }, undefined);
  } catch (e) {
    if (!(e instanceof Broken)) throw e;
  }
  const bh = hops.findIndex((h) => h.steps.some((s) => !s.ok));
  if (bh < 0) return { query: q, hops, verdict: 'complete' };
  const bs = hops[bh].steps.findIndex((s) => !s.ok);
  const step = hops[bh].steps[bs];
  return { query: q, hops, verdict: 'broken', broken: { hop: bh, step: bs, reason: step.text, ...(step.command ? { command: step.command } : {}) } };
}

const ipCmd = (ns: string, args: string) => `ip -n ${ns} ${args}`;
const isMulticastMac = (mac: string) => (parseInt(mac.slice(0, 2), 16) & 1) === 1;

class Walker {
  private count = 0;
  /** a hop's packet as it leaves, where a source NAT changed it (its `packet` is as it was inside) */
  private readonly leaving = new WeakMap<Hop, Hop['packet']>();
  private readonly agentsSaid = new Set<string>();
  constructor(
    private readonly view: TraceView,
    private readonly hops: Hop[],
  ) {}

  private newHop(ns: string, iif: string | undefined, pkt: Packet, tun?: Tunnel): Hop {
    if (++this.count > MAX_HOPS) throw this.fail(this.hops[this.hops.length - 1], 'route', `more than ${MAX_HOPS} hops: a routing loop`, undefined);
    const role = this.view.role(ns);
    const hop: Hop = {
      ns,
      ...(role ? { role } : {}),
      ...(iif ? { in: iif } : {}),
      packet: tun
        ? { src: tun.inner.src, dst: tun.inner.dst, proto: tun.inner.proto, outer: { src: pkt.src, dst: pkt.dst, proto: 'udp', dport: tun.port, ...(tun.vni !== undefined ? { vni: tun.vni } : {}) } }
        : { src: pkt.src, dst: pkt.dst, proto: pkt.proto },
      steps: [],
    };
    this.hops.push(hop);
    return hop;
  }

  /** The same packet (frame) crossing into another namespace at layer 2: a hop of its own. */
  private follow(prev: Hop, ns: string, iif: string): Hop {
    if (++this.count > MAX_HOPS) throw this.fail(prev, 'bridge', `more than ${MAX_HOPS} hops: a loop`, undefined);
    const role = this.view.role(ns);
    const hop: Hop = { ns, ...(role ? { role } : {}), in: iif, packet: { ...(this.leaving.get(prev) ?? prev.packet) }, steps: [] };
    this.hops.push(hop);
    return hop;
  }

  private fail(hop: Hop, kind: Step['kind'], text: string, command: string | undefined, object?: Record<string, unknown>): Broken {
    hop.steps.push({ kind, text, ok: false, ...(object ? { object } : {}), ...(command ? { command } : {}) });
    return new Broken(text);
  }

  private ok(hop: Hop, kind: Step['kind'], text: string, command?: string, object?: Record<string, unknown>): void {
    hop.steps.push({ kind, text, ok: true, ...(object ? { object } : {}), ...(command ? { command } : {}) });
  }

  private async link(ns: string, by: { name?: string; index?: number }): Promise<Link | undefined> {
    const links = await this.view.links(ns);
    return links.find((l) => (by.name !== undefined ? l.name === by.name : l.index === by.index));
  }

  /** The packet in `ns`, arrived on `iif` (or sent from here): routed, delivered, or broken. */
  async l3(ns: string, iif: string | undefined, pkt: Packet, tun: Tunnel | undefined, arrived?: Hop): Promise<void> {
    // a frame that crossed into this namespace already has its hop (in = the port it came in on)
    const hop = arrived && arrived.ns === ns ? arrived : this.newHop(ns, iif, pkt, tun);
    this.agentCheck(hop, ns);
    // netfilter before routing: prerouting for a packet that arrived (its state starts anew in this
    // namespace), output for one sent from here; a DNAT sends the rest of the walk to the endpoint
    pkt = await this.netfilter(hop, ns, iif ? 'prerouting' : 'output', iif ? { ...pkt, nf: undefined } : pkt, { iif }, tun);
    const fib = await this.view.fib(ns, { dst: pkt.dst, src: pkt.src, iif, proto: pkt.proto as 'tcp', sport: pkt.sport, dport: pkt.dport });
    if (fib.type === 'error') throw this.fail(hop, 'route', `no route to ${pkt.dst}${iif ? ` for a packet from ${pkt.src} in on ${iif}` : ''}: ${fib.error}${this.whoseSubnet(ns, pkt.dst)}`, fib.command);
    const entry = fib.entry;
    const obj = { ...fib } as Record<string, unknown>;
    delete obj.command;
    if (['unreachable', 'blackhole', 'prohibit', 'throw'].includes(fib.type)) {
      throw this.fail(hop, 'route', `route ${entry?.dst ?? pkt.dst} is ${fib.type}${entry?.protocol ? ` (proto ${entry.protocol})` : ''}: the packet is dropped here`, fib.command, obj);
    }
    if (fib.type === 'local') {
      this.ok(hop, 'route', `${pkt.dst} is local here (table ${fib.table ?? 'local'})`, fib.command, obj);
      pkt = await this.netfilter(hop, ns, 'input', pkt, { iif: iif ?? 'lo' }, tun);
      if (tun) return this.decap(hop, ns, pkt, tun);
      const owner = (await this.view.addresses(ns)).find((a) => a.address === pkt.dst);
      this.ok(hop, 'deliver', `delivered: ${pkt.dst}${owner ? ` on ${owner.ifname}` : ''} in ${ns}`);
      return;
    }
    const missing = this.missingPeerRoute(ns, pkt.dst, fib);
    if (missing) throw this.fail(hop, 'route', missing.text, missing.command, obj);
    this.ok(hop, 'route', describeRoute(pkt.dst, fib), fib.command, obj);
    const out = await this.link(ns, { name: fib.dev });
    if (!out) throw this.fail(hop, 'route', `the route's device ${fib.dev} does not exist`, ipCmd(ns, 'link show'));
    hop.out = out.name;
    if (!out.up || out.operState === 'DOWN') throw this.fail(hop, 'route', `${out.name} is down (${out.operState})`, ipCmd(ns, `link show ${out.name}`));
    const wire = pkt.size + (tun ? (pkt.dst.includes(':') ? 40 : 20) + tun.overhead : 0);
    if (wire > out.mtu) {
      throw this.fail(hop, 'mtu', `a ${wire}-byte packet does not fit ${out.name}'s MTU ${out.mtu} (DF set: dropped, the sender gets "fragmentation needed")`, ipCmd(ns, `link show ${out.name}`), { mtu: out.mtu, size: wire });
    }
    this.ok(hop, 'mtu', `${wire} bytes fit ${out.name}'s MTU ${out.mtu}`);
    // netfilter after the routing decision: forward (a packet passing through), then postrouting (masquerade)
    if (iif) pkt = await this.netfilter(hop, ns, 'forward', pkt, { iif, oif: out.name }, tun);
    pkt = await this.netfilter(hop, ns, 'postrouting', pkt, { ...(iif ? { iif } : {}), oif: out.name, ...(fib.prefsrc ? { prefsrc: fib.prefsrc } : {}) }, tun);
    if (out.kind === 'tun') return this.tunEncap(hop, ns, out, pkt);
    const nh = fib.gateway ?? pkt.dst;
    const mac = await this.neighbour(hop, ns, out, nh);
    if (out.kind === 'vxlan') return this.encap(hop, ns, out, mac, pkt);
    const at = await this.l2Transmit(hop, ns, out, mac);
    return this.l3(at.ns, at.dev, pkt, tun, at.hop);
  }

  /** Netfilter at a hook here (src/trace/netfilter/): its steps on this hop; a drop breaks the walk; a NAT changes the packet for the rest of it. */
  private async netfilter(hop: Hop, ns: string, hook: NfHook, pkt: Packet, io: { iif?: string; oif?: string; prefsrc?: string }, tun: Tunnel | undefined): Promise<Packet> {
    const family = pkt.dst.includes(':') ? 6 : 4;
    const r = await traceHook(this.view, { ns, hook, pkt: { family, src: pkt.src, dst: pkt.dst, proto: pkt.proto, sport: pkt.sport, dport: pkt.dport, size: pkt.size }, carry: pkt.nf, ...io });
    if (!r) return pkt;
    hop.steps.push(...r.steps);
    if (r.broken) throw new Broken(r.steps[r.steps.length - 1].text);
    // the packet as it is in this namespace: after a DNAT, the endpoint's address
    if (!tun && (hook === 'prerouting' || hook === 'output')) hop.packet.dst = r.pkt.dst;
    // after a source NAT, the packet leaves with the new source: the next namespace sees that one
    if (!tun && hook === 'postrouting' && r.pkt.src !== pkt.src) this.leaving.set(hop, { ...hop.packet, src: r.pkt.src });
    return { ...pkt, src: r.pkt.src, dst: r.pkt.dst, sport: r.pkt.sport, dport: r.pkt.dport, nf: r.carry };
  }

  /**
   * On a node, a packet for another node's pod subnet must match a route inside the cluster network
   * (the backend's route for that subnet, or one for the whole network): a broader one (the default
   * route) carries it to a router that knows no pods.
   */
  private missingPeerRoute(ns: string, dst: string, fib: FibAnswer): { text: string; command: string } | undefined {
    const facts = this.view.cluster?.();
    if (!facts || facts.routersKnowPods || !facts.subnets.some((x) => x.ns === ns)) return undefined;
    const ip = tryParseIP(dst);
    const peer = ip && facts.subnets.find((x) => x.ns !== ns && contains(parseCidr(x.cidr), ip));
    if (!peer) return undefined;
    const entry = fib.entry?.dst && fib.entry.dst !== 'default' ? tryParseCidr(fib.entry.dst) : undefined;
    const inCluster = entry && facts.networks.some((n) => {
      const net = parseCidr(n);
      return net.family === entry.family && entry.prefix >= net.prefix && contains(net, entry.addr);
    });
    if (inCluster) return undefined;
    const self = facts.subnets.find((x) => x.ns === ns)!.node;
    const why = this.agentDown(peer.node)
      ? `${peer.node}'s agent is not running: once its lease lapses, the other nodes drop their routes to it`
      : this.agentDown(self)
        ? `this node's agent (${self}) is not running, so nothing installs it`
        : `the backend installs one route per peer node: is this node's agent running, has it seen ${peer.node}'s lease?`;
    return {
      text: `no route for node ${peer.node}'s pod subnet ${peer.cidr} here: the packet would leave by ${fib.entry?.dst ?? 'the'} route via ${fib.gateway ?? fib.dev}, which knows no pods (${why})`,
      command: `ip -n ${ns} route show ${peer.cidr}`,
    };
  }

  /**
   * A node whose agent is not running: the kernel keeps what the agent programmed, so the packet may
   * still pass, but nothing renews the node's lease (the peers drop its routes when it lapses) or
   * adds routes for new peers — said once per node, on the path, not a break by itself.
   */
  private agentCheck(hop: Hop, ns: string): void {
    const a = this.view.cluster?.()?.agents?.find((x) => x.ns === ns);
    if (!a || a.running || this.agentsSaid.has(ns)) return;
    this.agentsSaid.add(ns);
    this.ok(hop, 'agent', `the agent of node ${a.node} is not running${a.pid ? ` (PID ${a.pid} gone)` : ''}: this node's routes and FDB stay as it left them, but its lease is not renewed — when it lapses, the other nodes drop their routes to ${a.node}`);
  }

  /** The node's agent is down (for the texts of breaks it explains). */
  private agentDown(node: string): boolean {
    return this.view.cluster?.()?.agents?.some((x) => x.node === node && !x.running) ?? false;
  }

  /** For a lookup that failed: the node whose pod subnet the address is in, and who should know the route. */
  private whoseSubnet(ns: string, dst: string): string {
    const ip = tryParseIP(dst);
    const peer = ip && this.view.cluster?.()?.subnets.find((x) => contains(parseCidr(x.cidr), ip));
    if (!peer) return '';
    const router = this.view.role(ns) === 'router';
    const agent = this.agentDown(peer.node) ? `${peer.node}'s agent is not running` : `is ${peer.node}'s agent running and its session Established?`;
    return `; ${dst} is in node ${peer.node}'s pod subnet ${peer.cidr}${router ? `, which the router learns over BGP from ${peer.node}: ${agent}` : ''}`;
  }

  /** The next hop's MAC on `out`: the neighbour entry, or the address's owner when none is resolved yet. */
  private async neighbour(hop: Hop, ns: string, out: Link, nh: string): Promise<string> {
    const cmd = ipCmd(ns, `neigh show ${nh} dev ${out.name}`);
    const n = (await this.view.neighbours(ns)).find((x) => x.dst === nh && x.dev === out.name);
    const state = n?.state.join(',') ?? '';
    if (n && /FAILED/.test(state)) throw this.fail(hop, 'neighbour', `neighbour ${nh} on ${out.name} is FAILED: nothing answered ARP/ND for it`, cmd, { ...n });
    if (n?.lladdr && !/INCOMPLETE/.test(state)) {
      this.ok(hop, 'neighbour', `neighbour ${nh} is ${n.lladdr} on ${out.name} (${state})`, cmd, { ...n });
      return n.lladdr;
    }
    if (out.kind === 'vxlan') throw this.fail(hop, 'neighbour', `no neighbour entry for ${nh} on ${out.name} (VXLAN does no ARP: the agent writes one per peer node; is the agent running and has it seen that node's lease?)`, cmd);
    // not resolved yet: the kernel will ask (ARP/ND); who would answer is whoever owns the address
    for (const other of this.view.namespaces()) {
      const a = (await this.view.addresses(other)).find((x) => x.address === nh);
      if (!a) continue;
      const l = await this.link(other, { name: a.ifname });
      if (!l) continue;
      this.ok(hop, 'neighbour', `neighbour ${nh} not resolved yet on ${out.name}${state ? ` (${state})` : ''}: ARP/ND will find ${l.mac} (${a.ifname} in ${other})`, cmd);
      return l.mac;
    }
    throw this.fail(hop, 'neighbour', `no neighbour entry for ${nh} on ${out.name}, and no namespace on the path owns ${nh}: nothing will answer ARP/ND`, cmd);
  }

  /** A frame for `mac` leaves `dev` in `ns`: where is it received at layer 3? */
  private async l2Transmit(hop: Hop, ns: string, dev: Link, mac: string, depth = 0): Promise<Arrival> {
    if (depth > 16) throw this.fail(hop, 'bridge', `layer-2 loop for ${mac}`, undefined);
    if (dev.kind === 'veth') {
      const peerNs = dev.linkNetnsId !== undefined ? await this.otherEnd(ns, dev) : ns;
      if (!peerNs) throw this.fail(hop, 'veth', `${dev.name}'s peer is in a namespace without a name (netnsid ${dev.linkNetnsId})`, ipCmd(ns, `-d link show ${dev.name}`));
      const peer = dev.link && dev.linkNetnsId === undefined ? await this.link(ns, { name: dev.link }) : await this.link(peerNs, { index: dev.linkIndex });
      if (!peer) throw this.fail(hop, 'veth', `${dev.name}'s peer (ifindex ${dev.linkIndex}) is gone from ${peerNs}`, ipCmd(peerNs, 'link show'));
      this.ok(hop, 'veth', `veth ${dev.name} -> ${peer.name}${peerNs !== ns ? ` in ${peerNs}` : ''}`, ipCmd(ns, `-d link show ${dev.name}`));
      if (!peer.up) throw this.fail(hop, 'veth', `${peer.name} in ${peerNs} is down`, ipCmd(peerNs, `link show ${peer.name}`));
      hop.out ??= dev.name;
      return this.l2Receive(peerNs !== ns ? this.follow(hop, peerNs, peer.name) : hop, peerNs, peer, mac, depth + 1);
    }
    if (dev.kind === 'bridge') return this.bridgeForward(hop, ns, dev, undefined, mac, depth);
    if (dev.kind === 'macvlan') {
      const parentNs = dev.linkNetnsId !== undefined ? await this.otherEnd(ns, dev) : ns;
      const parent = parentNs && (dev.link && dev.linkNetnsId === undefined ? await this.link(ns, { name: dev.link }) : await this.link(parentNs, { index: dev.linkIndex }));
      if (!parentNs || !parent) throw this.fail(hop, 'macvlan', `${dev.name}'s parent link is not found`, ipCmd(ns, `-d link show ${dev.name}`));
      const sib = await this.macvlanChild(parentNs, parent, mac);
      if (sib && String(dev.info?.mode ?? 'vepa') === 'bridge') {
        this.ok(hop, 'macvlan', `macvlan ${dev.name} (bridge mode) -> sibling ${sib.dev} in ${sib.ns} on the same parent ${parent.name}`, ipCmd(ns, `-d link show ${dev.name}`));
        return { ns: sib.ns, dev: sib.dev, hop: sib.ns !== ns ? this.follow(hop, sib.ns, sib.dev) : hop };
      }
      this.ok(hop, 'macvlan', `macvlan ${dev.name} -> out of its parent ${parent.name} in ${parentNs}`, ipCmd(ns, `-d link show ${dev.name}`));
      return this.l2Transmit(parentNs !== ns ? this.follow(hop, parentNs, dev.name) : hop, parentNs, parent, mac, depth + 1);
    }
    throw this.fail(hop, 'veth', `frames leaving ${dev.name} (${dev.kind ?? 'a physical device'}) go where this trace cannot follow`, ipCmd(ns, `-d link show ${dev.name}`));
  }

  /** A frame for `mac` arrives on `dev` in `ns`. */
  private async l2Receive(hop: Hop, ns: string, dev: Link, mac: string, depth: number): Promise<Arrival> {
    if (dev.master) {
      const br = await this.link(ns, { name: dev.master });
      if (br?.kind === 'bridge') return this.bridgeForward(hop, ns, br, dev, mac, depth);
    }
    const child = await this.macvlanChild(ns, dev, mac);
    if (child) {
      this.ok(hop, 'macvlan', `frame for ${mac} on ${dev.name} -> its macvlan ${child.dev} in ${child.ns}`);
      return { ...child, hop: child.ns !== ns ? this.follow(hop, child.ns, child.dev) : hop };
    }
    if (dev.mac.toLowerCase() === mac.toLowerCase() || isMulticastMac(mac)) return { ns, dev: dev.name, hop };
    throw this.fail(hop, 'veth', `a frame for ${mac} arrives on ${dev.name} in ${ns}, whose address is ${dev.mac}: dropped`, ipCmd(ns, `link show ${dev.name}`));
  }

  /** The bridge's forwarding decision for `mac` (arrived on `from`, or sent by the bridge itself). */
  private async bridgeForward(hop: Hop, ns: string, br: Link, from: Link | undefined, mac: string, depth: number): Promise<Arrival> {
    const cmd = `bridge -n ${ns} fdb show br ${br.name}`;
    const fdb = (await this.view.fdb(ns)).filter((e) => e.mac.toLowerCase() === mac.toLowerCase() && (e.master === br.name || e.dev === br.name) && !e.flags.includes('self'));
    const local = br.mac.toLowerCase() === mac.toLowerCase() || fdb.some((e) => e.state === 'permanent' && e.master === br.name);
    if (local && from) {
      this.ok(hop, 'bridge', `bridge ${br.name}: ${mac} is the bridge's own address: up to its IP layer`, cmd);
      return { ns, dev: br.name, hop };
    }
    const entry = fdb.find((e) => e.dev !== br.name);
    let port: Link | undefined;
    if (entry) {
      port = await this.link(ns, { name: entry.dev });
      this.ok(hop, 'bridge', `bridge ${br.name}: FDB ${mac} -> port ${entry.dev}${entry.state ? ` (${entry.state})` : ' (learned)'}`, cmd, { ...entry });
    } else {
      // unknown unicast is flooded: the port whose far side owns the MAC receives it
      for (const p of (await this.view.links(ns)).filter((l) => l.master === br.name && l.name !== from?.name)) {
        if (await this.owns(ns, p, mac)) {
          port = p;
          break;
        }
      }
      if (!port) throw this.fail(hop, 'bridge', `bridge ${br.name}: ${mac} is in no FDB entry and behind no port: the frame is flooded and lost`, cmd);
      this.ok(hop, 'bridge', `bridge ${br.name}: ${mac} not in the FDB yet: flooded, reaching port ${port.name}`, cmd);
    }
    if (!port) throw this.fail(hop, 'bridge', `bridge ${br.name}: FDB port ${entry?.dev} does not exist`, cmd);
    if (from && port.name === from.name) throw this.fail(hop, 'bridge', `bridge ${br.name}: ${mac} is behind the port it came in on (${port.name}), and hairpin is off`, cmd);
    if (!port.up) throw this.fail(hop, 'bridge', `bridge ${br.name}: port ${port.name} is down`, ipCmd(ns, `link show ${port.name}`));
    hop.out = port.name;
    return this.l2Transmit(hop, ns, port, mac, depth + 1);
  }

  /**
   * The namespace of a link's peer (veth) or parent (macvlan) in another namespace: the one its
   * netnsid names, or — for a namespace without a name, such as a real node's own — the candidate
   * holding a link of that index that points back here.
   */
  private async otherEnd(ns: string, dev: Link): Promise<string | undefined> {
    const named = await this.view.peerNs(ns, dev.linkNetnsId!);
    if (named) return named;
    for (const other of this.view.namespaces()) {
      if (other === ns) continue;
      const l = await this.link(other, { index: dev.linkIndex });
      if (!l) continue;
      // a macvlan has no back pointer to check, and ifindexes repeat across namespaces: only the
      // nameless host namespace is taken on the index alone
      if (dev.kind !== 'veth') {
        if (other === HOST_NS) return other;
        continue;
      }
      if (l.kind === 'veth' && l.linkIndex === dev.index && l.linkNetnsId !== undefined && (await this.view.peerNs(other, l.linkNetnsId)) === ns) return other;
    }
    return undefined;
  }

  /** Whether the far side of a bridge port (its veth peer) has this MAC. */
  private async owns(ns: string, port: Link, mac: string): Promise<boolean> {
    if (port.kind !== 'veth') return false;
    const peerNs = port.linkNetnsId !== undefined ? await this.otherEnd(ns, port) : ns;
    if (!peerNs) return false;
    const peer = await this.link(peerNs, { index: port.linkIndex });
    if (!peer) return false;
    if (peer.mac.toLowerCase() === mac.toLowerCase()) return true;
    if (peer.master) return (await this.view.links(peerNs)).some((l) => l.master === peer.master && l.mac.toLowerCase() === mac.toLowerCase());
    return false;
  }

  /** A macvlan child of `parent` (in `ns`) with this MAC, in whatever namespace it was moved to. */
  private async macvlanChild(ns: string, parent: Link, mac: string): Promise<{ ns: string; dev: string } | undefined> {
    for (const other of this.view.namespaces()) {
      for (const l of await this.view.links(other)) {
        if (l.kind !== 'macvlan' || l.mac.toLowerCase() !== mac.toLowerCase()) continue;
        if (other === ns && l.link === parent.name) return { ns: other, dev: l.name };
        if (l.linkNetnsId !== undefined && l.linkIndex === parent.index && (await this.view.peerNs(other, l.linkNetnsId)) === ns) return { ns: other, dev: l.name };
      }
    }
    return undefined;
  }

  /** Into a VXLAN device: the FDB gives the remote VTEP; the outer packet is routed from here. */
  private async encap(hop: Hop, ns: string, dev: Link, mac: string, inner: Packet): Promise<void> {
    const cmd = `bridge -n ${ns} fdb show dev ${dev.name}`;
    const fdb = (await this.view.fdb(ns)).filter((e) => e.dev === dev.name && e.mac.toLowerCase() === mac.toLowerCase() && e.dst);
    const vni = Number(dev.info?.id);
    const port = Number(dev.info?.port ?? 8472);
    if (fdb.length === 0) throw this.fail(hop, 'encap', `no FDB entry for ${mac} on ${dev.name}: VXLAN does not know which node's VTEP has it (the agent writes one per peer node)`, cmd);
    const vtep = fdb[0].dst!;
    const local = typeof dev.info?.local === 'string' ? (dev.info.local as string) : undefined;
    this.ok(hop, 'encap', `VXLAN ${dev.name}: VNI ${vni}, ${mac} -> VTEP ${vtep}: encapsulated in UDP ${local ?? '(source by route)'} -> ${vtep}:${port}`, cmd, { ...fdb[0], vni, port, ...(local ? { local } : {}) });
    // the outer packet's size is the inner's plus the overhead, which l3 adds while it is in a tunnel
    const src = local ?? (await this.view.fib(ns, { dst: vtep })).prefsrc ?? '';
    return this.l3(ns, undefined, { src, dst: vtep, proto: 'udp', dport: port, size: inner.size }, { kind: 'vxlan', vni, port, inner, innerMac: mac, overhead: VXLAN_OVERHEAD });
  }

  /** The outer packet reached the node that owns the VTEP: the VXLAN device of that VNI and port takes it. */
  private async decap(hop: Hop, ns: string, outer: Packet, tun: Tunnel): Promise<void> {
    if (tun.kind === 'tun') return this.tunDecap(hop, ns, outer, tun);
    const dev = (await this.view.links(ns)).find((l) => l.kind === 'vxlan' && Number(l.info?.id) === tun.vni && Number(l.info?.port ?? 8472) === tun.port);
    if (!dev) throw this.fail(hop, 'decap', `${outer.dst} is here but no VXLAN device with VNI ${tun.vni} on port ${tun.port}: the UDP packet is dropped`, ipCmd(ns, '-d link show type vxlan'));
    if (!dev.up) throw this.fail(hop, 'decap', `VXLAN device ${dev.name} is down`, ipCmd(ns, `link show ${dev.name}`));
    this.ok(hop, 'decap', `decapsulated by ${dev.name} (VNI ${tun.vni}, port ${tun.port})`, ipCmd(ns, `-d link show ${dev.name}`));
    const at = await this.l2Receive(hop, ns, dev, tun.innerMac!, 0);
    // the inner packet is a hop of its own, also in this namespace (its header differs)
    return this.l3(at.ns, at.dev, tun.inner, undefined, at.hop === hop ? undefined : at.hop);
  }

  /**
   * Into a TUN device: podnet-tund (a userspace datapath) reads the packet and sends it as one UDP
   * datagram to the node whose peer line holds the destination (its table, as the daemon read it).
   */
  private async tunEncap(hop: Hop, ns: string, dev: Link, inner: Packet): Promise<void> {
    const d = this.view.tunDatapath ? await this.view.tunDatapath(ns, dev.name) : undefined;
    if (!d) throw this.fail(hop, 'encap', `no podnet-tund attached to ${dev.name} in ${ns}: nothing reads the packets routed into it (the agent starts it: is the agent running? its log: <data-dir>/tund/log)`, `ip -n ${ns} -d link show ${dev.name}`);
    const peer = longestMatch(d.table.peers, inner.dst);
    if (!peer) {
      throw this.fail(hop, 'encap', `podnet-tund (PID ${d.pid}) has no peer for ${inner.dst} in ${d.peersFile}: it answers ICMP unreachable (the agent writes one peer line per node: has it seen that node's lease?)`, `cat ${d.peersFile}`, { ...d.table });
    }
    this.ok(hop, 'encap', `podnet-tund (PID ${d.pid}) on ${dev.name}: ${inner.dst} is in peer ${peer.subnet} -> node ${peer.publicIP}: the IP packet in UDP ${d.listen} -> ${peer.publicIP}:${peer.port}`, `cat ${d.peersFile}`, { peer, listen: d.listen, port: d.port });
    return this.l3(ns, undefined, { src: d.listen, dst: peer.publicIP, proto: 'udp', dport: peer.port, size: inner.size }, { kind: 'tun', port: peer.port, inner, overhead: TUN_OVERHEAD });
  }

  /** The datagram reached the peer node: its podnet-tund on that port writes the inner packet into its TUN device. */
  private async tunDecap(hop: Hop, ns: string, outer: Packet, tun: Tunnel): Promise<void> {
    const tunDev = (await this.view.links(ns)).find((l) => l.kind === 'tun' && l.up);
    const d = tunDev && this.view.tunDatapath ? await this.view.tunDatapath(ns, tunDev.name) : undefined;
    if (!tunDev || !d || d.port !== tun.port) {
      throw this.fail(hop, 'decap', `${outer.dst} is here but no podnet-tund listens on UDP ${tun.port}: the datagram is dropped (ICMP port unreachable)`, `ip netns exec ${ns} ss -lun sport = :${tun.port}`);
    }
    // podnet-tund's checks on each datagram (docs/tun.md): a peer's address, an inner source in
    // that peer's subnets, an inner destination in a local subnet
    const from = d.table.peers.filter((p) => p.publicIP === outer.src);
    if (from.length === 0) {
      throw this.fail(hop, 'decap', `podnet-tund (PID ${d.pid}) here drops it: the sender ${outer.src} is in no peer line of ${d.peersFile} (drop_unknown_source; has this node's agent seen the sender's lease?)`, `cat ${d.peersFile}`, { ...d.table });
    }
    if (!longestMatch(from, tun.inner.src)) {
      throw this.fail(hop, 'decap', `podnet-tund (PID ${d.pid}) here drops it: the inner source ${tun.inner.src} is outside the sender's subnets (${from.map((p) => p.subnet).join(', ')}) (drop_inner_source: a node sends to pods from its podnet.tun address, not its underlay address)`, `cat ${d.peersFile}`, { ...d.table });
    }
    if (!longestMatch(d.table.locals.map((subnet) => ({ subnet })), tun.inner.dst)) {
      throw this.fail(hop, 'decap', `podnet-tund (PID ${d.pid}) here does not accept ${tun.inner.dst}: it is in none of its local subnets (${d.table.locals.join(', ') || 'none'}), so it drops the packet`, `cat ${d.peersFile}`);
    }
    this.ok(hop, 'decap', `podnet-tund (PID ${d.pid}) on UDP ${d.listen}:${d.port} takes it: the inner packet into ${tunDev.name}`, `cat ${d.peersFile}`);
    return this.l3(ns, tunDev.name, tun.inner, undefined);
  }
}

/** The longest prefix among `cidrs` that holds `ip`. */
function longestMatch<T extends { subnet: string }>(items: T[], ip: string): T | undefined {
  const a = tryParseIP(ip);
  if (!a) return undefined;
  let best: T | undefined;
  let bestLen = -1;
  for (const it of items) {
    const c = tryParseCidr(it.subnet);
    if (c && c.family === a.family && contains(c, a) && c.prefix > bestLen) {
      best = it;
      bestLen = c.prefix;
    }
  }
  return best;
}

function describeRoute(dst: string, f: FibAnswer): string {
  const e = f.entry;
  const proto = e?.protocol ? ` proto ${e.protocol === '80' ? '80 (podnet)' : e.protocol}` : '';
  return `route ${e?.dst ?? dst}${f.gateway ? ` via ${f.gateway}` : ''} dev ${f.dev}${proto}${f.table && f.table !== 'main' ? ` table ${f.table}` : ''}`;
}
