// TUN → UDP. One read returns a packet or, with the TUN offloads on, a TCP super-packet of up to
// 64 KB (virtio-net header GSO_TCPV4/6). A super-packet is cut into gso_size segments here, each a
// complete IP packet with its checksums, and leaves in one sendmsg with UDP_SEGMENT: the kernel
// then sends them as equal-sized datagrams (the last may be shorter) in one pass down the stack.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/udp.h>
#include <linux/virtio_net.h>
#include <netinet/ip.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "tund.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

// Largest UDP payload per sendmsg: 65535 − 8 (UDP) − 40 (IPv6 header; IPv4 allows a little more)
#define GSO_MAX_BYTES 65000
#define GSO_MAX_SEGS 64
// the kernel's smallest send MSS (TCP_MIN_SND_MSS); bounds the segments of one super-packet
#define MIN_MSS 48

static int inner_dst(const uint8_t *pkt, size_t len, int *family, const uint8_t **dst) {
  if (len < 20) return -1;
  int v = pkt[0] >> 4;
  if (v == 4) {
    *family = 4;
    *dst = pkt + 16;
    return 0;
  }
  if (v == 6 && len >= 40) {
    *family = 6;
    *dst = pkt + 24;
    return 0;
  }
  return -1;
}

static void fix_ipv4_csum(uint8_t *ip, int ihl) {
  ip[10] = ip[11] = 0;
  uint16_t c = (uint16_t)~csum_fold(csum_add(0, ip, (size_t)ihl));
  memcpy(ip + 10, &c, 2);
}

// Completes a checksum the stack left partial: the field holds the pseudo-header sum.
static int complete_csum(uint8_t *pkt, size_t len, const struct vnet_hdr *vh) {
  size_t start = vh->csum_start, off = vh->csum_offset;
  if (start >= len || start + off + 2 > len) return -1;
  uint16_t c = (uint16_t)~csum_fold(csum_add(0, pkt + start, len - start));
  // a UDP checksum of 0 means "none": send its one's complement twin
  if (c == 0 && off == 6) c = 0xffff;
  memcpy(pkt + start + off, &c, 2);
  return 0;
}

static int send_one(const struct dp *d, const struct peer *p, const uint8_t *buf, size_t len) {
  ssize_t n = sendto(d->udp, buf, len, 0, (const struct sockaddr *)&p->sa, p->salen);
  COUNT(udp_send_calls, 1);
  if (n < 0) {
    if (errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED && errno != EHOSTUNREACH && errno != ENETUNREACH) COUNT(errors, 1);
    return -1;
  }
  COUNT(udp_sent_datagrams, 1);
  return 0;
}

// A super-packet cut up without copying its payload: segment i is iov[2i] (its own copy of the
// headers, fixed up) and iov[2i+1] (its payload, in place in the read buffer).
#define MAX_SEGS (MAX_PKT / MIN_MSS + 1)
#define MAX_HDR 120 // IPv6 40 + TCP 60, rounded up
static uint8_t g_hdrs[MAX_SEGS][MAX_HDR];
static struct iovec g_iov[2 * MAX_SEGS];

// Messages of equal-sized segments waiting to leave in one sendmmsg, each a UDP_SEGMENT message.
#define MAX_CHUNKS 8
struct chunks {
  int n;
  struct mmsghdr m[MAX_CHUNKS];
  char ctrl[MAX_CHUNKS][CMSG_SPACE(sizeof(uint16_t))];
  int segs[MAX_CHUNKS];
};

// One datagram per call, for a path that refuses UDP GSO.
static void send_each(struct dp *d, const struct peer *p, struct iovec *iov, int segs) {
  for (int i = 0; i < segs; i++) {
    struct msghdr m = {.msg_name = (void *)&p->sa, .msg_namelen = p->salen, .msg_iov = iov + 2 * i, .msg_iovlen = 2};
    ssize_t n = sendmsg(d->udp, &m, 0);
    COUNT(udp_send_calls, 1);
    if (n < 0) {
      if (errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED && errno != EHOSTUNREACH && errno != ENETUNREACH) COUNT(errors, 1);
      continue;
    }
    COUNT(udp_sent_datagrams, 1);
  }
}

