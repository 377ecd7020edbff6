// UDP → TUN. recvmmsg with UDP_GRO: one message may hold many datagrams of equal size (the
// UDP_GRO control message says which), each one inner IP packet. Every packet is checked against
// the peer table; consecutive TCP segments of one flow are coalesced into a super-packet written
// with a virtio-net header (GSO_TCPV4/6), so the kernel moves one skb instead of forty.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/udp.h>
#include <linux/virtio_net.h>
#include <netinet/ip.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include "tund.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define BATCH 32
#define RXBUF 65536

// A run of coalescable TCP segments: the first one's headers (copied, after a virtio-net header)
// and every segment's payload in place in the receive buffers, written with one writev. The
// buffers are reused only by the next recvmmsg, and a run is flushed before that.
#define RUN_MAX_SEGS 64
#define MAX_HDR 120
struct run {
  uint8_t head[VNET_HDR_LEN + MAX_HDR];
  struct iovec iov[1 + RUN_MAX_SEGS];
  const uint8_t *first; // the first segment as received
  size_t first_len;
  int active;
  int family;
  size_t iphl, hdr;   // IP header length, IP+TCP header length
  size_t payload;     // bytes after hdr so far
  uint16_t mss;       // payload of the first segment; all but the last are this size
  uint32_t next_seq;
  int segs;
  int closed;         // a short or PSH segment ended it: nothing more may follow
  int psh;
};

static void write_plain(int tun, const uint8_t *pkt, size_t len) {
  static const uint8_t zero[VNET_HDR_LEN];
  struct iovec iov[2] = {{.iov_base = (void *)zero, .iov_len = VNET_HDR_LEN}, {.iov_base = (void *)pkt, .iov_len = len}};
  ssize_t n = writev(tun, iov, 2);
  if (n < 0) {
    if (errno != EAGAIN && errno != ENOBUFS) COUNT(errors, 1);
    return;
  }
  COUNT(tun_writes, 1);
  COUNT(tun_write_bytes, len);
}

static void flush(int tun, struct run *r) {
  if (!r->active) return;
  r->active = 0;
  if (r->segs == 1) {
    // one segment: written exactly as it came, checksums the sender's
    write_plain(tun, r->first, r->first_len);
    return;
  }
  uint8_t *ip = r->head + VNET_HDR_LEN;
  size_t len = r->hdr + r->payload;
  if (r->psh) ip[r->iphl + 13] |= 0x08;
  if (r->family == 4) {
    uint16_t tot = htons((uint16_t)len);
    memcpy(ip + 2, &tot, 2);
    ip[10] = ip[11] = 0;
    uint16_t c = (uint16_t)~csum_fold(csum_add(0, ip, r->iphl));
    memcpy(ip + 10, &c, 2);
  } else {
    uint16_t pl = htons((uint16_t)(len - 40));
    memcpy(ip + 4, &pl, 2);
  }
  // NEEDS_CSUM: the field holds the pseudo-header sum, the kernel (or nobody, on a local veth) completes it
  uint16_t ps = csum_fold(pseudo_sum(r->family, ip, IPPROTO_TCP, (uint32_t)(len - r->iphl)));
  memcpy(ip + r->iphl + 16, &ps, 2);
  struct vnet_hdr vh = {
      .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM,
      .gso_type = r->family == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6,
      .hdr_len = (uint16_t)r->hdr,
      .gso_size = r->mss,
      .csum_start = (uint16_t)r->iphl,
      .csum_offset = 16,
  };
  memcpy(r->head, &vh, sizeof vh);
  r->iov[0] = (struct iovec){.iov_base = r->head, .iov_len = VNET_HDR_LEN + r->hdr};
  ssize_t n = writev(tun, r->iov, 1 + r->segs);
  if (n < 0) {
    if (errno != EAGAIN && errno != ENOBUFS) COUNT(errors, 1);
    return;
  }
  COUNT(tun_writes, 1);
  COUNT(tun_write_bytes, len);
  COUNT(gro_coalesced, r->segs);
}

// Header bytes that must be equal between segments of one run: everything but the IPv4 total
// length, id and checksum (v6: payload length), the TCP sequence number, flags and checksum.
static int same_headers(const uint8_t *a, const uint8_t *b, int family, size_t iphl, size_t hdr) {
  if (family == 4) {
    if (a[0] != b[0] || a[1] != b[1] || memcmp(a + 6, b + 6, 4) != 0 || memcmp(a + 12, b + 12, iphl - 12) != 0) return 0;
  } else {
    if (memcmp(a, b, 4) != 0 || memcmp(a + 6, b + 6, 34) != 0) return 0;
  }
  const uint8_t *ta = a + iphl, *tb = b + iphl;
  if (memcmp(ta, tb, 4) != 0 || memcmp(ta + 8, tb + 8, 5) != 0 || memcmp(ta + 14, tb + 14, 2) != 0) return 0;
  return memcmp(ta + 18, tb + 18, hdr - iphl - 18) == 0;
}

// Whether this TCP segment may start or join a run: a plain data segment (ACK, maybe PSH), no
// IPv4 options or fragments, no IPv6 extension headers.
static int coalescable(const uint8_t *pkt, size_t len, int family, size_t *iphl, size_t *hdr) {
  if (family == 4) {
    if ((pkt[0] & 15) != 5 || pkt[9] != IPPROTO_TCP) return 0;
    if ((be16(pkt + 6) & 0x3fff) != 0) return 0;
    *iphl = 20;
  } else {
    if (pkt[6] != IPPROTO_TCP) return 0;
    *iphl = 40;
  }
  if (len < *iphl + 20) return 0;
  size_t thl = (size_t)(pkt[*iphl + 12] >> 4) * 4;
  if (thl < 20 || len <= *iphl + thl) return 0;
  uint8_t f = pkt[*iphl + 13];
  if ((f & ~0x08) != 0x10) return 0; // ACK, or ACK|PSH
  *hdr = *iphl + thl;
  return 1;
}

