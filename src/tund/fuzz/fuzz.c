// A fuzz harness for the packet parsers: random and mutated packets through the UDP → TUN checks
// and coalescing (rx.c) and the TUN → UDP segmenting, checksum completion and ICMP (tx.c, icmp.c),
// to run under AddressSanitizer/UBSan. Built and run by test/integration/tund.test.ts; not part of
// podnet-tund (build.mjs compiles src/tund/*.c only). Output to /dev/null and 127.0.0.1:9.
#include "../rx.c"
#include "../tx.c"
#include <fcntl.h>
#include <stdarg.h>
struct stats g_stats;
void logmsg(const char *fmt, ...) { (void)fmt; }
void fatal_exit(void) { abort(); }
static uint32_t rs = 1;
static uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 17; rs ^= rs << 5; return rs; }
int main(int argc, char **argv) {
  long iters = argc > 1 ? atol(argv[1]) : 200000;
  int tun = open("/dev/null", O_WRONLY);
  struct table t = {0};
  struct prefix all4 = {.family = 4, .len = 0}, all6 = {.family = 6, .len = 0};
  struct prefix locs[2] = {all4, all6};
  t.locals = locs; t.nlocals = 2;
  struct peer pe[2];
  memset(pe, 0, sizeof pe);
  struct sockaddr_in *s = (struct sockaddr_in *)&pe[0].sa;
  s->sin_family = AF_INET; s->sin_port = htons(9); s->sin_addr.s_addr = htonl(0x7f000001);
  pe[0].salen = sizeof *s; pe[0].subnet = all4;
  pe[1] = pe[0]; pe[1].subnet = all6;
  t.peers = pe; t.npeers = 2;
  static struct run r;
  static uint8_t pktbuf[70001];
  // a run points into the packets it holds (as into recvmmsg's buffers): they are freed only after a flush
  uint8_t *held[16];
  int nheld = 0;
  uint8_t *pkt = pktbuf + 1; // odd: headers at any alignment, as in a GRO message of odd-sized datagrams
  struct dp d = {.tun = tun, .udp = socket(AF_INET, SOCK_DGRAM, 0), .udp_family = AF_INET, .gso_ok = 1};
  for (long it = 0; it < iters; it++) {
    size_t len = rnd() % 2000;
    if (rnd() % 8 == 0) len = rnd() % 65535;
    for (size_t i = 0; i < len; i++) pkt[i] = (uint8_t)rnd();
    if (len > 0) {
      int v6 = rnd() & 1;
      if (rnd() % 4) pkt[0] = v6 ? 0x60 : (uint8_t)(0x40 | (rnd() % 4 ? 5 : rnd() % 16));
      if (!v6 && len >= 20 && rnd() % 2) { pkt[2] = (uint8_t)(len >> 8); pkt[3] = (uint8_t)len; pkt[9] = 6; pkt[6] = 0x40; pkt[7] = 0; }
      if (v6 && len >= 40 && rnd() % 2) { pkt[4] = (uint8_t)((len - 40) >> 8); pkt[5] = (uint8_t)(len - 40); pkt[6] = 6; }
      size_t ih = v6 ? 40 : 20;
      if (len > ih + 13 && rnd() % 2) { pkt[ih + 13] = 0x10; pkt[ih + 12] = (uint8_t)((5 + rnd() % 11) << 4); }
    }
    static uint8_t base[2000]; static size_t blen; static uint32_t bseq;
    if (it % 50 == 0 || blen == 0) {
      // a valid TCP segment: v4 or v6, payload 1..1400, ACK
      int v6 = rnd() & 1; size_t ih = v6 ? 40 : 20, pl = rnd() % 3 ? 1400 : 1 + rnd() % 1400;
      memset(base, 0, 80);
      blen = ih + 20 + pl;
      if (v6) { base[0] = 0x60; base[4] = (uint8_t)((blen - 40) >> 8); base[5] = (uint8_t)(blen - 40); base[6] = 6; base[7] = 64; }
      else { base[0] = 0x45; base[2] = (uint8_t)(blen >> 8); base[3] = (uint8_t)blen; base[6] = 0x40; base[8] = 64; base[9] = 6; }
      base[ih + 12] = 0x50; base[ih + 13] = 0x10;
      bseq = rnd();
    }
    if (it % 50 != 0 && rnd() % 4) {
      size_t ih = (base[0] >> 4) == 6 ? 40 : 20;
      bseq += (uint32_t)(blen - ih - 20);
      uint32_t sq = htonl(bseq); memcpy(base + ih + 4, &sq, 4);
      memcpy(pkt, base, blen); len = blen;
      if (rnd() % 8 == 0) pkt[rnd() % len] = (uint8_t)rnd();
      if (rnd() % 16 == 0) len = rnd() % len;
    }
    // the packet alone in a heap block (at an odd address): ASan sees any read past its end
    uint8_t *blk = malloc(len + 1), *q = blk + 1;
    memcpy(q, pkt, len);
    struct sockaddr_storage from = pe[0].sa;
    int fam = check(&t, &from, q, len);
    if (fam) deliver(tun, &r, q, len, fam);
    // the TUN side: random vnet headers over the same bytes
    if (len >= 20 && rnd() % 4 == 0) {
      struct vnet_hdr vh = {.flags = (uint8_t)(rnd() & 1), .gso_type = (uint8_t)(rnd() % 5), .gso_size = (uint16_t)(rnd() % 3 ? 1400 : rnd()), .csum_start = (uint16_t)(rnd() % (len + 10)), .csum_offset = (uint16_t)(rnd() % 20)};
      int f; const uint8_t *dst;
      if (inner_dst(q, len, &f, &dst) == 0) {
        uint8_t g = vh.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
        if (g == VIRTIO_NET_HDR_GSO_TCPV4 || g == VIRTIO_NET_HDR_GSO_TCPV6) split_tcp(&d, &pe[0], q, len, f, vh.gso_size);
        else if (vh.flags & 1) complete_csum(q, len, &vh);
        icmp_unreachable(tun, q, len);
      }
    }
    held[nheld++] = blk;
    if (rnd() % 16 == 0 || nheld == 16) {
      flush(tun, &r);
      while (nheld) free(held[--nheld]);
    }
  }
  flush(tun, &r);
  while (nheld) free(held[--nheld]);
  printf("ok malformed=%llu coalesced=%llu writes=%llu gso=%llu\n", (unsigned long long)g_stats.drop_malformed, (unsigned long long)g_stats.gro_coalesced, (unsigned long long)g_stats.tun_writes, (unsigned long long)g_stats.gso_superpackets);
}
