// nft's JSON expressions as text, close to what `nft list` prints: what a step quotes when it names
// an nft rule, and how the evaluator says which expression it could not decide.
import { isObj } from './model.js';

export function exprText(e: unknown): string {
  if (e === null || e === undefined) return '';
  if (typeof e === 'string' || typeof e === 'number' || typeof e === 'boolean') return String(e);
  if (Array.isArray(e)) return `{ ${e.map(exprText).join(', ')} }`;
  if (!isObj(e)) return JSON.stringify(e);
  const [k, v] = Object.entries(e)[0] ?? ['', undefined];
  const o = (isObj(v) ? v : {}) as Record<string, unknown>;
  switch (k) {
    case 'payload':
      return o.protocol ? `${String(o.protocol)} ${String(o.field)}` : `@${String(o.base)},${String(o.offset)},${String(o.len)}`;
    case 'meta':
      return `meta ${String(o.key)}`;
    case 'ct':
      return `ct ${o.dir ? `${String(o.dir)} ` : ''}${String(o.key)}`;
    case 'concat':
      return (v as unknown[]).map(exprText).join(' . ');
    case 'prefix':
      return `${String(o.addr)}/${String(o.len)}`;
    case 'range':
      return `${exprText((v as unknown[])[0])}-${exprText((v as unknown[])[1])}`;
    case 'set':
      if (Array.isArray(v)) return `{ ${v.map((x) => (Array.isArray(x) ? `${exprText(x[0])} : ${exprText(x[1])}` : exprText(x))).join(', ')} }`;
      if (typeof v === 'string') return v;
      return `${String(o.op)} ${String(o.set)} { ${exprText(o.elem)} }`;
    case 'map':
      return `${exprText(o.key)} map ${exprText(o.data)}`;
    case 'numgen':
      return `numgen ${String(o.mode)} mod ${String(o.mod)}${o.offset ? ` offset ${String(o.offset)}` : ''}`;
    case 'jhash':
    case 'symhash':
      return `${k} mod ${String(o.mod)}`;
    case '&':
    case '|':
    case '^':
    case '<<':
    case '>>':
      return `${exprText((v as unknown[])[0])} ${k} ${exprText((v as unknown[])[1])}`;
    case 'fib':
      return `fib ${((o.flags as string[]) ?? []).join(' . ')} ${String(o.result)}`;
    case 'elem':
      return exprText(o.val);
    case 'match': {
      const op = o.op === '==' || o.op === 'in' ? '' : `${String(o.op)} `;
      return `${exprText(o.left)} ${op}${exprText(o.right)}`;
    }
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
    case 'counter':
    case 'notrack':
    case 'log':
      return k;
    case 'jump':
    case 'goto':
      return `${k} ${String(o.target)}`;
    case 'reject':
      return `reject${o.type ? ` with ${String(o.type)}` : ''}${o.expr ? ` ${String(o.expr)}` : ''}`;
    case 'vmap':
      return `${exprText(o.key)} vmap ${exprText(o.data)}`;
    case 'dnat':
    case 'snat':
      return `${k}${o.family ? ` ${String(o.family)}` : ''} to ${exprText(o.addr)}${o.port !== undefined ? `:${exprText(o.port)}` : ''}`;
    case 'masquerade':
    case 'redirect':
      return `${k}${o.port !== undefined ? ` to :${exprText(o.port)}` : ''}${o.flags ? ` ${[o.flags].flat().join(',')}` : ''}`;
    case 'mangle':
      return `${exprText(o.key)} set ${exprText(o.value)}`;
    case 'limit':
      return `limit rate ${String(o.rate)}/${String(o.per)}`;
    case 'xt':
      return `xt ${String(o.type)} ${String(o.name)}`;
    default:
      return JSON.stringify(e);
  }
}

export function ruleText(expr: unknown[]): string {
  return expr.map(exprText).join(' ').replace(/\s+/g, ' ').trim();
}
