// Why podnet-tund's packet loop is C: the two costs a TypeScript datapath would pay per
// 64 KB super-packet, measured against the same work in C in one run.
//   - the Internet checksum a GSO split must compute for every TCP segment (all payload bytes);
//   - a system call through koffi (FFI) against the same call from C.
// Output: a table on stdout; medians over rounds.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];

function csumWords(a: Uint32Array): number {
  // 32-bit words summed into a double (exact below 2^53), folded once at the end
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  s = (s % 0x100000000) + Math.floor(s / 0x100000000);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

function jsChecksumNsPer64K(): number {
  const buf = Buffer.alloc(65536);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 7) & 255;
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2);
  let x = 0;
  for (let i = 0; i < 300; i++) x ^= csumWords(words);
  const n = 3000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    words[i & 16383] ^= 1;
    x ^= csumWords(words);
  }
  const ns = Number(process.hrtime.bigint() - t0) / n;
  if (x === -1) console.log(x);
  return ns;
}

function koffiNsPerCall(): { getppid: number; write: number } {
  const libc = koffi.load('libc.so.6');
  const getppid = libc.func('int getppid()');
  const write = libc.func('long write(int, void *, unsigned long)');
  const fd = openSync('/dev/null', 'w');
  const b = Buffer.alloc(64);
  const time = (f: () => unknown) => {
    for (let i = 0; i < 20000; i++) f();
    const n = 300000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f();
    return Number(process.hrtime.bigint() - t0) / n;
  };
  return { getppid: time(() => getppid()), write: time(() => write(fd, b, 64)) };
}

const C_SRC = String.raw`
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
static double now(void){ struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec*1e9+t.tv_nsec; }
static uint32_t csum(const uint8_t *p, size_t n){ uint64_t s=0; for(size_t i=0;i+4<=n;i+=4){uint32_t w; memcpy(&w,p+i,4); s+=w;} while(s>>16) s=(s&0xffff)+(s>>16); return (uint32_t)s; }
int main(void){
  static uint8_t b[65536]; for(int i=0;i<65536;i++) b[i]=(i*7)&255;
  uint32_t x=0; int n=100000; double t=now(); for(int i=0;i<n;i++){ b[i&65535]^=1; x^=csum(b,65536);} double cs=(now()-t)/n;
  int fd=open("/dev/null",O_WRONLY); char w[64]={0}; int m=1000000;
  t=now(); for(int i=0;i<m;i++) (void)getppid(); double g=(now()-t)/m;
  t=now(); for(int i=0;i<m;i++) if(write(fd,w,64)<0) return 1; double wr=(now()-t)/m;
  printf("%f %f %f %u\n", cs, g, wr, x&1);
  return 0;
}`;

function cRound(bin: string): { csum: number; getppid: number; write: number } {
  const r = spawnSync(bin, [], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`C probe failed: ${r.stderr}`);
  const [csum, getppid, write] = r.stdout.trim().split(' ').map(Number);
  return { csum, getppid, write };
}

const dir = mkdtempSync(join(tmpdir(), 'podnet-why-native-'));
try {
  writeFileSync(join(dir, 'probe.c'), C_SRC);
  const cc = spawnSync(process.env.CC || 'cc', ['-O2', '-o', join(dir, 'probe'), join(dir, 'probe.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr}`);
  const js: number[] = [], kg: number[] = [], kw: number[] = [], cs: number[] = [], cg: number[] = [], cw: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    js.push(jsChecksumNsPer64K());
    const k = koffiNsPerCall();
    kg.push(k.getppid);
    kw.push(k.write);
    const c = cRound(join(dir, 'probe'));
    cs.push(c.csum);
    cg.push(c.getppid);
    cw.push(c.write);
  }
  const gbps = (ns: number) => ((65536 * 8) / ns).toFixed(1);
  const rows = [
    ['checksum of 64 KB', `${(median(js) / 1000).toFixed(1)} µs (${gbps(median(js))} Gbit/s)`, `${(median(cs) / 1000).toFixed(1)} µs (${gbps(median(cs))} Gbit/s)`, (median(js) / median(cs)).toFixed(1)],
    ['syscall getppid()', `${median(kg).toFixed(0)} ns`, `${median(cg).toFixed(0)} ns`, (median(kg) / median(cg)).toFixed(2)],
    ['syscall write(64 B)', `${median(kw).toFixed(0)} ns`, `${median(cw).toFixed(0)} ns`, (median(kw) / median(cw)).toFixed(2)],
  ];
  console.log(`Why the packet loop is C (${ROUNDS} rounds, medians)\n`);
  console.log('| work | TypeScript (V8 / koffi) | C | TS ÷ C |');
  console.log('|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  const share = (g: number) => ((g * 1e9) / 8 / 65536) * median(js) / 1e9;
  console.log(`\nAt 6 Gbit/s one way, the segmenting side checksums every byte: ${(share(6) * 100).toFixed(0)}% of a core in TypeScript, ${((share(6) * median(cs)) / median(js) * 100).toFixed(1)}% in C.`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