static void deliver(int tun, struct run *r, const uint8_t *pkt, size_t len, int family) {
  size_t iphl, hdr;
  if (!coalescable(pkt, len, family, &iphl, &hdr)) {
    flush(tun, r);
    write_plain(tun, pkt, len);
    return;
  }
  size_t plen = len - hdr;
  uint32_t seq;
  memcpy(&seq, pkt + iphl + 4, 4);
  seq = ntohl(seq);
  int psh = pkt[iphl + 13] & 0x08;
  const uint8_t *rip = r->head + VNET_HDR_LEN;
  if (r->active && !r->closed && r->family == family && r->hdr == hdr && seq == r->next_seq && plen <= r->mss && r->segs < RUN_MAX_SEGS &&
      r->hdr + r->payload + plen <= MAX_PKT && same_headers(rip, pkt, family, iphl, hdr)) {
    r->iov[1 + r->segs] = (struct iovec){.iov_base = (void *)(pkt + hdr), .iov_len = plen};
    r->payload += plen;
    r->next_seq += (uint32_t)plen;
    r->segs++;
    if (psh) r->psh = 1;
    if (plen < r->mss || psh) r->closed = 1;
    return;
  }
  flush(tun, r);
  if (hdr > MAX_HDR) {
    write_plain(tun, pkt, len);
    return;
  }
  memcpy(r->head + VNET_HDR_LEN, pkt, hdr);
  r->iov[1] = (struct iovec){.iov_base = (void *)(pkt + hdr), .iov_len = plen};
  r->first = pkt;
  r->first_len = len;
  r->active = 1;
  r->family = family;
  r->iphl = iphl;
  r->hdr = hdr;
  r->payload = plen;
  r->mss = (uint16_t)plen;
  r->next_seq = seq + (uint32_t)plen;
  r->segs = 1;
  r->closed = psh != 0;
  r->psh = psh != 0;
}

// Checks one inner packet; returns its family, or 0 when it is dropped (and counted).
static int check(const struct table *t, const struct sockaddr_storage *from, const uint8_t *pkt, size_t len) {
  int family;
  const uint8_t *src, *dst;
  if (len >= 20 && (pkt[0] >> 4) == 4) {
    size_t ihl = (size_t)(pkt[0] & 15) * 4;
    if (ihl < 20 || ihl > len || be16(pkt + 2) != len) goto malformed;
    family = 4;
    src = pkt + 12;
    dst = pkt + 16;
  } else if (len >= 40 && (pkt[0] >> 4) == 6) {
    if ((size_t)be16(pkt + 4) + 40 != len) goto malformed;
    family = 6;
    src = pkt + 8;
    dst = pkt + 24;
  } else {
    goto malformed;
  }
  int known;
  if (!table_source_ok(t, from, family, src, &known)) {
    if (known) COUNT(drop_inner_source, 1);
    else COUNT(drop_unknown_source, 1);
    return 0;
  }
  if (!table_is_local(t, family, dst)) {
    COUNT(drop_inner_dest, 1);
    return 0;
  }
  return family;
malformed:
  COUNT(drop_malformed, 1);
  return 0;
}

void *rx_loop(void *arg) {
  struct dp *d = arg;
  static uint8_t bufs[BATCH][RXBUF];
  static struct mmsghdr msgs[BATCH];
  static struct iovec iovs[BATCH];
  static struct sockaddr_storage names[BATCH];
  static char ctrls[BATCH][CMSG_SPACE(sizeof(int)) + 64];
  static struct run r;
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iovs[i].iov_base = bufs[i];
      iovs[i].iov_len = RXBUF;
      msgs[i].msg_hdr = (struct msghdr){.msg_name = &names[i], .msg_namelen = sizeof names[i], .msg_iov = &iovs[i], .msg_iovlen = 1, .msg_control = ctrls[i], .msg_controllen = sizeof ctrls[i]};
    }
    int n = recvmmsg(d->udp, msgs, BATCH, MSG_WAITFORONE, NULL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNREFUSED) continue;
      logmsg("recvmmsg: %s", strerror(errno));
      COUNT(errors, 1);
      continue;
    }
    COUNT(udp_recv_calls, 1);
    struct table *t = table_current();
    for (int i = 0; i < n; i++) {
      size_t len = msgs[i].msg_len;
      size_t seg = len;
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int g;
          memcpy(&g, CMSG_DATA(c), sizeof g);
          if (g > 0) seg = (size_t)g;
        }
      }
      if ((msgs[i].msg_hdr.msg_flags & MSG_TRUNC) || len == 0) {
        // cut short by the buffer, or an empty datagram: no packet in it
        COUNT(udp_recv_datagrams, 1);
        COUNT(drop_malformed, 1);
        continue;
      }
      for (size_t off = 0; off < len; off += seg) {
        size_t l = len - off < seg ? len - off : seg;
        const uint8_t *pkt = bufs[i] + off;
        COUNT(udp_recv_datagrams, 1);
        int family = check(t, &names[i], pkt, l);
        if (family) deliver(d->tun, &r, pkt, l, family);
      }
    }
    flush(d->tun, &r);
  }
  return NULL;
}
