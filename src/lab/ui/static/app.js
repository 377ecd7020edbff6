// podnet lab ui: the page. Draws the lab (GET /api/events: `topology` events, the model of
// src/lab/ui/topology.ts) as hand-made SVG, and a trace (GET /api/trace) over it hop by hop.
// Layout, top to bottom: the router (with racks), the fabric (its racks as segments), the nodes in
// a row with the tunnels between them, each node's pods under it; services in a column on the
// right with a line to each endpoint. A trace numbers the namespaces it passes in order, draws the
// links it crosses, puts the step that decided each hop beside it and marks the broken hop red.
// Every namespace is an element with data-ns (and data-kind, data-name); each hop badge is
// .hop-badge with data-hop and data-ns, in path order.
(() => {
  'use strict';
  const SVGNS = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  // geometry (px)
  const PAD = 24;
  const BOX_W = 210;
  const CALLOUT_W = 228;
  const COL = BOX_W + CALLOUT_W + 32;
  const NODE_H = 94;
  const POD_W = 190;
  const POD_H = 54;
  const POD_GAP = 16;
  const POD_INDENT = 26;
  const ROUTER_H = 56;
  const SVC_W = 230;
  const SVC_H = 64;
  const LINE = 13;
  const CHARS = 32; // monospace 11px (6.6 px a character) in CALLOUT_W

  let topo = null; // the last topology
  let trace = null; // the last trace result
  let traceAt = null;
  let rev = 0;
  let geo = null; // boxes and link geometry of the drawn topology
  let gone = false; // the lab's state is gone (the banner says so)

  function el(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null && v !== false) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  }
  function txt(parent, x, y, s, cls) {
    const t = el('text', { x, y, class: cls }, parent);
    t.textContent = s;
    return t;
  }
  function tip(parent, s) {
    el('title', {}, parent).textContent = s;
  }
  function h(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null && v !== false) e.setAttribute(k, String(v));
    for (const c of children || []) e.append(c);
    return e;
  }
  function wrap(s, width, maxLines) {
    const words = String(s).split(/\s+/).filter(Boolean);
    const lines = [];
    let cur = '';
    for (let w of words) {
      while (w.length > width) {
        if (cur) {
          lines.push(cur);
          cur = '';
        }
        lines.push(w.slice(0, width));
        w = w.slice(width);
      }
      if (!cur) cur = w;
      else if (cur.length + 1 + w.length <= width) cur += ' ' + w;
      else {
        lines.push(cur);
        cur = w;
      }
    }
    if (cur) lines.push(cur);
    if (lines.length > maxLines) {
      const kept = lines.slice(0, maxLines);
      kept[maxLines - 1] = kept[maxLines - 1].slice(0, width - 1) + '…';
      return kept;
    }
    return lines;
  }

  // ---- layout --------------------------------------------------------------------------------

  function layout(t) {
    const boxes = new Map(); // key (ns, or rack:N) → {x, y, w, h}
    // columns: the nodes (rack by rack; a rack without nodes keeps an empty column), then etcd members
    const cols = [];
    if (t.racks.length) {
      for (const r of t.racks) {
        const ns = t.nodes.filter((n) => n.rack === r.index);
        if (ns.length === 0) cols.push({ kind: 'empty', rack: r.index });
        for (const n of ns) cols.push({ kind: 'node', node: n, rack: r.index });
      }
      for (const n of t.nodes) if (!t.racks.some((r) => r.index === n.rack)) cols.push({ kind: 'node', node: n });
    } else for (const n of t.nodes) cols.push({ kind: 'node', node: n });
    for (const m of t.etcd) cols.push({ kind: 'etcd', member: m, rack: t.racks.length ? 1 : undefined });
    const ncols = Math.max(cols.length, 1);
    const colX = (i) => PAD + i * COL;

    const routerY = PAD;
    const fabricY = t.router ? routerY + ROUTER_H + 50 : PAD;
    const fabricH = t.racks.length ? 98 : 64;
    const fabricW = Math.max((ncols - 1) * COL + BOX_W, BOX_W);
    boxes.set(t.fabric.ns, { x: PAD, y: fabricY, w: fabricW, h: fabricH });
    for (const r of t.racks) {
      const idx = cols.map((c, i) => (c.rack === r.index ? i : -1)).filter((i) => i >= 0);
      const x0 = colX(Math.min(...idx));
      const x1 = colX(Math.max(...idx)) + BOX_W;
      boxes.set('rack:' + r.index, { x: x0 + 8, y: fabricY + 30, w: x1 - x0 - 16, h: 58 });
    }
    if (t.router) boxes.set(t.router.ns, { x: PAD + fabricW / 2 - BOX_W / 2, y: routerY, w: BOX_W, h: ROUTER_H });

    const nodesY = fabricY + fabricH + 96;
    let bottom = nodesY + NODE_H;
    cols.forEach((c, i) => {
      if (c.kind === 'node') {
        boxes.set(c.node.ns, { x: colX(i), y: nodesY, w: BOX_W, h: NODE_H, col: i });
        t.pods
          .filter((p) => p.node === c.node.name)
          .forEach((p, k) => {
            const y = nodesY + NODE_H + 26 + k * (POD_H + POD_GAP);
            boxes.set(p.ns, { x: colX(i) + POD_INDENT, y, w: POD_W, h: POD_H });
            bottom = Math.max(bottom, y + POD_H);
          });
      } else if (c.kind === 'etcd') boxes.set(c.member.ns, { x: colX(i), y: nodesY, w: BOX_W, h: 62, col: i });
    });
    t.services.forEach((s, k) => {
      boxes.set('svc:' + s.name, { x: PAD + ncols * COL - 10, y: nodesY + k * (SVC_H + 18), w: SVC_W, h: SVC_H });
    });

    // the links, each as points from end a to end b
    const links = new Map();
    const fabricSide = (rack) => boxes.get(rack ? 'rack:' + rack : t.fabric.ns) || boxes.get(t.fabric.ns);
    for (const l of t.links) {
      const A = boxes.get(l.a);
      const B = l.kind === 'pod' ? boxes.get(l.b) : fabricSide(l.rack);
      if (!A || !B) continue;
      let pts;
      if (l.kind === 'underlay' || l.kind === 'etcd') {
        const x = A.x + A.w / 2;
        pts = [[x, A.y], [x, B.y + B.h]];
      } else if (l.kind === 'pod') {
        const x = B.x + 12;
        const y = A.y + A.h / 2;
        pts = [[A.x, y], [x, y], [x, B.y + B.h]];
      } else {
        // router → rack segment
        const mid = A.y + A.h + 22;
        const rx = A.x + A.w / 2 + (l.rack - (t.racks.length + 1) / 2) * 24;
        const bx = B.x + B.w / 2;
        pts = [[rx, A.y + A.h], [rx, mid], [bx, mid], [bx, B.y]];
      }
      links.set(l.id, { link: l, pts });
    }
    const tunnels = new Map();
    const nodeByName = new Map(t.nodes.map((n) => [n.name, n]));
    for (const tu of t.tunnels) {
      const A = boxes.get(nodeByName.get(tu.a)?.ns);
      const B = boxes.get(nodeByName.get(tu.b)?.ns);
      if (!A || !B) continue;
      const span = Math.abs(B.col - A.col);
      const p0 = [A.x + A.w * 0.72, A.y];
      const p2 = [B.x + B.w * 0.28, B.y];
      const p1 = [(p0[0] + p2[0]) / 2, A.y - 52 - 16 * (span - 1)];
      const pts = [];
      for (let i = 0; i <= 20; i++) {
        const u = i / 20;
        pts.push([(1 - u) * (1 - u) * p0[0] + 2 * (1 - u) * u * p1[0] + u * u * p2[0], (1 - u) * (1 - u) * p0[1] + 2 * (1 - u) * u * p1[1] + u * u * p2[1]]);
      }
      tunnels.set(tu.id, { tunnel: tu, pts, apex: pts[10] });
    }
    return { boxes, links, tunnels, bottom };
  }

  // ---- drawing -------------------------------------------------------------------------------

  const ptsAttr = (pts) => pts.map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ');

  function nsBox(parent, b, o) {
    const g = el('g', { class: ['ns', o.kind, o.health || 'ok'].join(' '), 'data-ns': o.ns, 'data-kind': o.kind, 'data-name': o.name, 'data-key': o.key || o.ns }, parent);
    el('rect', { x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }, g);
    o.lines.forEach((line, i) => txt(g, b.x + 10, b.y + 18 + i * 15, line, i === 0 ? 'title' : 'sub'));
    if (o.health && o.health !== 'ok') txt(g, b.x + b.w - 8, b.y + b.h - 7, o.health === 'missing' ? 'no netns' : 'down', 'flag');
    tip(g, o.tip || o.lines.join('\n'));
    return g;
  }

  function draw() {
    const svg = $('graph');
    svg.replaceChildren();
    if (!topo) return;
    const t = topo;
    geo = layout(t);
    const { boxes } = geo;
    const defs = el('defs', {}, svg);
    const mk = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 8, refY: 5, markerWidth: 12, markerHeight: 12, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' }, defs);
    el('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }, mk);
    const root = el('g', { id: 'root' }, svg);
    const gLinks = el('g', { class: 'links' }, root);
    const gBoxes = el('g', { class: 'boxes' }, root);
    el('g', { id: 'trace-layer' }, root);

    // fabric, racks, router
    const fb = boxes.get(t.fabric.ns);
    nsBox(gBoxes, fb, { ns: t.fabric.ns, kind: 'fabric', name: 'fabric', health: t.fabric.health, lines: t.racks.length ? ['fabric · ' + t.fabric.ns] : ['fabric: br0 ' + t.fabric.ip + '/24', t.fabric.ns + ' · underlay ' + t.fabric.underlay] });
    for (const r of t.racks) {
      const b = boxes.get('rack:' + r.index);
      const g = el('g', { class: 'rack', 'data-rack': r.index, 'data-key': 'rack:' + r.index }, gBoxes);
      el('rect', { x: b.x, y: b.y, width: b.w, height: b.h, rx: 4 }, g);
      txt(g, b.x + 8, b.y + 17, 'rack ' + r.index + ': ' + r.bridge, 'title');
      txt(g, b.x + 8, b.y + 32, r.underlay + (r.underlay6 ? ' · ' + r.underlay6 : ''), 'sub');
      txt(g, b.x + 8, b.y + 47, 'router leg ' + r.routerIp, 'sub');
      tip(g, 'rack ' + r.index + ': bridge ' + r.bridge + ' in ' + t.fabric.ns + ', underlay ' + r.underlay);
    }
    if (t.router) {
      const r = t.router;
      nsBox(gBoxes, boxes.get(r.ns), { ns: r.ns, kind: 'router', name: 'router', health: r.health, lines: ['router' + (r.daemon ? ': ' + r.daemon + ' AS ' + r.asn : ': forwarding'), r.ns + (r.daemon ? (r.running ? ' · running' : ' · stopped') : '')] });
    }

    // links
    for (const [id, g] of geo.links) el('polyline', { points: ptsAttr(g.pts), class: 'link ' + g.link.kind, 'data-link': id, 'data-a': g.link.a, 'data-b': g.link.b }, gLinks);
    for (const [id, g] of geo.tunnels) {
      const tu = g.tunnel;
      const gt = el('g', { class: 'tunnel ' + tu.state, 'data-tunnel': id, 'data-a': tu.a, 'data-b': tu.b, 'data-state': tu.state }, gLinks);
      el('polyline', { points: ptsAttr(g.pts) }, gt);
      const label = (tu.kind === 'vxlan' ? 'VXLAN' + (tu.vni !== undefined ? ' VNI ' + tu.vni : '') : 'tun ' + (tu.dev || '')) + (tu.state === 'up' ? '' : ' · ' + tu.state);
      txt(gt, g.apex[0], g.apex[1] - 5, label, 'tunnel-label');
      const dir = (ok) => (ok === undefined ? 'not known' : ok ? 'routed into the tunnel' : 'NOT routed into the tunnel');
      tip(gt, tu.kind + ' tunnel ' + tu.a + ' ↔ ' + tu.b + (tu.dev ? ' (' + tu.dev + (tu.port ? ', UDP ' + tu.port : '') + ')' : '') + '\n' + tu.a + ' → ' + tu.b + ': ' + dir(tu.ab) + '\n' + tu.b + ' → ' + tu.a + ': ' + dir(tu.ba));
    }

    // nodes, pods, etcd
    for (const n of t.nodes) {
      const b = boxes.get(n.ns);
      if (!b) continue;
      nsBox(gBoxes, b, {
        ns: n.ns,
        kind: 'node',
        name: n.name,
        health: n.health,
        lines: [n.name + (n.rack ? ' · rack ' + n.rack : ''), n.ns, n.ip + (n.ip6 ? ' · ' + n.ip6 : ''), 'pods ' + (n.subnets.join(' ') || '(no lease yet)'), 'agent ' + n.agent + (n.asn ? ' · AS ' + n.asn : '')],
      });
    }
    for (const p of t.pods) {
      const b = boxes.get(p.ns);
      if (!b) continue;
      nsBox(gBoxes, b, { ns: p.ns, kind: 'pod', name: p.name, health: p.health, lines: [p.name + (p.serve ? ' · serves ' + p.serve.join(' ') : '') + (p.ready ? '' : ' · not ready'), p.ips.join(' · '), p.ns] });
    }
    for (const m of t.etcd) {
      const b = boxes.get(m.ns);
      if (b) nsBox(gBoxes, b, { ns: m.ns, kind: 'etcd', name: m.name, health: m.health, lines: ['etcd ' + m.name + (m.alive ? '' : ' · stopped'), m.ns, m.ip] });
    }

    // services and their endpoints
    for (const s of t.services) {
      const b = boxes.get('svc:' + s.name);
      const g = el('g', { class: 'service' + (s.problems.length ? ' problem' : ''), 'data-service': s.name, 'data-key': 'svc:' + s.name }, gBoxes);
      el('rect', { x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }, g);
      txt(g, b.x + 10, b.y + 18, 'service ' + s.name + ' (' + s.type + ')', 'title');
      txt(g, b.x + 10, b.y + 33, s.clusterIP + ' · ' + s.ports.join(' '), 'sub');
      txt(g, b.x + 10, b.y + 48, 'endpoints: ' + (s.endpoints.filter((e) => e.ready).map((e) => e.pod || e.ip).join(', ') || 'none'), 'sub');
      tip(g, 'service ' + s.name + '\n' + s.clusterIP + ' ' + s.ports.join(' ') + '\n' + s.endpoints.map((e) => (e.pod || '?') + ' ' + e.ip + (e.ready ? '' : ' (not ready)')).join('\n') + (s.problems.length ? '\n' + s.problems.join('\n') : ''));
      for (const e of s.endpoints) {
        const pb = e.ns && boxes.get(e.ns);
        if (!pb) continue;
        const x0 = b.x;
        const y0 = b.y + b.h / 2;
        const x1 = pb.x + pb.w;
        const y1 = pb.y + pb.h / 2;
        const dx = Math.max(60, (x0 - x1) / 2);
        el('path', { d: 'M' + x0 + ',' + y0 + ' C' + (x0 - dx) + ',' + y0 + ' ' + (x1 + dx) + ',' + y1 + ' ' + x1 + ',' + y1, class: 'svc-edge' + (e.ready ? '' : ' not-ready'), 'data-service': s.name, 'data-pod': e.pod || '' }, gLinks);
      }
    }

    if (trace) drawTrace(trace);
    fit();
  }

  function fit() {
    const svg = $('graph');
    const root = svg.querySelector('#root');
    if (!root) return;
    const bb = root.getBBox();
    const x = Math.min(0, bb.x - PAD);
    const y = Math.min(0, bb.y - PAD);
    const w = bb.x + bb.width + PAD - x;
    const hh = bb.y + bb.height + PAD - y;
    svg.setAttribute('viewBox', x + ' ' + y + ' ' + w + ' ' + hh);
    // as wide as the pane allows, never wider than drawn (a small lab is not blown up)
    svg.style.maxWidth = Math.ceil(w) + 'px';
  }

  // ---- trace ---------------------------------------------------------------------------------

  /** Where a hop is drawn: its namespace's box; in the fabric of a lab with racks, the rack whose bridge it crossed. */
  function anchorKey(hop) {
    const t = topo;
    if (hop.ns === t.fabric.ns && t.racks.length) {
      const devs = [hop.in, hop.out].filter(Boolean);
      for (const r of t.racks) {
        if (devs.includes(r.fabricIf)) return 'rack:' + r.index;
      }
      for (const n of t.nodes) if (devs.includes(n.fabricIf) && n.rack) return 'rack:' + n.rack;
      for (const l of t.links) if (l.kind === 'etcd' && devs.includes(l.bDev)) return 'rack:1';
    }
    return hop.ns;
  }

  /** The link between two consecutive hops: between their namespaces, the one whose devices match the hop's out and the next hop's in. */
  function linkBetween(h0, h1) {
    const cands = [...geo.links.values()].filter((g) => (g.link.a === h0.ns && g.link.b === h1.ns) || (g.link.a === h1.ns && g.link.b === h0.ns));
    const devOf = (g, ns) => (g.link.a === ns ? g.link.aDev : g.link.bDev);
    const best = cands.find((g) => (h1.in && devOf(g, h1.ns) === h1.in) || (h0.out && devOf(g, h0.ns) === h0.out)) || cands[0];
    if (!best) return undefined;
    return { g: best, pts: best.link.a === h0.ns ? best.pts : [...best.pts].reverse() };
  }

  function nodeOfHop(hop) {
    return topo.nodes.find((n) => n.ns === hop.ns);
  }

  function drawTrace(r) {
    const layer = $('graph').querySelector('#trace-layer');
    if (!layer || !geo) return;
    layer.replaceChildren();
    for (const e of $('graph').querySelectorAll('.on-trace, .broken')) e.classList.remove('on-trace', 'broken');
    const brokenHop = r.verdict === 'broken' && r.broken ? r.broken.hop : -1;
    const segs = el('g', { class: 'trace-segs' }, layer);
    const badges = el('g', { class: 'trace-badges' }, layer);
    const callouts = el('g', { class: 'trace-callouts' }, layer);
    const count = new Map();
    const total = new Map();
    for (const hop of r.hops) total.set(anchorKey(hop), (total.get(anchorKey(hop)) || 0) + 1);
    const cursor = new Map();
    r.hops.forEach((hop, i) => {
      const key = anchorKey(hop);
      const b = geo.boxes.get(key);
      const broken = i === brokenHop;
      const boxEl = $('graph').querySelector('[data-key="' + CSS.escape(key) + '"]');
      if (boxEl) boxEl.classList.add(broken ? 'broken' : 'on-trace');
      if (!b) return;
      // the link from the previous hop
      if (i > 0) {
        const prev = r.hops[i - 1];
        if (prev.ns !== hop.ns || anchorKey(prev) !== key) {
          const l = linkBetween(prev, hop);
          let pts;
          if (l) {
            pts = l.pts;
            const le = $('graph').querySelector('[data-link="' + CSS.escape(l.g.link.id) + '"]');
            if (le) le.classList.add('on-trace');
          } else {
            const pb = geo.boxes.get(anchorKey(prev));
            if (pb) pts = [[pb.x + pb.w / 2, pb.y + pb.h / 2], [b.x + b.w / 2, b.y + b.h / 2]];
          }
          if (pts) el('polyline', { points: ptsAttr(pts), class: 'trace-seg' + (prev.packet.outer ? ' outer' : '') + (broken ? ' to-broken' : ''), 'data-seg': i - 1, 'marker-end': 'url(#arrow)' }, segs);
        }
      }
      // into a tunnel here: the tunnel to the node that decapsulates
      if (hop.steps.some((s) => s.kind === 'encap')) {
        const from = nodeOfHop(hop);
        const dec = r.hops.slice(i + 1).find((x) => x.steps.some((s) => s.kind === 'decap'));
        const to = dec && nodeOfHop(dec);
        if (from && to) {
          const tg = [...geo.tunnels.values()].find((g) => (g.tunnel.a === from.name && g.tunnel.b === to.name) || (g.tunnel.a === to.name && g.tunnel.b === from.name));
          if (tg) {
            const te = $('graph').querySelector('[data-tunnel="' + CSS.escape(tg.tunnel.id) + '"]');
            if (te) te.classList.add('on-trace');
            el('polyline', { points: ptsAttr(tg.tunnel.a === from.name ? tg.pts : [...tg.pts].reverse()), class: 'trace-seg tunnel-seg', 'marker-end': 'url(#arrow)' }, segs);
          }
        }
      }
      // the numbered badge
      const k = count.get(key) || 0;
      count.set(key, k + 1);
      const bg = el('g', { class: 'hop-badge' + (broken ? ' broken' : ''), 'data-hop': i, 'data-ns': hop.ns, 'data-key': 'badge:' + i }, badges);
      // on the box's top edge from the right, clear of its name
      const cx = b.x + b.w - 14 - 26 * (total.get(key) - 1 - k);
      el('circle', { cx, cy: b.y, r: 11 }, bg);
      txt(bg, cx, b.y + 4, String(i + 1), 'num');
      tip(bg, 'hop ' + (i + 1) + ': ' + (hop.role || '') + ' ' + hop.ns);
      // the deciding step beside it
      const di = r.deciding ? r.deciding[i] : hop.steps.length - 1;
      const step = hop.steps[di];
      const lines = broken
        ? wrap('✗ ' + (i + 1) + ' ' + r.broken.reason, CHARS, 6).concat(r.broken.command ? wrap('see: ' + r.broken.command, CHARS, 2) : [])
        : step
          ? wrap(i + 1 + ' ' + step.kind + ': ' + step.text, CHARS, 3)
          : [i + 1 + ' (no steps)'];
      const y0 = b.y + (cursor.get(key) || 0);
      const hgt = lines.length * LINE + 8;
      cursor.set(key, (cursor.get(key) || 0) + hgt + 4);
      const cg = el('g', { class: 'callout' + (broken ? ' broken' : ''), 'data-hop': i, 'data-ns': hop.ns }, callouts);
      const x0 = b.x + b.w + 10;
      el('rect', { x: x0, y: y0, width: CALLOUT_W - 8, height: hgt, rx: 4 }, cg);
      lines.forEach((line, j) => txt(cg, x0 + 6, y0 + 14 + j * LINE, line, 'mono'));
      tip(cg, broken ? r.broken.reason + (r.broken.command ? '\nsee: ' + r.broken.command : '') : step ? step.kind + ': ' + step.text + (step.command ? '\n' + step.command : '') : '');
    });
  }

  function renderPanel(r) {
    const list = $('hops');
    list.replaceChildren();
    const v = $('verdict');
    if (!r) {
      v.textContent = 'Choose two endpoints and trace: the path is drawn hop by hop, with the step that decided each hop.';
      v.removeAttribute('data-verdict');
      return;
    }
    const q = r.query;
    const head = q.srcLabel + ' (' + q.src + ') → ' + q.dstLabel + ' (' + q.dst + ') ' + q.proto + (q.dport ? '/' + q.dport : '') + ', ' + q.size + ' bytes';
    v.setAttribute('data-verdict', r.verdict);
    v.replaceChildren(
      h('div', { class: 'query' }, [head]),
      h('div', { class: 'verdict-line' }, [r.verdict === 'complete' ? '✓ complete: ' + r.hops.length + ' hops' : '✗ BROKEN at hop ' + (r.broken.hop + 1) + ': ' + r.broken.reason]),
      ...(r.verdict === 'broken' && r.broken.command ? [h('code', {}, ['see: ' + r.broken.command])] : []),
      h('div', { class: 'when' }, ['traced at ' + traceAt.toLocaleTimeString()]),
    );
    r.hops.forEach((hop, i) => {
      const broken = r.verdict === 'broken' && r.broken.hop === i;
      const where = (hop.in ? 'in ' + hop.in : 'sent here') + (hop.out ? ', out ' + hop.out : '');
      const pk = hop.packet.outer ? ' [outer ' + hop.packet.outer.src + ' → ' + hop.packet.outer.dst + ' udp/' + hop.packet.outer.dport + (hop.packet.outer.vni !== undefined ? ' VNI ' + hop.packet.outer.vni : '') + ']' : '';
      const steps = h(
        'ul',
        { class: 'steps' },
        hop.steps.map((s, j) =>
          h('li', { class: (s.ok ? 'ok' : 'bad') + (r.deciding && r.deciding[i] === j ? ' deciding' : ''), title: s.command || '' }, [h('span', { class: 'kind' }, [s.kind]), ' ' + s.text, ...(!s.ok && s.command ? [h('code', {}, ['see: ' + s.command])] : [])]),
        ),
      );
      list.append(h('li', { class: 'hop' + (broken ? ' broken' : ''), 'data-hop': i, 'data-ns': hop.ns }, [h('div', { class: 'hop-head' }, [h('b', {}, [(hop.role || '?') + ' ']), h('span', { class: 'nsname' }, [hop.ns]), ' · ' + where + pk]), steps]));
    });
  }

  // ---- page ----------------------------------------------------------------------------------

  function showError(msg) {
    const e = $('error');
    if (!msg) {
      e.hidden = true;
      e.textContent = '';
    } else {
      e.hidden = false;
      e.textContent = msg;
    }
  }

  function renderTopology() {
    const t = topo;
    $('lab-name').textContent = t.lab.name;
    $('lab-info').textContent = t.lab.backend + ' · ' + t.lab.store + ' store · cluster ' + t.lab.network + (t.lab.ipv6Network ? ' + ' + t.lab.ipv6Network : '') + ' · services ' + t.lab.serviceCidr + ' · ' + t.nodes.length + ' nodes, ' + t.pods.length + ' pods, ' + t.services.length + ' services' + (t.lab.phase !== 'up' ? ' · ' + t.lab.phase : '');
    document.title = 'podnet lab ' + t.lab.name;
    const dl = $('endpoints');
    dl.replaceChildren(
      ...t.pods.map((p) => h('option', { value: p.name }, ['pod on ' + p.node + ' ' + p.ips.join(' ')])),
      ...t.nodes.map((n) => h('option', { value: n.name }, ['node ' + n.ip])),
      ...t.services.flatMap((s) => s.ports.map((p) => h('option', { value: s.clusterIP + ':' + parseInt(p, 10) }, ['service ' + s.name]))),
    );
    draw();
    $('graph').setAttribute('data-rev', String(rev));
  }

  async function runTrace(ev) {
    ev.preventDefault();
    showError('');
    const params = new URLSearchParams();
    params.set('src', $('src').value.trim());
    params.set('dst', $('dst').value.trim());
    if ($('proto').value) params.set('proto', $('proto').value);
    if ($('port').value) params.set('port', $('port').value);
    const status = $('trace-status');
    status.textContent = 'tracing…';
    $('trace-btn').disabled = true;
    try {
      const res = await fetch('/api/trace?' + params.toString());
      const body = await res.json();
      if (!res.ok) {
        showError(body.error || 'trace failed: HTTP ' + res.status);
        status.textContent = '';
        return;
      }
      trace = body;
      traceAt = new Date();
      status.textContent = '';
      renderPanel(trace);
      if (topo) {
        draw();
        $('graph').setAttribute('data-trace', trace.verdict);
      }
    } catch (e) {
      showError('trace failed: ' + e.message);
      status.textContent = '';
    } finally {
      $('trace-btn').disabled = false;
    }
  }

  function clearTrace() {
    trace = null;
    renderPanel(null);
    $('graph').removeAttribute('data-trace');
    draw();
  }

  function connect() {
    const live = $('live');
    const es = new EventSource('/api/events');
    es.addEventListener('open', () => {
      live.dataset.state = 'live';
      live.textContent = 'live';
    });
    es.addEventListener('error', () => {
      live.dataset.state = 'reconnecting';
      live.textContent = 'reconnecting…';
    });
    es.addEventListener('topology', (e) => {
      const t = JSON.parse(e.data);
      if (t.error) {
        showError(t.error);
        gone = true;
        live.dataset.state = 'gone';
        live.textContent = 'lab gone';
        return;
      }
      if (gone) showError('');
      gone = false;
      live.dataset.state = 'live';
      live.textContent = 'live';
      topo = t;
      rev++;
      renderTopology();
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('trace-form').addEventListener('submit', runTrace);
    $('clear-btn').addEventListener('click', clearTrace);
    connect();
  });
})();
