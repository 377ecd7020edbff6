// One ICMP echo from inside a network namespace, with a second try: the first packet of a new
// path can wait on neighbour discovery longer than its timeout.
import { execFileSync } from 'node:child_process';

export function pingFrom(ns: string, dst: string, extra: string[] = [], tries = 2): boolean {
  for (let i = 0; i < tries; i++) {
    try {
      execFileSync('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-c1', '-W2', ...extra, dst], { stdio: 'ignore' });
      return true;
    } catch {
      /* retry */
    }
  }
  return false;
}