// Sends the queued messages with one system call; falls back to a datagram per call when the
// kernel refuses UDP GSO on this path.
static void flush_chunks(struct dp *d, const struct peer *p, struct chunks *c) {
  int done = 0;
  while (done < c->n && d->gso_ok) {
    int r = sendmmsg(d->udp, c->m + done, (unsigned)(c->n - done), 0);
    COUNT(udp_send_calls, 1);
    if (r < 0) {
      if (errno == EIO || errno == EOPNOTSUPP) {
        // no UDP GSO on this path at all (e.g. an xfrm route): for good
        logmsg("UDP_SEGMENT refused (%s): sending datagrams one by one", strerror(errno));
        d->gso_ok = 0;
        break;
      }
      if (errno == EINVAL || errno == EMSGSIZE) {
        // this segment size does not fit the underlay's MTU (the kernel's check): this message
        // goes datagram by datagram, where each too-big one fails alone; GSO stays on
        COUNT(errors, 1);
        send_each(d, p, c->m[done].msg_hdr.msg_iov, c->segs[done]);
        done++;
        continue;
      }
      if (errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED && errno != EHOSTUNREACH && errno != ENETUNREACH) COUNT(errors, 1);
      done++; // this message is lost, as a full queue loses a packet; TCP resends
      continue;
    }
    for (int i = done; i < done + r; i++) COUNT(udp_sent_datagrams, c->segs[i]);
    done += r;
  }
  for (int i = done; i < c->n; i++) send_each(d, p, c->m[i].msg_hdr.msg_iov, c->segs[i]);
  c->n = 0;
}

static void queue_chunk(struct chunks *c, const struct peer *p, struct iovec *iov, int count, size_t seglen) {
  int i = c->n++;
  c->segs[i] = count;
  struct msghdr *m = &c->m[i].msg_hdr;
  *m = (struct msghdr){.msg_name = (void *)&p->sa, .msg_namelen = p->salen, .msg_iov = iov, .msg_iovlen = (size_t)(2 * count)};
  if (count > 1) {
    memset(c->ctrl[i], 0, sizeof c->ctrl[i]);
    m->msg_control = c->ctrl[i];
    m->msg_controllen = sizeof c->ctrl[i];
    struct cmsghdr *cm = CMSG_FIRSTHDR(m);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t gso = (uint16_t)seglen;
    memcpy(CMSG_DATA(cm), &gso, sizeof gso);
  }
}

