// A strict parser of the Prometheus text exposition format (version 0.0.4), for the tests: it
// throws, naming the line, on anything the format does not allow, so "it parses" means something.
//   - `# HELP name text` and `# TYPE name counter|gauge|histogram|summary|untyped`, at most once
//     per family, TYPE before the family's samples; other `#` lines are comments
//   - samples `name{label="value",...} value [timestamp]`: names and label names by the spec's
//     grammar, label values with only the \\ \" \n escapes, values as Go's ParseFloat takes them
//     (also +Inf, -Inf, NaN); no series twice; a family's samples contiguous
//   - a sample's name belongs to the family of the TYPE line before it (counter: name or
//     name_total in OpenMetrics style; histogram: _bucket with le, _sum, _count; summary:
//     quantile, _sum, _count)
//   - histograms: per label set, buckets cumulative (non-decreasing in le order), a +Inf bucket
//     equal to _count, and a _sum
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  help?: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
// Go's ParseFloat takes inf, infinity and nan in any case (prom-client writes NaN as "Nan")
const FLOAT = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)$/i;

function parseValue(s: string, where: string): number {
  if (!FLOAT.test(s)) throw new Error(`${where}: bad sample value ${JSON.stringify(s)}`);
  if (/^[+]?inf(inity)?$/i.test(s)) return Infinity;
  if (/^-inf(inity)?$/i.test(s)) return -Infinity;
  if (/^[+-]?nan$/i.test(s)) return NaN;
  return Number(s);
}

function parseLabels(s: string, where: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1; // after '{'
  for (;;) {
    while (s[i] === ' ') i++;
    if (s[i] === '}') return { labels, rest: s.slice(i + 1) };
    const m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(s.slice(i));
    if (!m) throw new Error(`${where}: bad label name at ${JSON.stringify(s.slice(i, i + 20))}`);
    const name = m[0];
    i += name.length;
    while (s[i] === ' ') i++;
    if (s[i] !== '=' || s[i + 1] !== '"') throw new Error(`${where}: expected ="value" after label ${name}`);
    i += 2;
    let v = '';
    for (;;) {
      const c = s[i];
      if (c === undefined) throw new Error(`${where}: unterminated label value of ${name}`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i + 1];
        if (e === '\\') v += '\\';
        else if (e === '"') v += '"';
        else if (e === 'n') v += '\n';
        else throw new Error(`${where}: bad escape \\${e} in label ${name}`);
        i += 2;
        continue;
      }
      v += c;
      i++;
    }
    i++;
    if (name in labels) throw new Error(`${where}: label ${name} twice`);
    if (!LABEL.test(name)) throw new Error(`${where}: bad label name ${name}`);
    labels[name] = v;
    while (s[i] === ' ') i++;
    if (s[i] === ',') i++;
    else if (s[i] !== '}') throw new Error(`${where}: expected , or } after label ${name}`);
  }
}

function belongs(f: Family, sample: string): boolean {
  switch (f.type) {
    case 'counter':
      return sample === f.name || sample === `${f.name}_total`;
    case 'histogram':
      return sample === `${f.name}_bucket` || sample === `${f.name}_sum` || sample === `${f.name}_count`;
    case 'summary':
      return sample === f.name || sample === `${f.name}_sum` || sample === `${f.name}_count`;
    default:
      return sample === f.name;
  }
}

export function parsePromText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const helpSeen = new Set<string>();
  const series = new Set<string>();
  const closed = new Set<string>();
  let current: Family | undefined;
  if (text.length > 0 && !text.endsWith('\n')) throw new Error('the exposition must end with a line feed');
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, idx) => {
    const where = `line ${idx + 1}`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line);
      if (!m) return; // a comment
      const [, kw, name, rest = ''] = m;
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`);
      if (closed.has(name)) throw new Error(`${where}: ${kw} for ${name} after its samples ended`);
      let f = families.get(name);
      if (kw === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: bad type ${JSON.stringify(rest)}`);
        if (f?.samples.length) throw new Error(`${where}: TYPE of ${name} after its samples`);
        if (f && f.type !== 'untyped') throw new Error(`${where}: TYPE of ${name} twice`);
        f = f ? Object.assign(f, { type: rest }) : { name, type: rest as Family['type'], samples: [] };
      } else {
        if (helpSeen.has(name)) throw new Error(`${where}: HELP of ${name} twice`);
        helpSeen.add(name);
        f ??= { name, type: 'untyped', samples: [] };
        f.help = rest.replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
      }
      families.set(name, f);
      if (current && current !== f) closed.add(current.name);
      current = f;
      return;
    }
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nm) throw new Error(`${where}: bad sample line ${JSON.stringify(line)}`);
    const name = nm[0];
    let rest = line.slice(name.length);
    let labels: Record<string, string> = {};
    if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, where));
    const parts = rest.trim().split(/\s+/);
    if (!rest.startsWith(' ') || parts.length < 1 || parts.length > 2 || parts[0] === '') throw new Error(`${where}: expected " value [timestamp]" after ${name}`);
    const value = parseValue(parts[0], where);
    if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new Error(`${where}: bad timestamp ${parts[1]}`);
    let f = current && belongs(current, name) ? current : undefined;
    if (!f) {
      // an untyped family of its own
      if (current) closed.add(current.name);
      if (closed.has(name) || families.has(name)) throw new Error(`${where}: samples of ${name} are not contiguous or do not match the TYPE before them`);
      f = { name, type: 'untyped', samples: [] };
      families.set(name, f);
      current = f;
    }
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (series.has(key)) throw new Error(`${where}: series ${key} twice`);
    series.add(key);
    if (f.type === 'histogram' && name.endsWith('_bucket')) {
      if (!('le' in labels)) throw new Error(`${where}: histogram bucket without le`);
      parseValue(labels.le, `${where} (le)`);
    }
    if (f.type === 'histogram' && !name.endsWith('_bucket') && 'le' in labels) throw new Error(`${where}: le on ${name}`);
    f.samples.push({ name, labels, value });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

function checkHistogram(f: Family): void {
  const groups = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const k = JSON.stringify(Object.entries(rest).sort());
    const g = groups.get(k) ?? { buckets: [] };
    groups.set(k, g);
    if (s.name.endsWith('_bucket')) g.buckets.push([parseValue(le, f.name), s.value]);
    else if (s.name.endsWith('_sum')) g.sum = s.value;
    else g.count = s.value;
  }
  for (const [k, g] of groups) {
    const sorted = [...g.buckets].sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < sorted.length; i++) if (sorted[i][1] < sorted[i - 1][1]) throw new Error(`histogram ${f.name}${k}: buckets not cumulative at le=${sorted[i][0]}`);
    const inf = sorted.find((b) => b[0] === Infinity);
    if (!inf) throw new Error(`histogram ${f.name}${k}: no +Inf bucket`);
    if (g.count === undefined || g.sum === undefined) throw new Error(`histogram ${f.name}${k}: no _count or _sum`);
    if (inf[1] !== g.count) throw new Error(`histogram ${f.name}${k}: +Inf bucket ${inf[1]} != _count ${g.count}`);
  }
}

/** The value of one series (labels matched exactly when given as a full set, else as a subset). */
export function sampleValue(fams: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of fams.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}

/** The sum over every series of a sample name whose labels include `labels`. */
export function sampleSum(fams: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const f of fams.values()) for (const s of f.samples) if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  return sum;
}
