// ICMP destination unreachable for a packet no peer takes, written back into the TUN device so
// the sending pod learns at once instead of waiting for a timeout.
//
// Source address: the unreachable destination itself. The node's own addresses cannot be used:
// a packet that arrives on podnet.tun from one of the node's local addresses is a martian to the
// kernel and is dropped (accept_local is off), while the destination is routed into podnet.tun
// (the cluster network route), so the reverse-path check passes.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/ip.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>
#include "tund.h"

#define ICMP_RATE 200 // per second, a token bucket

static int allow(void) {
  static double tokens = ICMP_RATE;
  static struct timespec last;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  double dt = (double)(now.tv_sec - last.tv_sec) + (double)(now.tv_nsec - last.tv_nsec) / 1e9;
  last = now;
  tokens += dt * ICMP_RATE;
  if (tokens > ICMP_RATE) tokens = ICMP_RATE;
  if (tokens < 1) return 0;
  tokens -= 1;
  return 1;
}

static void emit(int tun, const uint8_t *pkt, size_t len) {
  static const uint8_t zero[VNET_HDR_LEN];
  struct iovec iov[2] = {{.iov_base = (void *)zero, .iov_len = VNET_HDR_LEN}, {.iov_base = (void *)pkt, .iov_len = len}};
  if (writev(tun, iov, 2) < 0) COUNT(errors, 1);
  else COUNT(no_peer_icmp, 1);
}

void icmp_unreachable(int tun, const uint8_t *pkt, size_t len) {
  uint8_t out[1280];
  int v = pkt[0] >> 4;
  if (v == 4) {
    size_t ihl = (size_t)(pkt[0] & 15) * 4;
    if (ihl < 20 || len < ihl) return;
    // never an error about an error, nor about a fragment other than the first (RFC 1122 3.2.2)
    if (pkt[9] == IPPROTO_ICMP && len >= ihl + 1 && pkt[ihl] != 8 && pkt[ihl] != 0 && pkt[ihl] != 13 && pkt[ihl] != 15) return;
    if ((be16(pkt + 6) & 0x1fff) != 0) return;
    // nor about multicast or broadcast
    if (pkt[16] >= 224 || (pkt[16] & pkt[17] & pkt[18] & pkt[19]) == 255) return;
    if (!allow()) return;
    size_t quote = len < 548 ? len : 548;
    size_t total = 20 + 8 + quote;
    memset(out, 0, 28);
    out[0] = 0x45;
    uint16_t tot = htons((uint16_t)total);
    memcpy(out + 2, &tot, 2);
    out[8] = 64;
    out[9] = IPPROTO_ICMP;
    memcpy(out + 12, pkt + 16, 4); // from the unreachable destination
    memcpy(out + 16, pkt + 12, 4); // to the sender
    uint16_t c = (uint16_t)~csum_fold(csum_add(0, out, 20));
    memcpy(out + 10, &c, 2);
    out[20] = 3; // destination unreachable
    out[21] = 0; // net unreachable
    memcpy(out + 28, pkt, quote);
    c = (uint16_t)~csum_fold(csum_add(0, out + 20, 8 + quote));
    memcpy(out + 22, &c, 2);
    emit(tun, out, total);
  } else if (v == 6) {
    if (len < 40) return;
    // ICMPv6 errors are not answered with errors (RFC 4443 2.4 e)
    if (pkt[6] == 58 && len >= 41 && pkt[40] < 128) return;
    // nor about multicast (the kernel's MLD and router solicitations reach the device too)
    if (pkt[24] == 0xff) return;
    if (!allow()) return;
    size_t quote = len < 1280 - 48 ? len : 1280 - 48;
    size_t plen = 8 + quote;
    memset(out, 0, 48);
    out[0] = 0x60;
    uint16_t pl = htons((uint16_t)plen);
    memcpy(out + 4, &pl, 2);
    out[6] = 58;
    out[7] = 64;
    memcpy(out + 8, pkt + 24, 16);
    memcpy(out + 24, pkt + 8, 16);
    out[40] = 1; // destination unreachable
    out[41] = 0; // no route to destination
    memcpy(out + 48, pkt, quote);
    uint16_t c = (uint16_t)~csum_fold(csum_add(pseudo_sum(6, out, 58, (uint32_t)plen), out + 40, plen));
    memcpy(out + 42, &c, 2);
    emit(tun, out, 40 + plen);
  }
}