// Cuts a TCP super-packet into segments of `mss` payload bytes, each with its headers and
// checksums, and sends them GSO_MAX_SEGS (or GSO_MAX_BYTES) per message, all messages of the
// super-packet in one sendmmsg. Returns -1 on a packet it cannot parse.
static int split_tcp(struct dp *d, const struct peer *p, const uint8_t *pkt, size_t len, int family, uint16_t mss) {
  size_t iphl;
  if (family == 4) {
    iphl = (size_t)(pkt[0] & 15) * 4;
    if (iphl < 20 || pkt[9] != IPPROTO_TCP) return -1;
  } else {
    iphl = 40;
    if (pkt[6] != IPPROTO_TCP) return -1; // extension headers: not produced by TSO here
  }
  if (len < iphl + 20) return -1;
  size_t thl = (size_t)(pkt[iphl + 12] >> 4) * 4;
  size_t hdr = iphl + thl;
  if (thl < 20 || hdr > MAX_HDR || len < hdr || mss < MIN_MSS) return -1;
  size_t payload = len - hdr;
  uint32_t seq0;
  memcpy(&seq0, pkt + iphl + 4, 4);
  seq0 = ntohl(seq0);
  uint16_t id0 = 0;
  if (family == 4) {
    memcpy(&id0, pkt + 4, 2);
    id0 = ntohs(id0);
  }
  uint8_t flags0 = pkt[iphl + 13];
  size_t seglen = hdr + mss;
  int per_call = (int)(GSO_MAX_BYTES / seglen);
  if (per_call > GSO_MAX_SEGS) per_call = GSO_MAX_SEGS;
  if (per_call < 1) per_call = 1;
  size_t nseg = payload ? (payload + mss - 1) / mss : 1;
  static struct chunks ch;
  ch.n = 0;
  size_t first = 0; // first segment of the message being filled
  if (nseg > 1) COUNT(gso_superpackets, 1);
  for (size_t i = 0; i < nseg; i++) {
    size_t chunk = i + 1 < nseg ? mss : payload - (size_t)mss * i;
    const uint8_t *data = pkt + hdr + (size_t)mss * i;
    uint8_t *h = g_hdrs[i];
    memcpy(h, pkt, hdr);
    size_t slen = hdr + chunk;
    if (family == 4) {
      uint16_t tot = htons((uint16_t)slen), id = htons((uint16_t)(id0 + i));
      memcpy(h + 2, &tot, 2);
      memcpy(h + 4, &id, 2);
      fix_ipv4_csum(h, (int)iphl);
    } else {
      uint16_t pl = htons((uint16_t)(slen - 40));
      memcpy(h + 4, &pl, 2);
    }
    uint32_t seq = htonl(seq0 + (uint32_t)(mss * i));
    memcpy(h + iphl + 4, &seq, 4);
    uint8_t f = flags0;
    if (i + 1 < nseg) f &= (uint8_t)~(0x01 | 0x08); // FIN, PSH only on the last
    if (i > 0) f &= (uint8_t)~0x80;                 // CWR only on the first
    h[iphl + 13] = f;
    h[iphl + 16] = h[iphl + 17] = 0;
    // the TCP header is a multiple of 4 bytes long, so the two sums join without a byte shift
    uint64_t sum = csum_add(pseudo_sum(family, h, IPPROTO_TCP, (uint32_t)(slen - iphl)), h + iphl, thl);
    uint16_t c = (uint16_t)~csum_fold(csum_add(sum, data, chunk));
    memcpy(h + iphl + 16, &c, 2);
    g_iov[2 * i] = (struct iovec){.iov_base = h, .iov_len = hdr};
    g_iov[2 * i + 1] = (struct iovec){.iov_base = (void *)data, .iov_len = chunk};
    if ((int)(i + 1 - first) == per_call || i + 1 == nseg) {
      int count = (int)(i + 1 - first);
      if (d->gso_ok) {
        queue_chunk(&ch, p, g_iov + 2 * first, count, seglen);
        if (ch.n == MAX_CHUNKS || i + 1 == nseg) flush_chunks(d, p, &ch);
      } else {
        send_each(d, p, g_iov + 2 * first, count);
      }
      first = i + 1;
    }
  }
  return 0;
}

void *tx_loop(void *arg) {
  struct dp *d = arg;
  static uint8_t buf[VNET_HDR_LEN + MAX_PKT + 64];
  for (;;) {
    ssize_t n = read(d->tun, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      logmsg("read from the TUN device: %s: exiting", strerror(errno));
      fatal_exit();
    }
    if (n <= VNET_HDR_LEN) continue;
    COUNT(tun_reads, 1);
    COUNT(tun_read_bytes, n - VNET_HDR_LEN);
    struct vnet_hdr vh;
    memcpy(&vh, buf, sizeof vh);
    uint8_t *pkt = buf + VNET_HDR_LEN;
    size_t len = (size_t)n - VNET_HDR_LEN;
    int family;
    const uint8_t *dst;
    if (inner_dst(pkt, len, &family, &dst) != 0) {
      COUNT(drop_malformed, 1);
      continue;
    }
    struct table *t = table_current();
    const struct peer *p = table_route(t, family, dst);
    if (!p) {
      // the whole cluster network is routed here: a destination no node leases
      if ((vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && vh.gso_type == VIRTIO_NET_HDR_GSO_NONE) complete_csum(pkt, len, &vh);
      icmp_unreachable(d->tun, pkt, len);
      continue;
    }
    uint8_t gso = vh.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
    if (gso == VIRTIO_NET_HDR_GSO_TCPV4 || gso == VIRTIO_NET_HDR_GSO_TCPV6) {
      if (split_tcp(d, p, pkt, len, family, vh.gso_size) != 0) COUNT(drop_malformed, 1);
      continue;
    }
    if (gso != VIRTIO_NET_HDR_GSO_NONE) {
      // not offered (no USO/UFO in TUNSETOFFLOAD): the kernel never hands one over
      COUNT(drop_malformed, 1);
      continue;
    }
    if ((vh.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && complete_csum(pkt, len, &vh) != 0) {
      COUNT(drop_malformed, 1);
      continue;
    }
    send_one(d, p, pkt, len);
  }
  return NULL;
}
