// host-local's resolvConf option: the DNS part of the result is read from a resolv.conf file.
import { readFileSync } from 'node:fs';
import { CniError, ErrCode } from '../cni/errors.js';
import type { CniDns } from '../cni/types.js';

export function parseResolvConf(text: string): CniDns {
  const dns: CniDns = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const [key, ...vals] = line.split(/\s+/);
    if (vals.length === 0) continue;
    switch (key) {
      case 'nameserver':
        (dns.nameservers ??= []).push(vals[0]);
        break;
      case 'domain':
        dns.domain = vals[0];
        break;
      case 'search':
        dns.search = vals;
        break;
      case 'options':
        (dns.options ??= []).push(...vals);
        break;
    }
  }
  return dns;
}

export function readResolvConf(path: string): CniDns {
  try {
    return parseResolvConf(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new CniError(ErrCode.IoFailure, `ipam.resolvConf: cannot read ${path}: ${(e as Error).message}`);
  }
}
